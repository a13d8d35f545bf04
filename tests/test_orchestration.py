"""Jobs, schedule and sensors, with Dagster's own testing tools."""

import json

import dagster as dg
from conftest import materialize

from asgard_assets import demo_data
from asgard_assets.contracts.model import FEATURES, MODEL_NAME
from asgard_assets.orchestration import sensors as s
from asgard_assets.resources import resource
from asgard_assets.resources.deployer import Deployment, LocalDeployer

LAYERS = ("bronze", "silver")


def test_jobs_select_their_layers():
    from asgard_assets.definitions import defs

    def keys(job):
        return {
            k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys
        }

    assert keys("ingest") == {f"{layer}/{t}" for t in demo_data.TABLES for layer in LAYERS}
    assert keys("transform") == {f"silver/{t}" for t in demo_data.TABLES} | {
        "gold/operator_features"
    }
    assert keys("train_and_deploy") == {
        "features/operator_efficiency",
        f"models/{MODEL_NAME}",
        f"deployments/{MODEL_NAME}",
    }
    assert keys("deploy") == {f"deployments/{MODEL_NAME}"}
    assert len(keys("journey")) == 13  # and maintenance/iceberg_tables


def test_gold_changed_sensor_requests_a_retrain():
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance)
    assert not s.gold_changed.evaluate_tick(context).run_requests
    instance.report_runless_asset_event(
        dg.AssetMaterialization(dg.AssetKey(["gold", "operator_features"]))
    )
    result = s.gold_changed.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert len(result.run_requests) == 1
    assert s.gold_changed.job_name == "train_and_deploy"


class _StaleDeployer(LocalDeployer):
    def current(self, model: str):
        return Deployment(model, "0", "http://127.0.0.1:1")


class _ServingDeployer(LocalDeployer):
    """Serves whatever version ``serving`` names (other tests of the shared journey home
    may have promoted a newer champion)."""

    serving: str = ""

    def current(self, model: str):
        return Deployment(model, self.serving, "http://127.0.0.1:1")


def test_champion_changed_sensor(journey_home):
    tracking = resource("mlflow_tracking")
    champion_now = str(tracking.champion(MODEL_NAME).version)
    quiet = s.champion_changed.evaluate_tick(
        dg.build_sensor_context(
            resources={
                "mlflow_tracking": tracking,
                "deployer": _ServingDeployer(serving=champion_now),
            }
        )
    )
    assert not quiet.run_requests and "already serving" in quiet.skip_message
    stale = s.champion_changed.evaluate_tick(
        dg.build_sensor_context(
            resources={"mlflow_tracking": tracking, "deployer": _StaleDeployer()}
        )
    )
    champion = tracking.champion(MODEL_NAME)
    assert [r.run_key for r in stale.run_requests] == [f"champion-{champion.version}"]


def test_run_failures_are_recorded(home, monkeypatch):
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://asgard:pw@127.0.0.1:1/none")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize("bronze/materials", instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(
        e
        for e in instance.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="record_failures",
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=failure.dagster_event,
    ).for_run_failure()
    s.record_failures(context)
    (line,) = (home / "alerts" / "run_failures.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["run_id"] == result.run_id and record["steps"] == ["bronze__materials"]


def test_psi_separates_shift_from_noise():
    import numpy as np
    import pandas as pd

    from asgard_assets.models.drift import PSI_WARN, psi_by_feature, reference

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(0, 1, 2000), "y": rng.uniform(0, 1, 2000)})
    ref = reference(train)
    same = psi_by_feature(
        ref, pd.DataFrame({"x": rng.normal(0, 1, 2000), "y": rng.uniform(0, 1, 2000)})
    )
    moved = psi_by_feature(
        ref, pd.DataFrame({"x": rng.normal(1, 1, 2000), "y": rng.uniform(0, 1, 2000)})
    )
    assert max(same.values()) < 0.05
    assert moved["x"] > 4 * PSI_WARN and moved["y"] < 0.05


def test_feature_drift_check_against_the_champion(journey_home):
    from asgard_assets.models.checks import feature_drift

    result = feature_drift(
        lakehouse=resource("lakehouse"), mlflow_tracking=resource("mlflow_tracking")
    )
    psi = result.metadata["psi"].value
    assert set(psi) == set(FEATURES)
    # gold has not changed since the champion was trained: no drift
    assert result.passed and max(psi.values()) < 0.05

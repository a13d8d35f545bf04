"""MLflow at the boundary: an unreachable tracking server fails with its URI (within a
minute: MLflow's own retries are capped for Asgard's process); only a missing model or
alias means "no champion"."""

import os

import dagster as dg

from asgard_assets.contracts.model import MODEL_NAME
from asgard_assets.deployments.assets import operator_efficiency_service
from asgard_assets.resources.deployer import LocalDeployer, free_port
from asgard_assets.resources.image_builder import LocalImageBuilder
from asgard_assets.resources.mlflow_tracking import HTTP_SETTINGS, MlflowTracking


def test_unreachable_mlflow_fails_the_deploy_step_naming_its_uri(home, monkeypatch):
    uri = f"http://asgard:pw@127.0.0.1:{free_port()}"  # nothing listens there
    # set here to be unset afterwards: mlflow.set_tracking_uri exports it to the process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = dg.materialize(
        [operator_efficiency_service],
        resources={
            "mlflow_tracking": MlflowTracking(tracking_uri=uri),
            "deployer": LocalDeployer(),
            "image_builder": LocalImageBuilder(),
        },
        raise_on_error=False,
    )
    assert not result.success
    # each attempt (the step retries an external system) fails naming MLflow and its URI
    message = " ".join(
        str(e.event_specific_data)
        for e in result.all_events
        if e.is_step_failure or e.is_step_up_for_retry
    )
    assert "no version has passed the quality gate" not in message
    assert f"cannot ask MLflow at http://asgard:***@127.0.0.1:{uri.rsplit(':', 1)[1]}" in message
    assert "pw@" not in message
    # MLflow's retries, set for this process unless the operator set them
    for name, value in HTTP_SETTINGS.items():
        assert os.environ[name] == value


def test_no_model_and_no_alias_mean_no_champion(home, tmp_path, monkeypatch):
    # a fresh store, undone afterwards (an earlier MLflow client may have exported its URI)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking = MlflowTracking()
    assert tracking.champion(MODEL_NAME) is None  # no registered model yet
    tracking.client().create_registered_model(MODEL_NAME)
    assert tracking.champion(MODEL_NAME) is None  # a model without the alias


def test_mlflow_telemetry_is_off_unless_turned_on(tmp_path):
    import subprocess
    import sys

    # a user's shell: none of the CI or pytest variables MLflow itself turns telemetry off for
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ASGARD_HOME": str(tmp_path)}
    code = "import asgard_assets, mlflow.telemetry.utils as t; print(t.is_telemetry_disabled())"

    def disabled(**more) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env={**env, **more}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert disabled() == "True"
    assert disabled(MLFLOW_DISABLE_TELEMETRY="false") == "False"  # the user's choice wins

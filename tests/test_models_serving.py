"""Model training, the quality gate, the inference service and its deployment."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import dagster as dg
import httpx
import pytest
from conftest import journey_assets, materialize
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgard_assets.contracts.model import FEATURES, MODEL_NAME, VIEW
from asgard_assets.deployments.bundle import MODEL_DIR
from asgard_assets.models.checks import Gate
from asgard_assets.resources import resource
from asgard_assets.resources.deployer import (
    Deployment,
    LocalDeployer,
    _exited,
    free_port,
    is_service,
    process_start,
    service_env,
    service_identity,
)
from asgard_assets.serving.model import MODEL_META

ROW = {
    "total_work_orders": 87,
    "completed_orders": 85,
    "total_units": 43500,
    "total_hours": 470.0,
    "avg_duration_hours": 8.2,
    "units_per_hour": 92.5,
    "completion_rate": 0.977,
    "products_handled": 12,
    "data_quality_score": 0.98,
}
SLOW_ROW = {**ROW, "total_units": 18750, "units_per_hour": 48.2, "completion_rate": 0.726}


def champion_metrics():
    tracking = resource("mlflow_tracking")
    champion = tracking.champion(MODEL_NAME)
    return champion, tracking.client().get_run(champion.run_id).data.metrics


def test_journey_ends_with_a_live_predict(journey_home):
    deployment = LocalDeployer().current(MODEL_NAME)
    assert deployment is not None and deployment.url.startswith("http://127.0.0.1:")
    health = httpx.get(f"{deployment.url}/health", timeout=5).json()
    champion, _ = champion_metrics()
    version = str(champion.version)
    assert health == {
        "status": "ok",
        "model": MODEL_NAME,
        "version": version,
        "uri": f"models:/{MODEL_NAME}/{version}",
        "pid": deployment.pid,
    }
    r = httpx.post(f"{deployment.url}/predict", json={"instances": [ROW, SLOW_ROW]}, timeout=5)
    assert r.status_code == 200
    assert r.json()["predictions"] == [1, 0]
    by_id = httpx.post(
        f"{deployment.url}/predict", json={"operator_ids": ["EMP-001", "EMP-999"]}, timeout=10
    ).json()
    assert by_id["operator_ids"] == ["EMP-001"] and by_id["unknown_operator_ids"] == ["EMP-999"]
    meta = httpx.get(f"{deployment.url}/metadata", timeout=5).json()
    assert [f["name"] for f in meta["features"]] == FEATURES and meta["run_id"] == champion.run_id
    assert httpx.get(f"{deployment.url}/docs", timeout=5).status_code == 200


def test_the_service_starts_from_the_bundles_copy_of_the_version(journey_home, tmp_path):
    """The deploy step resolves the champion once into its bundle; the service loads that
    copy (no MLflow import at start) and it is the registry's version, predicting alike."""
    deployment = LocalDeployer().current(MODEL_NAME)
    folder = journey_home / "deployments" / MODEL_NAME / f"v{deployment.version}" / "model"
    environ = dict(
        kv.split(b"=", 1)
        for kv in Path(f"/proc/{deployment.pid}/environ").read_bytes().split(b"\0")
        if kv
    )
    assert environ[b"ASGARD_MODEL_DIR"] == str(folder).encode()
    probe = (
        "import json, sys, numpy as np\n"
        "from asgard_assets.serving.model import ServedModel\n"
        "m = ServedModel.load()\n"
        "x = m.matrix_from_rows(json.loads(sys.argv[1]))\n"
        "print(json.dumps([m.version, m.features, m.predict(x)[1], 'mlflow' in sys.modules]))\n"
    )
    rows = json.dumps([ROW, SLOW_ROW])
    uri = f"models:/{MODEL_NAME}/{deployment.version}"

    def load(**env):
        out = subprocess.run(
            [sys.executable, "-c", probe, rows],
            env={**os.environ, "ASGARD_MODEL_URI": uri, **env},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.splitlines()[-1])

    copied = load(ASGARD_MODEL_DIR=str(folder))
    registry = load()
    assert copied[:3] == registry[:3] and copied[0] == deployment.version
    assert copied[1] == FEATURES
    assert copied[3] is False and registry[3] is True  # MLflow imported only without the copy
    # a copy of another version than the one asked for is refused, naming both
    other = subprocess.run(
        [sys.executable, "-c", probe, rows],
        env={
            **os.environ,
            "ASGARD_MODEL_URI": f"models:/{MODEL_NAME}/999",
            "ASGARD_MODEL_DIR": str(folder),
        },
        capture_output=True,
        text=True,
    )
    assert other.returncode != 0
    assert f"holds {uri}" in other.stderr and f"{MODEL_NAME}/999" in other.stderr


def test_model_is_accurate_and_fully_logged(journey_home):
    champion, metrics = champion_metrics()
    assert metrics["accuracy"] > 0.90 and metrics["f1"] > 0.80
    assert metrics["onnx_max_abs_diff"] <= 1e-5
    client = resource("mlflow_tracking").client()
    run = client.get_run(champion.run_id)
    assert run.data.params["n_train"] == "113" and run.data.params["n_test"] == "29"
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"onnx", "feature_importance.json"} <= artifacts
    import mlflow

    importance = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/feature_importance.json")
    # a forest's impurity importances, one per feature, largest first
    assert list(importance) != [] and set(importance) == set(FEATURES)
    assert sum(importance.values()) == pytest.approx(1.0)
    assert list(importance.values()) == sorted(importance.values(), reverse=True)
    assert client.get_model_version(MODEL_NAME, champion.version).tags["quality_gate"] == "passed"


def test_gate_rules():
    gate = Gate(min_accuracy=0.9, min_f1=0.8, champion_tolerance=0.02)
    good = {"accuracy": 0.95, "f1": 0.9}
    assert gate.evaluate(good, None) == []
    assert gate.evaluate(good, {"accuracy": 0.96, "f1": 0.91}) == []  # within tolerance
    assert gate.evaluate(good, {"accuracy": 0.99, "f1": 0.9}) == [
        "accuracy 0.950 worse than champion 0.990 by more than 0.02"
    ]
    assert len(gate.evaluate({"accuracy": 0.5, "f1": 0.3}, None)) == 2


def test_gate_blocks_a_model_trained_on_shuffled_labels(journey_home, capsys):
    from asgard_assets.summary import print_failures

    before, _ = champion_metrics()
    deployed = LocalDeployer().current(MODEL_NAME)
    config = {
        "ops": {"models__operator_efficiency_predictor": {"config": {"shuffle_labels": True}}}
    }
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(
        "models/operator_efficiency_predictor deployments/operator_efficiency_predictor",
        run_config=config,
        assets=journey_assets(),
        raise_on_error=False,
        instance=instance,
    )
    evaluation = next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    )
    assert evaluation.check_name == "quality_gate" and not evaluation.passed
    bad_version = evaluation.metadata["model_version"].value
    assert bad_version != str(before.version)
    # registered, tagged failed, never champion, never deployed
    client = resource("mlflow_tracking").client()
    assert client.get_model_version(MODEL_NAME, bad_version).tags["quality_gate"] == "failed"
    assert champion_metrics()[0].version == before.version
    assert not result.asset_materializations_for_node("deployments__operator_efficiency_predictor")
    assert LocalDeployer().current(MODEL_NAME) == deployed
    assert httpx.get(f"{deployed.url}/health", timeout=5).json()["version"] == str(before.version)
    # `asgard demo`'s "Why:" gives the gate's own reason, not "1 blocking asset check failed"
    assert print_failures(instance, result.run_id)
    why = capsys.readouterr().out.split("Why:\n", 1)[1]
    assert why.startswith(f"  models/{MODEL_NAME} quality_gate: {evaluation.description}")
    assert why.startswith(f"  models/{MODEL_NAME} quality_gate: version {bad_version} refused: ")
    assert f"(version {before.version} stays champion)" in why and "blocking" not in why
    # and what did not run because of it
    assert why.endswith(f"\nNot run, as a step before them failed: deployments/{MODEL_NAME}\n")


def test_going_back_to_an_older_version_is_said(journey_home, capsys):
    """A run whose gold snapshot and config are an older version's reports that version
    again and the gate makes it champion again, replacing the newer one: said by the gate's
    description, a warning in the run's log and `asgard demo`'s summary."""
    from asgard_assets.summary import print_summary

    older = str(champion_metrics()[0].version)
    selection = "models/operator_efficiency_predictor deployments/operator_efficiency_predictor"
    estimator = {"estimator": {"gradient_boosting": {}}}
    config = {"ops": {"models__operator_efficiency_predictor": {"config": estimator}}}
    assert materialize(selection, run_config=config, assets=journey_assets()).success
    newer = str(champion_metrics()[0].version)
    assert newer != older
    instance = dg.DagsterInstance.ephemeral()
    back = materialize(selection, assets=journey_assets(), instance=instance)
    (gate,) = [
        e.asset_check_evaluation_data
        for e in back.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert gate.description == f"version {older} is champion, replacing version {newer}"
    assert str(champion_metrics()[0].version) == older
    warned = [e.user_message for e in instance.all_logs(back.run_id) if e.level == logging.WARNING]
    assert any(
        f"version {older} is champion again, replacing the newer version {newer}" in w
        for w in warned
    ), warned
    print_summary(instance, back.run_id)
    assert f"\n  replacing v{newer}, the champion before this run\n" in capsys.readouterr().out
    serving = LocalDeployer().current(MODEL_NAME)
    assert httpx.get(f"{serving.url}/health", timeout=5).json()["version"] == older


HOSTILE = [
    {},
    [],
    [1, 2],
    "predict",
    None,
    {"instances": []},
    {"instances": None},
    {"instances": [{}]},
    {"instances": [ROW], "inputs": {k: [v] for k, v in ROW.items()}},
    {"instances": [{**ROW, "extra": 1}]},
    {"instances": [{k: v for k, v in ROW.items() if k != "units_per_hour"}]},
    {"instances": [{**ROW, "units_per_hour": "fast"}]},
    {"instances": [{**ROW, "units_per_hour": True}]},
    {"instances": [{**ROW, "units_per_hour": None}]},
    {"instances": [{**ROW, "units_per_hour": [1]}]},
    {"instances": [{**ROW, "units_per_hour": 1e309}]},
    {"instances": [{**ROW, "units_per_hour": 10**400}]},
    {"instances": [1, 2, 3]},
    {"instances": [ROW] * 10_001},
    {"inputs": {}},
    {"inputs": {k: [v] for k, v in ROW.items() if k != "total_hours"}},
    {"inputs": {**{k: [v] for k, v in ROW.items()}, "total_hours": [1.0, 2.0]}},
    {"inputs": {**{k: [v] for k, v in ROW.items()}, "total_hours": 1.0}},
    {"operator_ids": []},
    {"operator_ids": [1, 2]},
    {"operator_ids": ["NOBODY"]},
    {"unknown_form": [ROW]},
]


@pytest.fixture(scope="module")
def service(_demo_journey):
    import os

    old = os.environ.get("ASGARD_HOME")
    os.environ["ASGARD_HOME"] = str(_demo_journey)
    from asgard_assets.serving.app import app

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    if old is None:
        os.environ.pop("ASGARD_HOME", None)
    else:
        os.environ["ASGARD_HOME"] = old


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_bodies_get_a_4xx_with_a_message(service, body):
    # raw json.dumps: writes Infinity and huge ints as a hostile client would
    r = service.post(
        "/predict", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["detail"]
    assert service.post("/predict", json={"instances": [ROW]}).status_code == 200  # still serving


def test_a_value_of_the_wrong_type_is_named_with_the_type_it_must_have(service):
    r = service.post("/predict", json={"instances": [{**ROW, "units_per_hour": "fast"}]})
    assert r.status_code == 422
    assert "instances[0].units_per_hour (double) must be a number, got str" in r.text, r.text


def test_an_integer_beyond_64_bits_is_read_as_the_nearest_double(service):
    big = json.dumps({"instances": [{**ROW, "units_per_hour": 10**22}]})
    r = service.post("/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    as_float = service.post("/predict", json={"instances": [{**ROW, "units_per_hour": 1e22}]})
    assert r.json()["predictions"] == as_float.json()["predictions"]


def test_a_body_of_the_wrong_shape_is_told_the_forms_predict_takes(service):
    forms = "instances (rows by feature name), inputs (columns) or operator_ids"
    unknown = service.post("/predict", json={"foo": 1})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == [
        {
            "loc": ["body", "foo"],
            "msg": f"Extra inputs are not permitted: the body takes one of {forms}",
        }
    ]
    empty = service.post("/predict", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["msg"] == f"a JSON body is required, with one of {forms}"


@pytest.mark.parametrize(
    "raw", ['{"instances": [', "not json", '{"instances": [{"units_per_hour": NaN}]}', "\x00\xff"]
)
def test_malformed_json_gets_a_4xx(service, raw):
    r = service.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


def _schema_shaped():
    """Bodies shaped by the OpenAPI schema of /predict, with values of any JSON type."""
    scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    json_value = st.recursive(
        scalar,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
        max_leaves=8,
    )
    feature = st.sampled_from([*FEATURES, "x"])
    row = st.dictionaries(feature, scalar | st.floats(allow_nan=False), max_size=len(FEATURES) + 1)
    forms = {
        "instances": st.lists(row, max_size=4) | json_value,
        "inputs": st.dictionaries(
            feature, st.lists(scalar, max_size=3) | scalar, max_size=len(FEATURES) + 1
        )
        | json_value,
        "operator_ids": st.lists(st.text(max_size=10) | st.integers(), max_size=3) | json_value,
    }
    return st.fixed_dictionaries({}, optional=forms) | json_value


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_schema_shaped())
def test_property_no_body_gets_a_5xx(service, body):
    schema = service.app.openapi()
    assert "/predict" in schema["paths"]
    r = service.post(
        "/predict", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code < 500, (body, r.text[:300])


def test_by_operator_id_equals_features_given(service):
    """Rows looked up in the online store predict exactly as the same rows sent by value,
    whichever way the service answers: its fast path (application/json) or FastAPI's route
    (any other JSON media type)."""
    gold = (
        resource("lakehouse")
        .query(
            f"SELECT operator_id, {', '.join(FEATURES)} FROM gold.operator_features "
            "ORDER BY operator_id",
            "gold.operator_features",
        )
        .df()
    )
    ids = gold.pop("operator_id").tolist()
    rows = gold.astype("float64").fillna(0.0).to_dict("records")  # a null is 0, as served
    bodies = [
        {"operator_ids": ids},
        {"instances": rows},
        {"inputs": {f: [r[f] for r in rows] for f in FEATURES}},
        {"operator_ids": ids[:1]},
        {"instances": rows[:1]},
    ]
    answers = []
    for body in bodies:
        for media_type in ("application/json", "application/vnd.asgard+json"):
            r = service.post(
                "/predict", content=json.dumps(body), headers={"content-type": media_type}
            )
            assert r.status_code == 200, r.text[:300]
            answers.append(r.json())
    assert answers[0] == answers[1] and answers[0]["operator_ids"] == ids
    assert answers[0]["unknown_count"] == 0
    for answer in answers[1:6]:
        assert answer["predictions"] == answers[0]["predictions"]
        assert answer["probabilities"] == answers[0]["probabilities"]
    for answer in answers[6:]:
        assert answer["probabilities"] == answers[0]["probabilities"][:1]
    assert service.get("/health").json()["status"] == "ok"


def _bundle_of(home: Path, version: str, tmp_path: Path, as_version: str) -> Path:
    """A bundle whose model copy says it is ``as_version`` (the same ONNX model): a second
    version to deploy without training one."""
    bundle = tmp_path / f"v{as_version}"
    shutil.copytree(
        home / "deployments" / MODEL_NAME / f"v{version}" / MODEL_DIR, bundle / MODEL_DIR
    )
    meta_path = bundle / MODEL_DIR / MODEL_META
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(
        json.dumps({**meta, "version": as_version, "uri": f"models:/{MODEL_NAME}/{as_version}"})
    )
    return bundle


def test_a_new_version_is_swapped_into_the_running_service(journey_home, tmp_path):
    """Same process, same URL, not one request refused while it loads; a version that does
    not load fails the deploy and the serving one stays."""
    deployer = LocalDeployer()
    old = deployer.current(MODEL_NAME)
    own = journey_home / "deployments" / MODEL_NAME / f"v{old.version}"
    unchanged, changed = deployer.deploy(MODEL_NAME, old.version, own)
    assert not changed and unchanged == old

    answers, answered, done = [], threading.Event(), threading.Event()

    def traffic():  # from before the deploy until 20 requests after it
        with httpx.Client(timeout=10) as client:
            while not done.is_set() or len(answers) < after + 20:
                r = client.post(f"{old.url}/predict", json={"instances": [ROW]})
                answers.append((r.status_code, r.json().get("version")))
                answered.set()

    after = 10**9
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(traffic)
        answered.wait(30)
        try:
            new, changed = deployer.deploy(
                MODEL_NAME, "7", _bundle_of(journey_home, old.version, tmp_path, "7")
            )
        finally:
            after = len(answers)
            done.set()
            sent.result()
    try:
        assert changed and (new.pid, new.port, new.url) == (old.pid, old.port, old.url)
        assert is_service(new) and deployer.current(MODEL_NAME) == new
        assert httpx.get(f"{old.url}/health", timeout=5).json()["version"] == "7"
        assert {code for code, _ in answers} == {200}
        versions = [version for _, version in answers]
        assert versions[0] == old.version and set(versions[after:]) == {"7"}

        broken = _bundle_of(journey_home, old.version, tmp_path / "broken", "8")
        (broken / MODEL_DIR / "model.onnx").write_bytes(b"not a model")
        with pytest.raises(dg.Failure, match=r"version 8 did not load .*; version 7 keeps serving"):
            deployer.deploy(MODEL_NAME, "8", broken)
        health = httpx.get(f"{old.url}/health", timeout=5).json()
        assert health["version"] == "7" and "model.onnx" in health["reload_error"]["error"]
        assert deployer.current(MODEL_NAME).version == "7"
    finally:  # the shared journey's service serves its own version again
        back, changed = deployer.deploy(MODEL_NAME, old.version, own)
    assert changed and back.pid == old.pid and deployer.healthy(back)
    assert "reload_error" not in httpx.get(f"{old.url}/health", timeout=5).json()


def test_a_port_taken_once_chosen_is_not_taken_for_the_new_service(
    journey_home, tmp_path, monkeypatch
):
    """Another home's service that binds the chosen port first answers /health with the
    same version: it is not this deployment (its pid is not the new process's), which could
    not bind and exited; the start moves on to the next port."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import asgard_assets.resources.deployer as deployer_module

    old = LocalDeployer().current(MODEL_NAME)

    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "version": old.version, "pid": 1}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    impostor = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    taken, green = impostor.server_address[1], free_port()
    real, chosen = deployer_module._port_free, []

    def free_when_chosen(host: str, port: int) -> bool:
        # the impostor binds right after the deployer found the port free
        if port == taken and not chosen:
            chosen.append(port)
            return True
        return real(host, port)

    monkeypatch.setattr(deployer_module, "_port_free", free_when_chosen)
    state = journey_home / "deployments" / f"{MODEL_NAME}.json"
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "code": "other code"}))  # a new process is due
    try:
        deployer = LocalDeployer(blue_port=taken, green_port=green)
        new, changed = deployer.deploy(MODEL_NAME, old.version, tmp_path)
    finally:
        impostor.shutdown()
        impostor.server_close()
    assert chosen == [taken]
    assert changed and new.port == green and new.pid != old.pid and is_service(new)
    health = httpx.get(f"{new.url}/health", timeout=5).json()
    assert health["version"] == old.version and health["pid"] == new.pid
    assert json.loads(state.read_text())["port"] == green
    assert not is_service(old)  # replaced, blue/green


def test_a_deploy_interrupted_while_its_service_starts_leaves_no_service(
    journey_home, tmp_path, monkeypatch
):
    """Ctrl-C or a kill of `asgard demo` while a new service process waits to answer /health:
    that process goes too (no state file records it: `asgard stop` could not find it), and
    the recorded deployment keeps serving."""
    import psutil

    old = LocalDeployer().current(MODEL_NAME)
    real, started = LocalDeployer.healthy, []

    def interrupted(self, deployment):
        if deployment.pid == old.pid:
            return real(self, deployment)
        started.append(deployment.pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalDeployer, "healthy", interrupted)
    state = journey_home / "deployments" / f"{MODEL_NAME}.json"
    saved = state.read_text()
    state.write_text(json.dumps({**json.loads(saved), "code": "other code"}))  # a new process
    try:
        deployer = LocalDeployer(blue_port=free_port(), green_port=free_port())
        with pytest.raises(KeyboardInterrupt):
            deployer.deploy(MODEL_NAME, old.version, tmp_path)
    finally:
        state.write_text(saved)
    (pid,) = started
    assert not psutil.pid_exists(pid)
    assert LocalDeployer().current(MODEL_NAME) == old and is_service(old)


def test_a_service_from_other_code_is_replaced_blue_green(journey_home, tmp_path, monkeypatch):
    """A service started from other code is not reloaded: a new one starts beside it, and
    the old stops only once the new is healthy."""
    deployer = LocalDeployer()
    old = deployer.current(MODEL_NAME)
    state = journey_home / "deployments" / f"{MODEL_NAME}.json"
    saved = json.loads(state.read_text())
    # as left by a service from before the swap (no "code"): a SIGHUP would have stopped it
    saved.pop("code")
    state.write_text(json.dumps({**saved, "version": "0"}))
    # as after a Dagster run: Feast's metrics folder of the (gone) parent is in the env
    for var in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "feast_metrics_gone"))
    # secrets of the run that the service must not inherit
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql://asgard:s3cret@db/factory")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    new, changed = deployer.deploy(MODEL_NAME, old.version, tmp_path)
    assert (
        changed
        and new.port != old.port
        and new.pid != old.pid
        and new.code == service_identity(os.environ)
    )
    assert httpx.get(f"{new.url}/health", timeout=5).json()["version"] == old.version
    by_id = httpx.post(f"{new.url}/predict", json={"operator_ids": ["EMP-001"]}, timeout=30)
    assert by_id.status_code == 200 and by_id.json()["operator_ids"] == ["EMP-001"]

    # the old one is stopped: no longer that process, no longer answering, its Feast metrics
    # folder gone with it (uvicorn's re-raised SIGTERM skips Feast's own clean-up of /tmp)
    assert not is_service(old)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{old.url}/health", timeout=5)
    metrics = journey_home / "deployments" / "metrics"
    assert not (metrics / f"{MODEL_NAME}-{old.port}").exists()
    assert (metrics / f"{MODEL_NAME}-{new.port}").is_dir()
    environ = dict(
        kv.split(b"=", 1) for kv in Path(f"/proc/{new.pid}/environ").read_bytes().split(b"\0") if kv
    )
    assert b"s3cret" not in b"".join(environ.values())
    assert environ[b"ASGARD_MODEL_URI"] == f"models:/{MODEL_NAME}/{old.version}".encode()
    assert environ[b"ASGARD_HOME"] == str(journey_home).encode()
    assert (
        environ[b"PROMETHEUS_MULTIPROCESS_DIR"]
        == str(metrics / f"{MODEL_NAME}-{new.port}").encode()
    )


def test_a_service_that_died_comes_back_on_its_own_port(journey_home, tmp_path):
    """A crashed (or killed) service is started again where it was: the URL the demo printed
    answers again, not the other port's."""
    # first onto ports of its own (a new process is due: other code): 8701 and 8702 may be
    # taken meanwhile by another home's service (the other test worker's `make demo`)
    ports = {free_port()}
    while len(ports) < 2:
        ports.add(free_port())
    deployer = LocalDeployer(blue_port=ports.pop(), green_port=ports.pop())
    state = journey_home / "deployments" / f"{MODEL_NAME}.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "code": "other code"}))
    old, _ = deployer.deploy(MODEL_NAME, deployer.current(MODEL_NAME).version, tmp_path)
    assert old.port in (deployer.blue_port, deployer.green_port)
    os.killpg(old.pid, signal.SIGKILL)
    # gone: exited, its socket closed (its command line empties before its files close)
    deadline = time.monotonic() + 10
    while not _exited(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    new, changed = deployer.deploy(MODEL_NAME, old.version, tmp_path)
    assert changed and new.pid != old.pid and (new.port, new.url) == (old.port, old.url)
    assert httpx.get(f"{old.url}/health", timeout=5).json()["version"] == old.version


def test_resolving_a_version_leaves_no_temporary_folder(journey_home, tmp_path, monkeypatch):
    """The deploy step's copy and a service started from the registry download the ONNX
    file into a folder of their own and remove it (MLflow's own download folder was left in
    /tmp, one per deploy)."""
    from asgard_assets.serving.model import MODEL_FILE, ServedModel

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    uri = f"models:/{MODEL_NAME}@champion"
    ServedModel.save(uri, tmp_path / "copy")
    assert (tmp_path / "copy" / MODEL_FILE).stat().st_size > 0
    served = ServedModel.load(uri, "")
    labels, _ = served.predict(served.matrix_from_rows([ROW]))
    assert labels in ([0], [1])
    assert list(temp.iterdir()) == []


def test_service_env_is_an_allow_list():
    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "ASGARD_HOME": "/h",
        "ASGARD_SOURCE_URL": "postgresql://u:pw@db/x",
        "ASGARD_CATALOG_URI": "postgresql://u:pw@db/catalog",
        "MLFLOW_TRACKING_URI": "http://mlflow",
        "AWS_SECRET_ACCESS_KEY": "k",
        "DAGSTER_HOME": "/d",
    }
    env = service_env(environ, ASGARD_MODEL_URI="models:/m/1")
    assert env == {
        "PATH": "/bin",
        "HOME": "/root",
        "ASGARD_HOME": "/h",
        "MLFLOW_TRACKING_URI": "http://mlflow",
        "ASGARD_MODEL_URI": "models:/m/1",
    }
    # MLflow reading artifacts from S3 itself needs the keys
    s3 = service_env({**environ, "MLFLOW_S3_ENDPOINT_URL": "http://s3"})
    assert s3["AWS_SECRET_ACCESS_KEY"] == "k" and "ASGARD_SOURCE_URL" not in s3


def test_stop_never_signals_a_process_it_did_not_start(home):
    """A state file whose pid now belongs to another process (pid reuse, a hand edit)."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        deployer = LocalDeployer()
        state = home / "deployments" / f"{MODEL_NAME}.json"
        state.parent.mkdir(parents=True)
        fake = Deployment(MODEL_NAME, "1", "http://127.0.0.1:9", 9, other.pid, "", 12345)
        state.write_text(json.dumps(asdict(fake)))
        assert not is_service(fake)
        deployer.stop(MODEL_NAME)
        # same pid and start time, but not the service's command line
        state.write_text(json.dumps(asdict(replace(fake, process_start=process_start(other.pid)))))
        assert not is_service(deployer.current(MODEL_NAME))
        deployer.stop(MODEL_NAME)
        assert other.poll() is None  # still running: never signalled
    finally:
        other.kill()
        other.wait()


def test_concurrent_deploys_record_one_live_service(journey_home, tmp_path):
    """Two deploys at once: the lock makes the second see the first's service, healthy."""
    deployer = LocalDeployer()
    state = journey_home / "deployments" / f"{MODEL_NAME}.json"
    serving = deployer.current(MODEL_NAME)
    # force a replacement: a new process, the race the lock is for
    state.write_text(json.dumps({**asdict(serving), "version": "0", "code": "older"}))
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda _: deployer.deploy(MODEL_NAME, serving.version, tmp_path), range(2))
        )
    assert sorted(changed for _, changed in results) == [False, True]
    final = deployer.current(MODEL_NAME)
    assert {d.pid for d, _ in results} == {final.pid}
    assert is_service(final) and deployer.healthy(final)
    assert not is_service(serving)  # the one it replaced is stopped


def test_an_unchanged_rerun_repeats_no_work(journey_home):
    """Gold, config and code unchanged: no Feast apply, no new model version, no restart."""
    client = resource("mlflow_tracking").client()
    versions = {v.version for v in client.search_model_versions(f"name = '{MODEL_NAME}'")}
    serving = LocalDeployer().current(MODEL_NAME)
    assert is_service(serving) and LocalDeployer().healthy(serving), serving
    view = resource("feature_store").store().get_feature_view(VIEW, allow_registry_cache=False)
    result = materialize(
        f"features/{VIEW} models/{MODEL_NAME} deployments/{MODEL_NAME}", assets=journey_assets()
    )
    assert result.success

    def metadata(node: str) -> dict:
        return {
            k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()
        }

    assert metadata(f"features__{VIEW}")["skipped"].startswith("the registry holds these")
    model = metadata(f"models__{MODEL_NAME}")
    assert model["skipped"].startswith(f"version {serving.version} was trained from exactly")
    assert model["model_version"] == serving.version
    deployed = metadata(f"deployments__{MODEL_NAME}")
    assert deployed["changed"] is False
    assert deployed["skipped"] == f"version {serving.version} is serving already"
    assert {v.version for v in client.search_model_versions(f"name = '{MODEL_NAME}'")} == versions
    assert LocalDeployer().current(MODEL_NAME).pid == serving.pid
    again = resource("feature_store").store().get_feature_view(VIEW, allow_registry_cache=False)
    assert again.last_updated_timestamp == view.last_updated_timestamp


def test_an_unchanged_feature_view_is_known_without_feast(journey_home, monkeypatch):
    """The view's last materialization recorded what it applied and the registry's stamp:
    the same inputs and an untouched registry skip without asking Feast; a registry written
    since (a `feast apply` by hand) sends the step back to Feast's own registry."""
    import os

    import dagster as dg

    from asgard_assets.resources.feature_store import FeatureStoreResource

    instance = dg.DagsterInstance.ephemeral()
    step = [f"features/{VIEW}"]

    def run() -> dict:
        result = materialize(" ".join(step), assets=journey_assets(), instance=instance)
        assert result.success
        (mat,) = result.asset_materializations_for_node(f"features__{VIEW}")
        return {k: v.value for k, v in mat.metadata.items()}

    first = run()  # through Feast: its registry holds these definitions already
    assert first["skipped"].startswith("the registry holds these definitions")

    def no_feast(*a, **k):
        raise AssertionError("Feast was asked")

    with monkeypatch.context() as m:
        m.setattr(FeatureStoreResource, "apply_and_materialize", no_feast)
        assert run() == first

    registry = Path(first["registry"])
    stat = registry.stat()
    os.utime(registry, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    try:
        again = run()  # the stamp moved: Feast decides (nothing changed there either)
        assert again["skipped"] == first["skipped"]
        assert again["registry_stamp"] != first["registry_stamp"]
    finally:
        os.utime(registry, ns=(stat.st_atime_ns, stat.st_mtime_ns))

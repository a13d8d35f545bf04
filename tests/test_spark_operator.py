"""SparkOperatorEngine at its boundary: the SparkApplication it renders (validated against
the operator's CRD schema) and its Kubernetes API calls, against a loopback fake API server
that answers the paths ``CustomObjectsApi`` and ``CoreV1Api`` call, with status bodies in the
CRD's status shape (validated too) and errors as the kubernetes client's ``V1Status``."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import jsonschema
import pyarrow as pa
import pytest
from kubernetes import client

from asgard_assets.partitions import Window
from asgard_assets.resources import MissingSettings, profile_settings, resource
from asgard_assets.resources.deployer import free_port
from asgard_assets.resources.lakehouse import IcebergLakehouse
from asgard_assets.resources.spark_operator import SparkOperatorEngine
from asgard_assets.silver.assets import silver_assets, sql_path

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "sparkapplication.json").read_text())
STATUS_SCHEMA = {**SCHEMA["properties"]["status"], "$schema": SCHEMA["$schema"]}
APPS = "/apis/sparkoperator.k8s.io/v1beta2/namespaces/asgard/sparkapplications"
TARGET = "silver.materials"
REASONS = {403: "Forbidden", 404: "NotFound"}


def status(state: str, error: str = "", pod: str | None = None) -> dict:
    body = {"applicationState": {"state": state}, "driverInfo": {}}
    if error:
        body["applicationState"]["errorMessage"] = error
    if pod:
        body["driverInfo"]["podName"] = pod
    jsonschema.validate(body, STATUS_SCHEMA)
    return body


class FakeKubernetes:
    """The API server's side of one SparkApplication: each GET answers the next status of
    ``states`` (the last repeats); the driver pod's log is ``log``. ``on_complete`` runs
    when COMPLETED is first answered (the job's commit, as Spark would make it); ``create``
    is the status the create call gets (403: no permission, 404: no CRD)."""

    def __init__(self, states: list[dict], log: str = "", on_complete=None, create: int = 201):
        self.states, self.log, self.on_complete, self.create = states, log, on_complete, create
        self.created: list[dict] = []
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code: int, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                fake.requests.append(f"POST {self.path}")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if fake.create != 201 or self.path != APPS:
                    code = fake.create if self.path == APPS else 404
                    return self._send(code, _v1status(code, REASONS[code], "refused"))
                fake.created.append(body)
                self._send(201, body)

            def do_GET(self):
                fake.requests.append(f"GET {self.path}")
                path = self.path.split("?")[0]
                if fake.created and path == f"{APPS}/{fake.created[0]['metadata']['name']}":
                    state = fake.states.pop(0) if len(fake.states) > 1 else fake.states[0]
                    if state["applicationState"]["state"] == "COMPLETED" and fake.on_complete:
                        fake.on_complete()
                        fake.on_complete = None
                    return self._send(200, {**fake.created[0], "status": state})
                if path.startswith("/api/v1/namespaces/asgard/pods/") and path.endswith("/log"):
                    return self._send(200, fake.log.encode(), "text/plain")
                self._send(404, _v1status(404, "NotFound", f"{path} not found"))

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _v1status(code: int, reason: str, message: str) -> dict:
    model = client.V1Status(
        api_version="v1", kind="Status", status="Failure", code=code, reason=reason, message=message
    )
    return client.ApiClient().sanitize_for_serialization(model)


def engine(url: str, **kw) -> SparkOperatorEngine:
    settings = dict(
        api_url=url,
        image="registry.example.com/asgard/spark:1.0",
        catalog_uri="http://nessie.data-platform:19120/iceberg",
        warehouse="s3://asgard-lakehouse/warehouse",
        s3_endpoint="http://minio.data-platform:9000",
        poll_interval_s=0.01,
    )
    return SparkOperatorEngine(**{**settings, **kw})


@pytest.fixture
def fake():
    servers = []

    def make(*args, **kw):
        servers.append(FakeKubernetes(*args, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def silver_materials(spark: SparkOperatorEngine, instance: dg.DagsterInstance):
    asset = next(a for a in silver_assets if a.key == dg.AssetKey(["silver", "materials"]))
    return dg.materialize(
        [asset],
        resources={"spark": spark, "lakehouse": IcebergLakehouse()},
        instance=instance,
        raise_on_error=False,
    )


def run_messages(instance: dg.DagsterInstance, result) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id)]


def failure_message(result) -> str:
    return " ".join(e.step_failure_data.error.message for e in result.get_step_failure_events())


def write_silver(rows: int) -> None:
    data = pa.table(
        {"material_id": [f"M{i}" for i in range(rows)], "quality_flag": ["VALID"] * rows}
    )
    IcebergLakehouse().write(
        TARGET, pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
    )


def test_completed_application_streams_the_driver_log_into_the_run(home, fake):
    pod = "asgard-silver-materials-driver"
    api = fake(
        [
            status(""),
            status("SUBMITTED"),
            status("RUNNING", pod=pod),
            status("COMPLETED", pod=pod),
        ],
        log="Setting default log level\nasgard: materials.sql committed to silver.materials\n",
        on_complete=lambda: write_silver(3),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = silver_materials(engine(api.url), instance)
    assert result.success, failure_message(result)
    messages = run_messages(instance, result)
    assert f"[{pod}] asgard: materials.sql committed to silver.materials" in messages
    assert any(
        m.startswith("submitted SparkApplication asgard/asgard-silver-materials-") for m in messages
    )
    meta = result.asset_materializations_for_node("silver__materials")[0].metadata
    assert meta["dagster/row_count"].value == 3 and meta["rows_written"].value == 3

    (app,) = api.created
    jsonschema.validate(app, SCHEMA)
    args = app["spec"]["arguments"]
    assert args[args.index("--sql-text") + 1] == sql_path("materials").read_text()
    assert args[args.index("--target") + 1] == TARGET
    assert args[args.index("--input") + 1] == "bronze.materials"
    assert "--window" not in args


def test_failed_driver_fails_the_step_with_its_error_message(home, fake):
    pod = "asgard-silver-materials-driver"
    error = "driver container failed with ExitCode: 1, Reason: Error"
    api = fake(
        [status("SUBMITTED"), status("RUNNING", pod=pod), status("FAILED", error, pod)],
        log="Traceback (most recent call last):\nAnalysisException: [UNRESOLVED_COLUMN] quantity_on_hnd\n",
    )
    instance = dg.DagsterInstance.ephemeral()
    result = silver_materials(engine(api.url), instance)
    assert not result.success
    message = failure_message(result)
    assert "ended FAILED" in message and error in message
    assert f"[{pod}] AnalysisException: [UNRESOLVED_COLUMN] quantity_on_hnd" in run_messages(
        instance, result
    )
    assert not IcebergLakehouse().exists(TARGET)  # nothing was published


def test_submission_failure_fails_with_the_operators_message(home, fake):
    error = "failed to run spark-submit: image pull back-off"
    api = fake([status("SUBMISSION_FAILED", error)])
    result = silver_materials(engine(api.url), dg.DagsterInstance.ephemeral())
    assert not result.success
    assert f"ended SUBMISSION_FAILED: {error}" in failure_message(result)
    assert not any("/log" in r for r in api.requests)  # no driver pod, no log read


def test_missing_crd_is_named(home, fake):
    api = fake([status("")], create=404)
    with pytest.raises(
        dg.Failure,
        match="is the Spark Operator's CRD sparkapplications.sparkoperator.k8s.io installed",
    ):
        engine(api.url).build(
            sql_path("materials"), TARGET, ["bronze.materials"], IcebergLakehouse()
        )


def test_forbidden_names_the_permissions_needed(home, fake):
    api = fake([status("")], create=403)
    with pytest.raises(dg.Failure, match="needs create/get on sparkapplications"):
        engine(api.url).build(
            sql_path("materials"), TARGET, ["bronze.materials"], IcebergLakehouse()
        )


def test_application_the_operator_never_picks_up_fails(home, fake):
    api = fake([status("")])  # no operator: the state stays empty
    with pytest.raises(dg.Failure, match="not picked up by the Spark Operator within 0 s"):
        engine(api.url, pickup_timeout_s=0.1).build(
            sql_path("materials"), TARGET, ["bronze.materials"], IcebergLakehouse()
        )


def test_unreachable_api_names_the_url(home):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(dg.Failure, match=f"cannot reach the Kubernetes API at {url}"):
        engine(url).build(sql_path("materials"), TARGET, ["bronze.materials"], IcebergLakehouse())


def test_no_api_configured_says_how_to_configure_one(home, monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    with pytest.raises(dg.Failure, match="set ASGARD_K8S_API_URL or KUBECONFIG"):
        engine("").build(sql_path("materials"), TARGET, ["bronze.materials"], IcebergLakehouse())


def test_windowed_manifest_is_valid_and_carries_the_iceberg_catalog(home):
    window = Window(
        "start_time",
        datetime(2025, 3, 1),
        datetime(2025, 3, 4),
        datetime(2025, 1, 1),
        datetime(2025, 7, 1),
    )
    spark = engine("http://unused", executor_instances=4, executor_memory="4g", packages="none")
    app = spark.application(
        "asgard-silver-work-orders-1",
        sql_path("work_orders"),
        "silver.work_orders",
        ["bronze.work_orders"],
        window,
    )
    jsonschema.validate(app, SCHEMA)
    spec = app["spec"]
    assert spec["arguments"][-4:] == [
        "--window",
        "start_time",
        "2025-03-01 00:00:00",
        "2025-03-04 00:00:00",
    ]
    assert spec["executor"]["instances"] == 4 and spec["executor"]["memory"] == "4g"
    assert spec["driver"]["envFrom"] == [{"secretRef": {"name": "asgard-s3"}}]
    conf = spec["sparkConf"]
    assert conf["spark.sql.catalog.asgard"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.asgard.type"] == "rest"
    assert conf["spark.sql.catalog.asgard.uri"] == "http://nessie.data-platform:19120/iceberg"
    assert conf["spark.sql.catalog.asgard.warehouse"] == "s3://asgard-lakehouse/warehouse"
    assert conf["spark.sql.catalog.asgard.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert conf["spark.sql.catalog.asgard.s3.endpoint"] == "http://minio.data-platform:9000"
    assert conf["spark.sql.defaultCatalog"] == "asgard"
    assert "spark.jars.packages" not in conf  # baked into the image
    assert (
        "iceberg-spark-runtime-3.5" in engine("http://unused").spark_conf()["spark.jars.packages"]
    )


@pytest.mark.parametrize(
    "path, value, error",
    [
        (("spec", "mode"), "Cluster", "'Cluster' is not one of"),
        (("spec", "restartPolicy", "type"), "Sometimes", "'Sometimes' is not one of"),
        (("spec", "executor", "instances"), "2", "'2' is not of type 'integer'"),
        (("spec", "driver", "serviceaccount"), "spark", "Additional properties"),
        (("metadata", "name"), "Asgard_Silver", "does not match"),
    ],
)
def test_the_schema_rejects_what_the_operator_would(home, path, value, error):
    app = engine("http://unused").application(
        "a", sql_path("materials"), TARGET, ["bronze.materials"], None
    )
    node = app
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=error):
        jsonschema.validate(app, SCHEMA)


def test_k8s_profile_settings_come_from_the_environment(home, monkeypatch):
    for var in ("ASGARD_SPARK_IMAGE", "ASGARD_CATALOG_URI", "ASGARD_WAREHOUSE"):
        monkeypatch.delenv(var, raising=False)
    # named with the profile's other missing settings, before a run starts
    with pytest.raises(MissingSettings) as missing:
        resource("spark", "k8s")
    assert str(missing.value).endswith(
        "unset: ASGARD_CATALOG_URI (spark), ASGARD_SPARK_IMAGE (spark), ASGARD_WAREHOUSE (spark)"
    )
    assert "ASGARD_SPARK_IMAGE" in profile_settings("k8s")
    monkeypatch.setenv("ASGARD_SPARK_IMAGE", "registry.example.com/asgard/spark:2")
    monkeypatch.setenv("ASGARD_CATALOG_URI", "jdbc:postgresql://pg:5432/catalog")
    monkeypatch.setenv("ASGARD_WAREHOUSE", "s3://lake/wh")
    monkeypatch.setenv("ASGARD_SPARK_CATALOG_TYPE", "jdbc")
    monkeypatch.setenv("ASGARD_SPARK_EXECUTORS", "6")
    spark = resource("spark", "k8s")
    spark.check_settings()
    app = spark.application("a", sql_path("materials"), TARGET, ["bronze.materials"], None)
    jsonschema.validate(app, SCHEMA)
    assert app["spec"]["image"] == "registry.example.com/asgard/spark:2"
    assert app["spec"]["executor"]["instances"] == 6
    assert app["spec"]["sparkConf"]["spark.sql.catalog.asgard.type"] == "jdbc"
    assert (
        app["spec"]["sparkConf"]["spark.sql.catalog.asgard.uri"]
        == "jdbc:postgresql://pg:5432/catalog"
    )

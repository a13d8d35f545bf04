"""Ingestion through Airbyte, tested at its boundary: Airbyte cannot run here, so a loopback
HTTP server answers the requests dagster-airbyte's client sends, with the JSON shapes the
client parses and Airbyte's API defines:

- REST API (``/api/public/v1``): ``POST /jobs``, ``GET /jobs/{id}``, ``GET /jobs`` (a page
  ``{"data": [...], "next": ...}``) return JobResponse objects (``jobId``, ``status``,
  ``jobType``, ...), as ``dagster_airbyte.translator.AirbyteJob.from_job_details`` reads.
- Configuration API (``/api/v1``): ``POST /connections/get`` returns a ConnectionRead
  (``syncCatalog.streams[].stream/config``, read by ``AirbyteConnection.from_connection_details``);
  ``POST /jobs/get`` a JobInfoRead whose ``attempts[].attempt`` holds ``streamStats``
  (``streamName``, ``stats.recordsCommitted``) and ``failureSummary.failures[].externalMessage``
  (airbyte-platform ``airbyte-api/server-api/src/main/openapi/config.yaml``: AttemptRead,
  AttemptStreamStats, AttemptFailureSummary; dagster-airbyte reads the same stats in
  ``dagster_airbyte.utils.generate_materializations``).

A sync "runs" when the job is created: the fake writes what Airbyte's Iceberg destination
would (source rows past the bronze cursor plus Airbyte's ``_airbyte_*`` columns, appended
to ``bronze.<table>``) through the local lakehouse.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pyarrow as pa
import pytest
import sqlalchemy as sa
from conftest import DEMO_DAYS
from dagster_airbyte import AirbyteWorkspace

from asgard_assets import cli, demo_data
from asgard_assets.bronze.assets import bronze_assets
from asgard_assets.contracts.sources import SOURCE_TABLES, SOURCES
from asgard_assets.definitions import defs  # loaded under the local profile
from asgard_assets.orchestration import sensors as s
from asgard_assets.partitions import source_days
from asgard_assets.resources import MissingSettings, resource, resources_for
from asgard_assets.resources.airbyte import REQUESTS, AirbyteIngestion
from asgard_assets.resources.bronze_state import bronze_cursor
from asgard_assets.resources.deployer import free_port
from asgard_assets.resources.ingestion import EmbeddedIngestion
from asgard_assets.resources.lakehouse import IcebergLakehouse

CONNECTION = "9a1f4b0e-2c7d-4e55-8f31-0d6a7c2b9e10"
WORKSPACE = "5e7c1d2a-0b3f-4a9e-9c61-2f8d4e6a1b07"
DESTINATION = "c3d2b1a0-9f8e-4d7c-a6b5-0e1f2a3b4c5d"
JOB_ID = 4242
USER, PASSWORD = "asgard", "s3cret-pw"
JSON_TYPES = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "double": {"type": "number"},
    "timestamp": {
        "type": "string",
        "format": "date-time",
        "airbyte_type": "timestamp_without_timezone",
    },
}
FAILURE = "Could not connect with provided configuration. Error: password authentication failed"


def stream(table: str) -> dict:
    """One entry of a ConnectionRead's syncCatalog: Incremental | Append on updated_at."""
    t = SOURCES[table]
    return {
        "stream": {
            "name": table,
            "namespace": t.schema,
            "jsonSchema": {
                "type": "object",
                "properties": {c.name: JSON_TYPES[c.type] for c in t.columns},
            },
            "supportedSyncModes": ["full_refresh", "incremental"],
            "sourceDefinedCursor": False,
            "defaultCursorField": [],
            "sourceDefinedPrimaryKey": [[t.key]],
        },
        "config": {
            "syncMode": "incremental",
            "cursorField": [t.cursor],
            "destinationSyncMode": "append",
            "primaryKey": [[t.key]],
            "aliasName": table,
            "selected": True,
        },
    }


def airbyte_destination_write(source_url: str, lakehouse: IcebergLakehouse) -> dict[str, int]:
    """What Airbyte's Iceberg destination does in an Incremental | Append sync: the source
    rows past the stream's cursor, with Airbyte's columns, appended to bronze.<table>."""
    source = EmbeddedIngestion(source_url=source_url)
    extracted = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    committed = {}
    for table in SOURCE_TABLES:
        reader = source.read(table, since=bronze_cursor(lakehouse, f"bronze.{table}"))
        schema = (
            reader.schema.append(pa.field("_airbyte_raw_id", pa.string()))
            .append(pa.field("_airbyte_extracted_at", extracted.type))
            .append(pa.field("_airbyte_generation_id", pa.int64()))
        )

        def batches(reader=reader, schema=schema):
            for b in reader:
                ids = pa.array([str(uuid.uuid4()) for _ in range(b.num_rows)])
                extra = [ids, pa.repeat(extracted, b.num_rows), pa.repeat(pa.scalar(0), b.num_rows)]
                yield pa.RecordBatch.from_arrays([*b.columns, *extra], schema=schema)

        out = pa.RecordBatchReader.from_batches(schema, batches())
        committed[table] = lakehouse.write(f"bronze.{table}", out, mode="append").rows_written
    return committed


class FakeAirbyte:
    """Airbyte's REST and configuration APIs on loopback, one connection, one job at a time."""

    def __init__(self, source_url: str, fail: bool = False):
        self.source_url, self.fail = source_url, fail
        self.requests: list[tuple[str, str, dict | None, str | None]] = []
        self.committed: dict[str, int] = {}
        self.status = "pending"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, body: dict, code: int = 200):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((method, self.path, body, self.headers.get("authorization")))
                self._reply(*fake.answer(method, self.path.split("?")[0], body))

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def job(self) -> dict:
        """A JobResponse of the REST API."""
        return {
            "jobId": JOB_ID,
            "status": self.status,
            "jobType": "sync",
            "connectionId": CONNECTION,
            "startTime": "2026-11-29T12:00:00Z",
            "rowsSynced": sum(self.committed.values()),
        }

    def answer(self, method: str, path: str, body: dict | None) -> tuple[dict, int]:
        if (method, path) == ("POST", "/api/v1/connections/get"):
            assert body == {"connectionId": CONNECTION}
            return {
                "connectionId": CONNECTION,
                "name": "factory -> lakehouse",
                "namespaceDefinition": "customformat",
                "namespaceFormat": "bronze",
                "prefix": "",
                "sourceId": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
                "destinationId": DESTINATION,
                "status": "active",
                "syncCatalog": {"streams": [stream(t) for t in SOURCE_TABLES]},
            }, 200
        if (method, path) == ("GET", "/api/public/v1/jobs"):  # no sync running
            return {"data": [], "next": ""}, 200
        if (method, path) == ("POST", "/api/public/v1/jobs"):
            assert body == {"connectionId": CONNECTION, "jobType": "sync"}
            if self.fail:
                self.status = "failed"
            else:
                lakehouse = IcebergLakehouse()
                self.committed = airbyte_destination_write(self.source_url, lakehouse)
                self.status = "succeeded"
            return {**self.job(), "status": "pending"}, 200
        if (method, path) == ("GET", f"/api/public/v1/jobs/{JOB_ID}"):
            return self.job(), 200
        if (method, path) == ("POST", "/api/v1/jobs/get"):
            assert body == {"id": JOB_ID}
            return self.job_info(), 200
        return {"message": f"no route {method} {path}"}, 404

    def job_info(self) -> dict:
        """A JobInfoRead of the configuration API."""
        attempt = {
            "id": 0,
            "status": self.status,
            "createdAt": 1764417600,
            "updatedAt": 1764417660,
            "recordsSynced": sum(self.committed.values()),
            "totalStats": {"recordsEmitted": sum(self.committed.values())},
            "streamStats": [
                {
                    "streamName": t,
                    "streamNamespace": SOURCES[t].schema,
                    "stats": {"recordsEmitted": n, "recordsCommitted": n},
                }
                for t, n in self.committed.items()
            ],
        }
        if self.fail:
            attempt["failureSummary"] = {
                "failures": [
                    {
                        "failureOrigin": "source",
                        "failureType": "config_error",
                        "externalMessage": FAILURE,
                        "timestamp": 1764417650000,
                    }
                ],
                "partialSuccess": False,
            }
        job = {"id": JOB_ID, "configType": "sync", "configId": CONNECTION, "status": self.status}
        return {"job": job, "attempts": [{"attempt": attempt, "logs": {"logLines": []}}]}

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def posted_syncs(self) -> int:
        return sum(1 for m, p, _, _ in self.requests if (m, p) == ("POST", "/api/public/v1/jobs"))


def ingestion(url: str, source_url: str) -> AirbyteIngestion:
    """The k8s profile's ingestion, pointed at ``url`` (polling without the 10 s pause)."""
    workspace = AirbyteWorkspace(
        rest_api_base_url=f"{url}/api/public/v1",
        configuration_api_base_url=f"{url}/api/v1",
        workspace_id=WORKSPACE,
        username=USER,
        password=PASSWORD,
        poll_interval=0.05,
        **REQUESTS,
    )
    return AirbyteIngestion(workspace=workspace, connection_id=CONNECTION, source_url=source_url)


@pytest.fixture
def airbyte(own_source):
    fake = FakeAirbyte(own_source)
    yield fake
    fake.close()


@pytest.fixture
def failing_airbyte(own_source):
    fake = FakeAirbyte(own_source, fail=True)
    yield fake
    fake.close()


def run_bronze(ingest: AirbyteIngestion, selection: list[str], **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        bronze_assets,
        resources={"ingestion": ingest, "lakehouse": IcebergLakehouse()},
        selection=selection,
        tags=DEMO_DAYS,
        **kw,
    )


def metadata(result: dg.ExecuteInProcessResult, table: str) -> dict:
    """The materialization's metadata (a range run records the same on each of its days)."""
    events = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["bronze", table])
    ]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def test_one_sync_materializes_every_bronze_asset_with_its_rows(airbyte, own_source):
    result = run_bronze(ingestion(airbyte.url, own_source), [f"bronze/{t}" for t in SOURCE_TABLES])
    assert result.success
    assert airbyte.posted_syncs() == 1  # one sync serves the run's four bronze steps
    assert airbyte.committed == {
        "work_orders": 15_000,
        "machine_logs": 25_000,
        "quality_checks": 3_500,
        "materials": 2_323,
    }
    materials = metadata(result, "materials")
    assert materials["rows_written"] == 2_323  # the stream's committed records
    assert materials["dagster/row_count"] == 2_323
    assert materials["load_mode"] == "airbyte_sync"
    assert f"job {JOB_ID}" in materials["source"] and airbyte.url in materials["source"]
    # a partition run reports the rows bronze holds in its days: all of them here
    orders = metadata(result, "work_orders")
    assert orders["dagster/partition_row_count"] == 15_000
    assert orders["partition_window"] == "start_time in [2025-01-01, 2025-07-01)"
    # basic auth from the workspace's username/password on every request, never in a URL
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert {auth for *_, auth in airbyte.requests} == {expected}
    assert not any(PASSWORD in path for _, path, _, _ in airbyte.requests)


def test_partition_run_reports_the_rows_of_its_day(airbyte, own_source):
    day = "2025-03-01"
    result = dg.materialize(
        bronze_assets,
        resources={
            "ingestion": ingestion(airbyte.url, own_source),
            "lakehouse": IcebergLakehouse(),
        },
        selection=["bronze/work_orders"],
        partition_key=day,
    )
    assert result.success
    with sa.create_engine(own_source).connect() as conn:
        expected = conn.execute(
            sa.text("SELECT count(*) FROM work_orders WHERE date(start_time) = :day"),
            {"day": day},
        ).scalar()
    assert 0 < expected < 15_000
    assert metadata(result, "work_orders")["dagster/partition_row_count"] == expected


def test_failed_sync_fails_the_step_with_airbytes_message(failing_airbyte, own_source):
    result = run_bronze(
        ingestion(failing_airbyte.url, own_source),
        ["bronze/materials", "bronze/quality_checks"],
        raise_on_error=False,
    )
    assert not result.success
    for table in ("materials", "quality_checks"):
        error = result.failure_data_for_node(f"bronze__{table}").error
        assert f"Airbyte sync job {JOB_ID} of connection {CONNECTION} failed: {FAILURE}" in (
            error.message
        )
        assert not IcebergLakehouse().exists(f"bronze.{table}")
    assert failing_airbyte.posted_syncs() == 1  # the run's failed sync is not tried again


def test_unreachable_airbyte_fails_naming_the_url(home, own_source):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(dg.Failure) as failed:
        ingestion(url, own_source).ingest("materials", IcebergLakehouse())
    message = failed.value.description
    # the API the failed request went to (its first: the configuration API's connection)
    assert message.startswith(
        f"cannot reach Airbyte at {url}/api/v1 (connection {CONNECTION}): Max retries (2) "
        f"exceeded with url: {url}/api/v1/connections/get"
    )
    assert PASSWORD not in message
    # the k8s profile's bound: 3 tries of at most 10 s each
    assert REQUESTS["request_timeout"] * (REQUESTS["request_max_retries"] + 1) <= 30


def test_full_refresh_is_refused_with_what_to_do(airbyte, own_source):
    with pytest.raises(dg.Failure, match="refresh the stream materials of connection"):
        ingestion(airbyte.url, own_source).ingest(
            "materials", IcebergLakehouse(), full_refresh=True
        )
    assert airbyte.posted_syncs() == 0


@pytest.fixture
def k8s_env(monkeypatch, airbyte, own_source, home):
    """The k8s profile's settings, Airbyte at the fake."""
    monkeypatch.setenv("ASGARD_PROFILE", "k8s")
    env = {
        "AIRBYTE_REST_API_URL": f"{airbyte.url}/api/public/v1",
        "AIRBYTE_CONFIGURATION_API_URL": f"{airbyte.url}/api/v1",
        "AIRBYTE_WORKSPACE_ID": WORKSPACE,
        "AIRBYTE_CONNECTION_ID": CONNECTION,
        "AIRBYTE_USERNAME": USER,
        "AIRBYTE_PASSWORD": PASSWORD,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def evaluate_new_rows(ingest) -> list[dg.RunRequest]:
    # a context manager: the Airbyte resource nests the workspace resource
    with dg.build_sensor_context(
        resources={"ingestion": ingest, "lakehouse": resource("lakehouse", "local")},
        definitions=defs,  # to resolve partitioned run requests
    ) as context:
        return s.new_source_rows.evaluate_tick(context).run_requests


def test_sensor_and_demo_days_under_the_k8s_profile(k8s_env, airbyte, own_source):
    ingest = resource("ingestion")
    assert isinstance(ingest, AirbyteIngestion)
    assert ingest.workspace.rest_api_base_url == k8s_env["AIRBYTE_REST_API_URL"]
    # the sensor sees the source's days; `asgard demo` runs every partition from the first
    days = source_days(ingest)
    assert len(days) == demo_data.DAYS
    command = cli.journey_command()
    assert command[command.index("--partition-range") + 1].startswith(f"{days[0]}...")
    # nothing in bronze yet: every table is requested
    first = evaluate_new_rows(ingest)
    assert sorted(tuple(k.to_user_string() for k in r.asset_selection) for r in first) == [
        ("bronze/machine_logs", "silver/machine_logs"),
        ("bronze/quality_checks", "bronze/materials", "silver/quality_checks", "silver/materials"),
        ("bronze/work_orders", "silver/work_orders"),
    ]
    assert run_bronze(ingest, [f"bronze/{t}" for t in SOURCE_TABLES]).success
    assert evaluate_new_rows(ingest) == []
    # a late correction in the source: only its day is requested again
    with sa.create_engine(own_source).begin() as conn:
        start = conn.execute(
            sa.text(
                "UPDATE work_orders SET quantity = quantity + 1, updated_at = '2026-01-01 00:00:00'"
                " WHERE work_order_id = 'WO-000100' RETURNING start_time"
            )
        ).scalar()
    (request,) = evaluate_new_rows(ingest)
    assert request.partition_key == str(start)[:10]
    assert [k.to_user_string() for k in request.asset_selection] == [
        "bronze/work_orders",
        "silver/work_orders",
    ]


def test_missing_k8s_settings_are_listed_at_once(monkeypatch):
    monkeypatch.setenv("ASGARD_PROFILE", "k8s")
    required = {
        "ASGARD_CATALOG_URI",
        "ASGARD_WAREHOUSE",
        "ASGARD_SOURCE_URL",
        "AIRBYTE_REST_API_URL",
        "AIRBYTE_CONFIGURATION_API_URL",
        "AIRBYTE_WORKSPACE_ID",
        "AIRBYTE_CONNECTION_ID",
        "MLFLOW_TRACKING_URI",
        "ASGARD_REDIS",
        "ASGARD_FEAST_REGISTRY",
    }
    for name in required:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MissingSettings) as missing:
        resources_for()
    message = str(missing.value)
    assert message.startswith("ASGARD_PROFILE=k8s needs these environment variables, unset:")
    assert required <= set(message.replace(",", " ").split())
    # half a credential pair is a missing setting too
    monkeypatch.setenv("AIRBYTE_CLIENT_ID", "asgard")
    with pytest.raises(MissingSettings, match=r"AIRBYTE_CLIENT_SECRET \(ingestion\)"):
        resources_for()
    # one resource asks only for its own
    with pytest.raises(MissingSettings, match=r"unset: MLFLOW_TRACKING_URI \(mlflow_tracking\)$"):
        resource("mlflow_tracking")

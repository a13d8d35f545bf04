"""`asgard demo` with nothing to do: the stamp of the last successful run (what it ran on,
what it left) against the home as it is now. Every input and every store is a change of its
own; the demo with a matching stamp starts no run. The real service and a real second demo
are in test_readme (the README's re-run block)."""

import json
import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from asgard_assets import cli, journey_stamp
from asgard_assets.contracts.model import MODEL_NAME
from asgard_assets.settings import asgard_home, deployments_dir

COMMAND = ["dagster", "asset", "materialize", "--partition-range", "2025-01-01...2025-06-30"]


@pytest.fixture
def stores(own_source):
    """The embedded stores' files, as a run leaves them."""
    for name in journey_stamp.STORES:
        (asgard_home() / name).parent.mkdir(parents=True, exist_ok=True)
        (asgard_home() / name).write_bytes(b"left by the run")
    return own_source


def stamp_now(summary: str = "the summary\n") -> journey_stamp.Stamp:
    journey_stamp.record("0123456789abcdef", journey_stamp.inputs(COMMAND), summary)
    return journey_stamp.last()


def test_nothing_changed_since_the_stamp(stores):
    stamp = stamp_now()
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)) is None
    assert (stamp.run_id, stamp.summary) == ("0123456789abcdef", "the summary\n")
    assert journey_stamp.changed(stamp, journey_stamp.inputs([*COMMAND[:-1], "2025-01-02"])) == (
        "the days to run"
    )


@pytest.mark.parametrize(
    "sql, table",
    [
        (
            "UPDATE work_orders SET updated_at = '2025-08-01 00:00:00' WHERE rowid = 7",
            "work_orders",
        ),
        ("DELETE FROM machine_logs WHERE rowid = 3", "machine_logs"),
        ("INSERT INTO materials SELECT * FROM materials LIMIT 1", "materials"),
        ("ALTER TABLE quality_checks ADD COLUMN note TEXT", "quality_checks"),
    ],
    ids=["changed row", "removed row", "added row", "new column"],
)
def test_every_change_to_a_source_table_is_a_change(stores, sql, table):
    stamp = stamp_now()
    with sqlite3.connect(stores.removeprefix("sqlite:///")) as conn:
        conn.execute(sql)
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)) == f"the source ({table})"


@pytest.mark.parametrize("store", journey_stamp.STORES)
def test_a_store_written_since_is_a_change(stores, store):
    stamp = stamp_now()
    with (asgard_home() / store).open("ab") as f:
        f.write(b"a commit")
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)) == f"the stores ({store})"


def test_the_code_is_its_contents_not_its_times(tmp_path, monkeypatch):
    for top in journey_stamp.CODE:
        (tmp_path / top).mkdir()
    (tmp_path / "asgard_assets" / "assets.py").write_text("x = 1\n")
    (tmp_path / "dbt_project" / "target").mkdir()  # dbt's output is not code
    monkeypatch.setattr(journey_stamp, "ROOT", tmp_path)
    digest = journey_stamp.code_digest()
    os.utime(tmp_path / "asgard_assets" / "assets.py", (0, 0))
    (tmp_path / "dbt_project" / "target" / "manifest.json").write_text("{}")
    assert journey_stamp.code_digest() == digest
    (tmp_path / "dbt_project" / "model.sql").write_text("select 1")
    assert journey_stamp.code_digest() != digest


def test_a_setting_is_a_change_and_its_value_is_not_written_down(stores, monkeypatch):
    stamp = stamp_now()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)) == "the settings"
    stamp_now()
    assert "very-secret-value" not in (asgard_home() / journey_stamp.STAMP).read_text()


class Health(BaseHTTPRequestHandler):
    answer: dict = {}

    def do_GET(self):  # noqa: N802 - the handler's name in http.server
        body = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def service(stores):
    """A deployment state file and a /health answering at its URL, as the service's."""
    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    Health.answer = {"status": "ok", "model": MODEL_NAME, "version": "1", "uri": "models:/x/1"}
    deployments_dir().mkdir(parents=True, exist_ok=True)
    state = deployments_dir() / f"{MODEL_NAME}.json"
    state.write_text(json.dumps({"model": MODEL_NAME, "version": "1", "url": url}))
    yield server, state
    server.shutdown()
    server.server_close()


def test_a_serving_service_is_as_the_run_left_it(service):
    assert journey_stamp.changed(stamp_now(), journey_stamp.inputs(COMMAND)) is None


def test_a_service_that_stopped_answering_or_failed_a_reload_is_a_change(service):
    server, _ = service
    stamp = stamp_now()
    Health.answer = {**Health.answer, "reload_error": "version 2 did not load"}
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)).startswith(
        "the inference service (not answering at http://127.0.0.1:"
    )
    server.shutdown()
    server.server_close()
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)).startswith(
        "the inference service (not answering"
    )


def test_a_stopped_or_redeployed_service_is_a_change(service):
    _, state = service
    stamp = stamp_now()
    state.write_text(json.dumps({**json.loads(state.read_text()), "version": "2"}))
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)) == (
        "the inference service was deployed again"
    )
    state.unlink()
    assert journey_stamp.changed(stamp, journey_stamp.inputs(COMMAND)) == (
        "the inference service was stopped"
    )


def test_the_demo_with_a_matching_stamp_starts_no_run(stores, monkeypatch, capsys):
    def no_run(*args, **kwargs):
        raise AssertionError("asgard demo started a process")

    monkeypatch.setattr(cli.subprocess, "Popen", no_run)
    cli.instance_env()  # the demo's environment (DAGSTER_HOME set), as the stamped run had
    journey_stamp.record("fedcba9876543210", journey_stamp.inputs(cli.journey_command()), "S\n")
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert (
        "Nothing to run: the source, the code, the settings and the days are those of run fedcba98"
        in out
    )
    assert "demo --force` runs every step anyway" in out
    assert out.endswith("That run's summary:\nS\n")


def test_the_demo_says_what_changed_before_it_runs(stores, capsys):
    journey_stamp.record("fedcba9876543210", journey_stamp.inputs(cli.journey_command()), "S\n")
    with sqlite3.connect(stores.removeprefix("sqlite:///")) as conn:
        conn.execute("DELETE FROM work_orders WHERE rowid = 1")
    assert not cli._nothing_changed(journey_stamp.inputs(cli.journey_command()))
    out = capsys.readouterr().out
    assert out.startswith("Changed since run fedcba98 (")
    assert out.endswith("): the source (work_orders).\n")


@pytest.mark.parametrize(
    "setting, value, why",
    [
        ("ASGARD_PROFILE", "k8s", "the k8s profile keeps its state in services"),
        ("MLFLOW_TRACKING_URI", "http://mlflow:5000", "MLFLOW_TRACKING_URI is set"),
        ("ASGARD_CATALOG_URI", "postgresql://catalog", "ASGARD_CATALOG_URI is set"),
    ],
)
def test_state_in_services_is_never_taken_as_unchanged(stores, monkeypatch, setting, value, why):
    monkeypatch.setenv(setting, value)
    assert journey_stamp.checkable().startswith(why)
    assert cli._stamp_inputs(COMMAND) is None


def test_a_source_that_does_not_meet_the_contract_leaves_it_to_the_run(stores):
    with sqlite3.connect(stores.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TABLE materials")
    assert cli._stamp_inputs(COMMAND) is None

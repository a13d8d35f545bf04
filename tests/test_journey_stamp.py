"""`asgard demo` with nothing to do: the stamp of the last successful run (what it ran on,
what it left) against the home as it is now. Every input and every store is a change of its
own; the demo with a matching stamp starts no run. The real service and a real second demo
are in test_readme (the README's re-run block)."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from asgard_assets import cli, journey_stamp
from asgard_assets.contracts.model import MODEL_NAME
from asgard_assets.deployments.service import SERVICE_MODULE, process_start
from asgard_assets.settings import asgard_home, deployments_dir

DAYS = "2025-01-01...2025-06-30"
RUN_ID = "0123456789abcdef"


@pytest.fixture
def stores(own_source, monkeypatch):
    """The embedded stores' files, as a run leaves them (MLflow sets its URI in the
    environment of a process that used it: an earlier test's store is not this one's)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(asgard_home() / "dagster"))  # this home's instance
    for name in journey_stamp.STORES:
        (asgard_home() / name).parent.mkdir(parents=True, exist_ok=True)
        (asgard_home() / name).write_bytes(b"left by the run")
    return own_source


def stamp_now(
    summary: str = "the summary\n", days: str = DAYS, at: datetime | None = None
) -> journey_stamp.Stamp:
    """A stamp as a run that just ended records it (without the check of who wrote last),
    of a run the home's Dagster instance holds."""
    cli.instance_env()
    with dg.DagsterInstance.get() as instance:
        if not instance.has_run(RUN_ID):
            ended = dg.DagsterRunStatus.SUCCESS  # not a run going on
            instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=RUN_ID, status=ended))
    path = asgard_home() / journey_stamp.STAMP
    path.write_text(
        json.dumps(
            {
                "run_id": RUN_ID,
                "at": (at or datetime.now(UTC)).isoformat(),
                "inputs": journey_stamp.inputs(days),
                "left": journey_stamp.left(),
                "summary": summary,
            }
        )
    )
    return journey_stamp.last()


def changed(stamp) -> str | None:
    return journey_stamp.changed(stamp, journey_stamp.inputs(DAYS))


def test_nothing_changed_since_the_stamp(stores):
    stamp = stamp_now()
    assert changed(stamp) is None
    assert (stamp.run_id, stamp.summary) == ("0123456789abcdef", "the summary\n")
    assert journey_stamp.changed(stamp, journey_stamp.inputs("2025-01-01...2025-07-01")) == (
        f"the days to run ({DAYS} then, 2025-01-01...2025-07-01 now)"
    )


def test_a_stamp_older_than_a_day_is_a_change(stores):
    assert changed(stamp_now(at=datetime.now(UTC) - timedelta(hours=23))) is None
    stamp = stamp_now(at=datetime.now(UTC) - timedelta(hours=25))
    assert changed(stamp) == "a day has passed (maintenance and the freshness checks are due)"


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
    assert changed(stamp) == f"the source ({table})"


def test_a_change_behind_a_row_stamped_in_the_future_is_a_change(stores):
    """The latest updated_at stays the future row's; bronze's cursor (the latest not in the
    future) moves, and a run would load the changed row."""
    path = stores.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE materials SET updated_at = '2999-01-01 00:00:00' WHERE rowid = 1")
    stamp = stamp_now()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE materials SET updated_at = '2026-01-01 00:00:00' WHERE rowid = 2")
    assert changed(stamp) == "the source (materials)"


@pytest.mark.parametrize("store", journey_stamp.STORES)
def test_a_store_written_since_is_a_change(stores, store):
    stamp = stamp_now()
    with (asgard_home() / store).open("ab") as f:
        f.write(b"a commit")
    assert changed(stamp) == f"the stores ({store})"


def test_a_store_rewritten_in_place_is_a_change(stores):
    """SQLite writes pages in place: the size stays, the time moves."""
    stamp = stamp_now()
    catalog = asgard_home() / "catalog.db"
    stat = catalog.stat()
    catalog.write_bytes(b"LEFT BY THE RUN")
    os.utime(catalog, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert changed(stamp) == "the stores (catalog.db)"


def test_the_code_is_its_contents_not_its_times(tmp_path, monkeypatch):
    for top in journey_stamp.CODE:
        (tmp_path / top).mkdir()
    (tmp_path / "asgard_assets" / "assets.py").write_text("x = 1\n")
    (tmp_path / "dbt_project" / "target").mkdir()  # dbt's output is not code
    monkeypatch.setattr(journey_stamp, "ROOT", tmp_path)
    code = journey_stamp.code_digests()
    os.utime(tmp_path / "asgard_assets" / "assets.py", (0, 0))
    (tmp_path / "dbt_project" / "target" / "manifest.json").write_text("{}")
    (tmp_path / "asgard_assets" / ".assets.py.swp").write_text("an editor's")
    assert journey_stamp.code_digests() == code
    (tmp_path / "deploy" / "model.Dockerfile").write_text("FROM python:3.11-slim")
    assert journey_stamp.code_digests() != code


def test_the_code_change_names_the_files(stores, monkeypatch):
    stamp = stamp_now()
    code = dict(stamp.inputs["code"])
    edited = "dbt_project/models/gold/operator_features.sql"
    assert edited in code
    monkeypatch.setattr(
        journey_stamp, "code_digests", lambda: {**code, edited: "0" * 16, "deploy/new.yaml": "1"}
    )
    assert changed(stamp) == f"the code ({edited}, deploy/new.yaml)"
    many = {f"asgard_assets/new_{i}.py": "2" for i in range(5)}
    monkeypatch.setattr(journey_stamp, "code_digests", lambda: {**code, **many})
    assert changed(stamp) == (
        "the code (asgard_assets/new_0.py, asgard_assets/new_1.py, asgard_assets/new_2.py "
        "and 2 more)"
    )


def test_a_setting_is_a_change_and_its_value_is_not_written_down(stores, monkeypatch):
    stamp = stamp_now()
    monkeypatch.setenv("AWS_SESSION_TOKEN", "rotated by the shell")  # not read by a run
    monkeypatch.setenv("ASGARD_DBT_TARGET", "trino")  # not used by gold: warned about
    assert changed(stamp) is None
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    assert changed(stamp) == "the settings (AWS_SECRET_ACCESS_KEY)"
    # every input that differs is named, not only the first
    monkeypatch.setenv("ASGARD_PARTITION_END", "2025-06-30")
    assert journey_stamp.changed(stamp, journey_stamp.inputs("2025-01-01...2025-07-01")) == (
        f"the days to run ({DAYS} then, 2025-01-01...2025-07-01 now); "
        "the settings (ASGARD_PARTITION_END, AWS_SECRET_ACCESS_KEY)"
    )
    stamp_now()
    written = (asgard_home() / journey_stamp.STAMP).read_text()
    assert "very-secret-value" not in written
    # nor its plain hash, which a guess could be checked against: the home's key is in it
    assert hashlib.sha256(b"very-secret-value").hexdigest()[:16] not in written
    assert (asgard_home() / journey_stamp.SETTINGS_KEY).stat().st_mode & 0o777 == 0o600


# a /health answering as the service would, in a process whose command line names the
# service's module (the deployer's test of "still the service it started")
HEALTH = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
answer = json.dumps({**json.loads(sys.argv[2]), "pid": os.getpid()}).encode()
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(answer)
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", 0), Health)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.fixture
def service(stores):
    """Start a service answering ``answer`` and record it as the deployment; stopped after."""
    started = []

    def start(**answer) -> subprocess.Popen:
        health = {"status": "ok", "model": MODEL_NAME, "version": "1", **answer}
        proc = subprocess.Popen(
            [sys.executable, "-c", HEALTH, SERVICE_MODULE, json.dumps(health)],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
        deployments_dir().mkdir(parents=True, exist_ok=True)
        state = {"model": MODEL_NAME, "version": "1", "url": url, "pid": proc.pid}
        state["process_start"] = process_start(proc.pid)
        (deployments_dir() / f"{MODEL_NAME}.json").write_text(json.dumps(state))
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_serving_service_is_as_the_run_left_it(service):
    service()
    assert changed(stamp_now()) is None


def test_a_service_that_stopped_or_failed_a_reload_is_a_change(service):
    proc = service(reload_error="version 2 did not load")
    assert changed(stamp_now()).startswith(
        "the inference service (not answering at http://127.0.0.1:"
    )
    proc = service()
    stamp = stamp_now()
    proc.kill()
    proc.wait()
    assert changed(stamp).startswith("the inference service (not answering")


def test_another_process_answering_at_the_services_url_is_not_the_service(service):
    proc = service()
    state_path = deployments_dir() / f"{MODEL_NAME}.json"
    state = json.loads(state_path.read_text())
    state |= {"pid": os.getpid(), "process_start": process_start(os.getpid())}
    state_path.write_text(json.dumps(state))  # a service this home started, now gone
    assert changed(stamp_now()).startswith("the inference service (not answering")
    proc.kill()


def test_a_stopped_or_redeployed_service_is_a_change(service):
    service()
    state = deployments_dir() / f"{MODEL_NAME}.json"
    stamp = stamp_now()
    state.write_text(json.dumps({**json.loads(state.read_text()), "version": "2"}))
    assert changed(stamp) == "the inference service was deployed again"
    state.unlink()
    assert changed(stamp) == "the inference service was stopped"


def test_the_demo_with_a_matching_stamp_starts_no_run(stores, monkeypatch, capsys):
    def no_run(*args, **kwargs):
        raise AssertionError("asgard demo started a process")

    monkeypatch.setattr(cli.subprocess, "Popen", no_run)
    cli.instance_env()  # the demo's environment (DAGSTER_HOME set), as the stamped run had
    days = cli.journey_days()
    monkeypatch.setattr(cli, "journey_days", lambda: days)  # the same days across midnight
    stamp_now("S\n", days)
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert (
        "Nothing to run: the source, the code, the settings and the days are those of run "
        "01234567" in out
    )
    assert "demo --force` runs every step anyway" in out
    assert out.endswith("That run's summary:\nS\n")


def test_an_instance_without_the_stamped_run_is_a_change(stores):
    """The UI would show nothing of the run (its Dagster instance deleted, or another one
    named): the demo runs again."""
    stamp = stamp_now()
    with dg.DagsterInstance.get() as instance:
        instance.delete_run(RUN_ID)
    assert changed(stamp) == (
        f"the Dagster instance ({os.environ['DAGSTER_HOME']}) does not hold that run"
    )
    stamp = stamp_now()
    (Path(os.environ["DAGSTER_HOME"]) / journey_stamp.RUNS_DB).unlink()
    assert "does not hold that run" in changed(stamp)


def test_an_instance_with_its_own_storage_is_not_checkable(stores):
    """Its runs are not in the instance folder's SQLite file: the demo always runs."""
    config = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
    assert journey_stamp.checkable() is None
    config.write_text(
        config.read_text() + "\nstorage:\n  postgres:\n    postgres_url: postgresql://x/y\n"
    )
    assert journey_stamp.checkable() == f"{config} names the Dagster instance's own storage"


def test_force_runs_and_a_run_that_starts_forgets_the_stamp(stores, monkeypatch, capsys):
    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(cli.subprocess, "Popen", started)
    cli.instance_env()
    stamp_now()
    with pytest.raises(Started):
        cli.main(["demo", "--force"])
    out = capsys.readouterr().out
    assert "--force: every step runs, and each skips what it finds unchanged." in out
    assert "Nothing to run" not in out and "Changed since" not in out
    # until this run succeeds, no stamp vouches for what it may have changed
    assert journey_stamp.last() is None


def test_the_demo_says_what_changed_before_it_runs(stores, capsys):
    stamp_now(at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    with sqlite3.connect(stores.removeprefix("sqlite:///")) as conn:
        conn.execute("DELETE FROM work_orders WHERE rowid = 1")
    assert not cli._nothing_changed(journey_stamp.inputs(DAYS))
    out = capsys.readouterr().out
    assert out.startswith("Changed since run 01234567 (2026-11-30 12:00 UTC): ")
    assert out.endswith("the source (work_orders).\n")


def test_a_run_is_stamped_only_when_it_wrote_last(stores):
    """Another run going, or a store written after the run ended: what is there is not
    the run's alone, and the next demo runs."""
    cli.instance_env()

    @dg.asset
    def one() -> int:
        return 1

    with dg.DagsterInstance.get() as instance:
        run_id = dg.materialize([one], instance=instance).run_id
    ran_on = journey_stamp.inputs(DAYS)
    assert journey_stamp.record(run_id, ran_on, "S\n")
    assert journey_stamp.last().run_id == run_id
    journey_stamp.forget()
    (asgard_home() / "feast" / "online_store.db").write_bytes(b"written after the run")
    assert not journey_stamp.record(run_id, ran_on, "S\n")
    assert journey_stamp.last() is None


def test_a_stamp_this_code_cannot_read_is_no_stamp(stores):
    (asgard_home() / journey_stamp.STAMP).write_text(json.dumps({"run_id": "x"}))
    assert journey_stamp.last() is None
    stamp_now()
    text = (asgard_home() / journey_stamp.STAMP).read_text()
    (asgard_home() / journey_stamp.STAMP).write_text(text.replace('"days"', '"command"'))
    assert journey_stamp.last() is None


@pytest.mark.parametrize(
    "setting, value, why",
    [
        ("ASGARD_PROFILE", "k8s", "the k8s profile keeps its state in services"),
        ("MLFLOW_TRACKING_URI", "http://mlflow:5000", "MLFLOW_TRACKING_URI names a store"),
        ("ASGARD_CATALOG_URI", "postgresql://catalog", "ASGARD_CATALOG_URI names a store"),
    ],
)
def test_state_in_services_is_never_taken_as_unchanged(stores, monkeypatch, setting, value, why):
    monkeypatch.setenv(setting, value)
    assert journey_stamp.checkable().startswith(why)
    assert cli._stamp_inputs(DAYS) is None


def test_the_embedded_stores_named_explicitly_are_still_files(stores, monkeypatch):
    from asgard_assets.settings import embedded_catalog_uri, embedded_mlflow_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", embedded_mlflow_uri())
    monkeypatch.setenv("ASGARD_CATALOG_URI", embedded_catalog_uri())
    assert journey_stamp.checkable() is None


def test_a_source_that_does_not_meet_the_contract_leaves_it_to_the_run(stores):
    with sqlite3.connect(stores.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TABLE materials")
    assert cli._stamp_inputs(DAYS) is None

"""Faults, each a test: kill -9 during each layer's write, an unreachable source, a full
disk, a run whose process died; and which failures Dagster retries."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
from conftest import ROOT, create_source_table, journey_assets, materialize
from test_contract import ASSETS, failure, material, order, retries

from asgard_assets.resources import resource

# Loaded by every Python process of a killed run (the run, and dbt under it): SIGKILLs the
# whole process group when the named table is about to commit, after its data files are
# written. Exactly the debris of a kill -9 mid-write.
KILL_HOOK = """
import os, signal
target = os.environ.get("ASGARD_KILL_AT_COMMIT")
if target:
    from pyiceberg.table import Transaction
    real = Transaction.commit_transaction
    def commit(self):
        if ".".join(self._table.name()[-2:]) == target:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        return real(self)
    Transaction.commit_transaction = commit
"""

LAYERS = {
    "bronze": ["bronze/materials"],
    "silver": ["bronze/materials", "silver/materials"],
    "gold": ["bronze/work_orders", "silver/work_orders", "gold/operator_features"],
}
TARGET = {
    "bronze": "bronze.materials",
    "silver": "silver.materials",
    "gold": "gold.operator_features",
}
VOLATILE = ["processed_at", "_asgard_loaded_at", "_asgard_load_id", "feature_timestamp"]


def lakehouse():
    return resource("lakehouse")


def stable(identifier: str) -> pd.DataFrame:
    df = lakehouse().table(identifier).scan().to_pandas().drop(columns=VOLATILE, errors="ignore")
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def small_source(url: str) -> None:
    create_source_table(url, "materials", [material(i) for i in range(1, 30)])
    # two operators with six orders each: both reach gold
    create_source_table(url, "work_orders", [order(i) for i in range(1, 13)])


def build(steps: list[str]) -> None:
    assets = journey_assets() if any(s.startswith("gold") for s in steps) else ASSETS
    assert materialize(" ".join(steps), assets=assets).success


def killed_run(steps: list[str], target: str, hook_dir) -> int:
    """Materialize ``steps`` in a fresh process killed -9 just before ``target`` commits."""
    (hook_dir / "sitecustomize.py").write_text(KILL_HOOK)
    code = (
        "import sys; sys.path.insert(0, 'tests'); "
        "from conftest import materialize, journey_assets; "
        "from test_contract import ASSETS; "
        f"steps = {' '.join(steps)!r}; "
        "assets = journey_assets() if 'gold' in steps else ASSETS; "
        "materialize(steps, assets=assets, raise_on_error=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(hook_dir), "ASGARD_KILL_AT_COMMIT": target}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True, timeout=600
    )
    return proc.returncode


@pytest.mark.parametrize("layer", list(LAYERS))
def test_kill_during_a_write_then_rerun(layer, home, tmp_path, monkeypatch):
    """kill -9 as a layer's table is about to commit: the table keeps its snapshot, a re-run
    gives the table an uninterrupted run gives, and maintenance removes the debris."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    monkeypatch.setenv("ASGARD_SOURCE_URL", url)
    small_source(url)
    steps, target = LAYERS[layer], TARGET[layer]

    # the uninterrupted run, in a home of its own
    monkeypatch.setenv("ASGARD_HOME", str(tmp_path / "reference"))
    build(steps)
    expected = stable(target)

    monkeypatch.setenv("ASGARD_HOME", str(home))
    if len(steps) > 1:
        build(steps[:-1])
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    assert killed_run(steps[-1:], target, hooks) == -signal.SIGKILL
    lh = lakehouse()
    assert not lh.exists(target) or lh.snapshot_id(target) is None  # nothing committed
    debris = lh.orphan_files(target)
    assert any(f.endswith(".parquet") for f in debris), debris

    build(steps[-1:])
    pd.testing.assert_frame_equal(stable(target), expected)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert lh.remove_orphan_files(target, hour_ago) == []  # too new: could be in flight
    assert sorted(lh.remove_orphan_files(target, None)) == sorted(debris)
    assert lh.orphan_files(target) == []
    pd.testing.assert_frame_equal(stable(target), expected)  # maintenance kept every file


def test_unreachable_source_is_retried_then_fails_clearly_with_no_table(home, monkeypatch, capsys):
    from asgard_assets.summary import report_run_end

    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://asgard:s3cret@127.0.0.1:1/x")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize("bronze/materials", assets=ASSETS, raise_on_error=False, instance=instance)
    message = failure(result)
    assert "cannot reach source database postgresql+psycopg2://asgard:***@127.0.0.1:1/x" in message
    assert retries(result) == 2  # a connection blip is worth retrying; then it fails
    assert not lakehouse().exists("bronze.materials")
    # `asgard demo`'s end of a failed run: the step and why, from the run's own events (here
    # none of its lines were seen in Dagster's stdout)
    assert report_run_end(instance, result.run_id, set(), succeeded=False)
    out = capsys.readouterr().out
    assert "  FAIL  bronze/materials\n" in out
    assert (
        "\nWhy:\n  bronze/materials: cannot reach source database "
        "postgresql+psycopg2://asgard:***@127.0.0.1:1/x: connection to server"
    ) in out


@pytest.mark.parametrize(
    "url, says",
    [
        ("not a url", "not a database URL (expected postgresql+psycopg2://"),
        ("asgard:s3cret@127.0.0.1/x", "source database asgard:***@127.0.0.1/x: not a database"),
        ("postgresql://asgard:s3cret@127.0.0.1:abc/x", "not a database URL"),
        ("postgres://asgard:s3cret@127.0.0.1/x", "SQLAlchemy has no dialect 'postgres'"),
        ("sqlite:///{tmp}/nope.sqlite", "the file {tmp}/nope.sqlite does not exist"),
    ],
)
def test_a_source_url_that_cannot_work_fails_at_once_naming_why(
    home, tmp_path, monkeypatch, url, says
):
    """Bad input, not a blip: no retry, one line, no password, no file made, no table."""
    monkeypatch.setenv("ASGARD_SOURCE_URL", url.format(tmp=tmp_path))
    result = materialize("bronze/materials", assets=ASSETS, raise_on_error=False)
    message = failure(result)
    assert says.format(tmp=tmp_path) in message and "s3cret" not in message
    assert "Failure: source database " in message
    assert retries(result) == 0
    assert not (tmp_path / "nope.sqlite").exists()  # SQLite would have created it empty
    assert not lakehouse().exists("bronze.materials")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs as the warehouse: a disk that can really fill up (needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)])
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs is required in CI (run as root)")
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_disk_full_fails_clearly_keeps_the_snapshot_and_frees_its_files(
    home, tmp_path, small_disk, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    monkeypatch.setenv("ASGARD_SOURCE_URL", url)
    monkeypatch.setenv("ASGARD_WAREHOUSE", small_disk.as_uri())
    rows = [material(i, material_name="x" * 200 + str(i)) for i in range(1, 2000)]
    create_source_table(url, "materials", rows)
    build(["bronze/materials"])
    before = lakehouse().snapshot_id("bronze.materials")
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    with open(filler, "wb") as f:  # leave less than one data file of room
        f.write(b"\0" * (free - 8 * 1024))
    refresh = {"ops": {"bronze__materials": {"config": {"full_refresh": True}}}}
    result = materialize("bronze/materials", run_config=refresh, raise_on_error=False)
    message = failure(result)
    assert "no space left on device writing bronze.materials" in message
    assert retries(result) == 0  # an operator must free space first
    lh = lakehouse()
    assert lh.snapshot_id("bronze.materials") == before
    assert lh.table("bronze.materials").scan().count() == 1999
    assert not [f for f in lh.orphan_files("bronze.materials") if f.endswith(".parquet")]
    filler.unlink()  # the failed write did not keep the disk full: the next run loads
    result = materialize("bronze/materials", run_config=refresh)
    assert result.success
    assert lh.snapshot_id("bronze.materials") != before

    # a first load that hits a full disk leaves no empty, snapshot-less table behind
    with open(filler, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(small_disk).free - 8 * 1024))
    lh.catalog().drop_table("bronze.materials")
    result = materialize("bronze/materials", raise_on_error=False)
    assert "no space left on device writing bronze.materials" in failure(result)
    assert not lh.exists("bronze.materials")


SLEEPY_JOB = """
import time
import dagster as dg

@dg.op
def wait():
    time.sleep(600)

@dg.job
def sleepy():
    wait()
"""


def test_a_killed_run_is_marked_failed_by_run_monitoring(tmp_path):
    """A real instance with the repository's dagster.yaml: a run whose process was killed
    -9 stays STARTED until run monitoring looks, then it is FAILURE; a live run is left
    alone."""
    from dagster._core.instance import DagsterInstance
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    from asgard_assets.orchestration.run_launcher import LocalRunLauncher

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    (tmp_path / "sleepy.py").write_text(textwrap.dedent(SLEEPY_JOB))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    # the instance's SQLite storage is made before the run's process opens it: two processes
    # creating it at once race on its tables (Dagster's "alembic_version already exists")
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/dagster"), "job", "execute", "-f", "sleepy.py", "-j", "sleepy"],
            cwd=tmp_path,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        assert instance.run_monitoring_enabled
        record = None
        for _ in range(600):  # wait for the run to start (a bound, not a timing assertion)
            records = instance.get_run_records()
            if records and records[0].dagster_run.status == dg.DagsterRunStatus.STARTED:
                record = records[0]
                break
            assert proc.poll() is None, "the run's process ended early"
            time.sleep(0.5)
        assert record is not None
        log = logging.getLogger("test")
        run_id = record.dagster_run.run_id
        monitor_started_run(instance, None, record, log)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        monitor_started_run(instance, None, instance.get_run_record_by_id(run_id), log)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in instance.all_logs(run_id)]
        assert any("no longer exists" in (m or "") for m in messages)


def test_steps_talking_to_external_systems_retry():
    from asgard_assets.definitions import defs
    from asgard_assets.orchestration.retries import EXTERNAL_SYSTEM_RETRY

    external = [
        "bronze/materials",
        "bronze/work_orders",
        "models/operator_efficiency_predictor",
        "deployments/operator_efficiency_predictor",
    ]
    for key in external:
        op = defs.resolve_assets_def(dg.AssetKey.from_user_string(key)).op
        assert op.retry_policy == EXTERNAL_SYSTEM_RETRY, key
    assert defs.resolve_assets_def(dg.AssetKey(["silver", "materials"])).op.retry_policy is None

"""The Dagster instance of dagster.yaml: Dagster's SQLite files, engines kept."""

import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import psutil
import yaml
from conftest import ROOT
from sqlalchemy.pool import NullPool

from asgard_assets.orchestration import dagster_instance
from asgard_assets.orchestration.dagster_instance import AsgardInstance

DAYS = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-11")


@dg.asset(partitions_def=DAYS, check_specs=[dg.AssetCheckSpec("positive", asset="daily")])
def daily(context: dg.AssetExecutionContext):
    yield dg.MaterializeResult(metadata={"days": len(context.partition_keys)})
    yield dg.AssetCheckResult(passed=True)


@dg.asset
def total() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


def instance_at(home, yaml_text: str | None = None) -> dg.DagsterInstance:
    """The instance of ``home`` opened by path (no DAGSTER_HOME needed)."""
    home.mkdir(exist_ok=True)
    if yaml_text is None:
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(yaml_text)
    return dg.DagsterInstance.from_config(str(home))


def run_range(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(
        assets=[daily, total],
        jobs=[dg.define_asset_job("all", partitions_def=DAYS)],
    ).resolve_job_def("all")
    return job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2025-01-01",
            "dagster/asset_partition_range_end": "2025-01-10",
        },
    )


def test_runs_are_stored_in_dagsters_own_files(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    """A range run through the project's storage lands in Dagster's default SQLite layout:
    an instance with Dagster's default storage on the same home reads its run, its ten
    materializations and its check evaluation."""
    home = tmp_path / "dagster"
    with instance_at(home) as instance:
        assert isinstance(instance, AsgardInstance)
        assert type(instance._event_storage).__name__ == "KeptEngineEventLogStorage"
        assert type(instance._run_storage).__name__ == "KeptEngineRunStorage"
        result = run_range(instance)
        assert result.success
        run_id = result.run_id
    assert (home / "history" / "runs" / f"{run_id}.db").exists()
    assert (home / "history" / "runs" / "index.db").exists()
    assert (home / "history" / "runs.db").exists()

    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["instance_class"]["class"] == AsgardInstance.__name__
    del config["instance_class"]
    with instance_at(home, yaml.safe_dump(config)) as plain:
        assert type(plain._event_storage).__name__ == "SqliteEventLogStorage"
        assert plain.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        records = plain.fetch_materializations(dg.AssetKey("daily"), limit=100).records
        assert sorted(r.partition_key for r in records) == DAYS.get_partition_keys()[:10]
        assert plain.fetch_materializations(dg.AssetKey("total"), limit=10).records[0].run_id == (
            run_id
        )
        check = plain.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("daily"), "positive")]
        )
        assert check[dg.AssetCheckKey(dg.AssetKey("daily"), "positive")].run_id == run_id


def test_one_engine_per_database_file_and_at_most_a_few(tmp_path, monkeypatch):
    """Every event of a run goes through one engine per file (the run's, the index); a
    process that touches many runs keeps only the latest few engines."""
    created = []
    real = dagster_instance.create_engine

    def counting(url, **kwargs):
        created.append(url)
        return real(url, **kwargs)

    monkeypatch.setattr(dagster_instance, "create_engine", counting)
    monkeypatch.setattr(dagster_instance, "ENGINES_KEPT", 3)
    with instance_at(tmp_path / "dagster") as instance:
        first = run_range(instance)
        assert first.success
        events = instance.all_logs(first.run_id)
        assert len(events) > 20  # ten materializations, steps, the check, the run
        event_files = [u for u in created if "/history/runs/" in u]
        assert sorted(set(event_files)) == sorted(event_files)  # no file got two engines
        assert any(u.endswith(f"{first.run_id}.db") for u in event_files)
        for _ in range(4):
            assert run_range(instance).success
        kept = instance._event_storage._engines._by_url
        assert len(kept) == 3
        index = [e for u, e in kept.items() if u.endswith("index.db")]  # every run's: kept
        assert len(index) == 1
        # the index's connection stays open between writes; a run's file is closed after
        # each (the webserver watches it)
        assert index[0].pool.checkedin() >= 1
        runs = [e for u, e in kept.items() if not u.endswith("index.db")]
        assert runs and all(isinstance(e.pool, NullPool) for e in runs)


def test_wipe_starts_from_empty_files(tmp_path):
    """Wiping the instance (the engines point at deleted files) leaves it usable."""
    with instance_at(tmp_path / "dagster") as instance:
        assert run_range(instance).success
        instance.wipe()
        assert instance.get_runs() == []
        result = run_range(instance)
        assert result.success
        assert len(instance.fetch_materializations(dg.AssetKey("daily"), limit=100).records) == 10


def _stored(instance: dg.DagsterInstance, run_id: str) -> dict:
    """What the index holds of a run: its events by type, its checks' rows by status, the
    partitions materialized."""
    storage = instance.event_log_storage
    with storage.index_connection() as conn:
        events = conn.exec_driver_sql(
            "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = ? GROUP BY 1",
            (run_id,),
        ).fetchall()
        checks = conn.exec_driver_sql(
            "SELECT execution_status, count(*) FROM asset_check_executions WHERE run_id = ? "
            "GROUP BY 1",
            (run_id,),
        ).fetchall()
    days = instance.fetch_materializations(dg.AssetKey("daily"), limit=100).records
    logged = [e.dagster_event_type for e in instance.all_logs(run_id) if e.is_dagster_event]
    return {
        "events": dict(events),
        "checks": dict(checks),
        "days": sorted(r.partition_key for r in days if r.run_id == run_id),
        "run log": sorted(str(e) for e in logged),  # the run's own file
    }


def test_a_batch_of_events_is_one_transaction_and_stores_what_one_by_one_would(
    tmp_path, monkeypatch
):
    """With DAGSTER_EVENT_BATCH_SIZE (set by the package), a range run's ten materializations
    reach the storage as one batch, written in one transaction per file; the index ends up
    as with Dagster's one-by-one storing. A failure inside a batch rolls all of it back, and
    Dagster's fallback stores the events once each (no duplicates)."""
    batches = []
    real_batch = dagster_instance.KeptEngineEventLogStorage.store_event_batch

    def recording(self, events):
        batches.append([e.dagster_event_type for e in events])
        return real_batch(self, events)

    monkeypatch.setattr(dagster_instance.KeptEngineEventLogStorage, "store_event_batch", recording)
    with instance_at(tmp_path / "batched") as instance:
        batched = run_range(instance)
        assert batched.success
        stored_batched = _stored(instance, batched.run_id)
    assert [dg.DagsterEventType.ASSET_MATERIALIZATION] * 10 in batches

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    with instance_at(tmp_path / "one_by_one") as instance:
        single = run_range(instance)
        assert single.success
        stored_single = _stored(instance, single.run_id)
    assert stored_batched == stored_single
    assert stored_batched["days"] == DAYS.get_partition_keys()[:10]
    assert stored_batched["checks"] == {"SUCCEEDED": 1}
    assert stored_batched["events"]["ASSET_MATERIALIZATION"] == 11

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    real_store = dagster_instance.KeptEngineEventLogStorage._store_asset_event
    failed = []

    def failing_once(self, conn, event, event_id):
        if event.dagster_event.partition == "2025-01-05" and not failed:
            failed.append(event_id)
            raise RuntimeError("disk hiccup")
        return real_store(self, conn, event, event_id)

    monkeypatch.setattr(
        dagster_instance.KeptEngineEventLogStorage, "_store_asset_event", failing_once
    )
    with instance_at(tmp_path / "failing") as instance:
        result = run_range(instance)
        assert result.success
        assert failed
        assert _stored(instance, result.run_id) == stored_single


def _planned_check(run_id: str, days: list[str]):
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationPlanned,
    )

    planned = AssetCheckEvaluationPlanned(
        asset_key=dg.AssetKey("daily"),
        check_name="positive",
        partitions_subset=DAYS.empty_subset().with_partition_keys(days).to_serializable_subset(),
    )
    event = dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
        job_name="all",
        event_specific_data=planned,
    )
    return dg.EventLogEntry(
        error_info=None,
        level="DEBUG",
        user_message="",
        run_id=run_id,
        timestamp=1767225600.0,
        dagster_event=event,
    )


WRITE_TIMES = ("create_timestamp", "update_timestamp")


def test_a_check_planned_over_days_stores_a_row_per_day_as_dagster_does(tmp_path):
    """A range run plans each partitioned check once per day (181 rows a check in the
    demo): the rows Asgard's storage writes equal Dagster's own, event included."""
    days = DAYS.get_partition_keys()[:10]
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    del config["instance_class"]
    rows = {}
    for name, text in (("asgard", None), ("dagster", yaml.safe_dump(config))):
        with instance_at(tmp_path / name, text) as instance:
            storage = instance.event_log_storage
            storage.store_event(_planned_check("r1", days))
            with storage.index_connection() as conn:
                result = conn.exec_driver_sql(
                    "SELECT * FROM asset_check_executions ORDER BY partition"
                )
                # every column Dagster writes, but the row id and when the row was written
                rows[name] = [
                    {k: v for k, v in row._mapping.items() if k not in ("id", *WRITE_TIMES)}
                    for row in result
                ]
    assert [r["partition"] for r in rows["asgard"]] == days
    assert rows["asgard"] == rows["dagster"]
    assert {"asset_key", "check_name", "run_id", "evaluation_event"} <= rows["asgard"][0].keys()


def test_a_run_file_failing_to_commit_a_batch_rolls_the_index_back_too(tmp_path, monkeypatch):
    """The batch's index transaction commits last: when the run's own file fails at commit,
    the index keeps none of the batch, and Dagster's one-by-one retry stores it once."""
    from contextlib import contextmanager

    with instance_at(tmp_path / "reference") as instance:
        expected = _stored(instance, run_range(instance).run_id)

    real = dagster_instance.KeptEngineEventLogStorage._transaction
    failed = []

    @contextmanager
    def failing_commit(self, shard):
        in_batch = getattr(self._batch, "connections", None) is not None
        with real(self, shard) as conn:
            yield conn
            if in_batch and shard != dagster_instance.INDEX_SHARD_NAME and not failed:
                failed.append(shard)
                raise OSError("disk I/O error")  # inside the transaction: it rolls back

    monkeypatch.setattr(dagster_instance.KeptEngineEventLogStorage, "_transaction", failing_commit)
    with instance_at(tmp_path / "failing") as instance:
        result = run_range(instance)
        assert result.success and failed
        assert _stored(instance, result.run_id) == expected


def test_processes_opening_a_new_instance_at_once_all_succeed(tmp_path):
    """`asgard ui` and a `dagster asset materialize` started together on a new home: each
    process creates the tables it finds missing; without the lock some failed (table
    exists) and some left two alembic heads that every later process refused."""
    code = "import dagster as dg\nwith dg.DagsterInstance.get() as i: print(len(i.get_runs()))"
    for attempt in range(3):
        home = tmp_path / f"home{attempt}"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        opening = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        for process in opening:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-2000:]
            assert out.strip() == "0"
        with instance_at(home) as instance:  # and the home opens afterwards
            assert instance.get_runs() == []


def test_a_process_waiting_long_for_the_storage_lock_says_which_file(tmp_path):
    """A process holding the lock (here this test; a stopped `dagster` in life): another
    opening the instance waits, says so after a while naming the lock file, and goes on once
    it is released."""
    import fcntl

    home = tmp_path / "home"
    with instance_at(home):
        pass  # the tables exist: the waiting is the lock's alone
    with open(home / ".asgard-storage.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code = "import dagster as dg\nwith dg.DagsterInstance.get() as i: print(len(i.get_runs()))"
        waiting = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # once it has the lock file open it is waiting: held past its patience from there
        path = str(home / ".asgard-storage.lock")
        deadline = time.monotonic() + 120  # a bound, not a timing assertion
        while path not in {f.path for f in psutil.Process(waiting.pid).open_files()}:
            assert waiting.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(dagster_instance.LOCK_PATIENCE_S + 1.5)
        assert waiting.poll() is None  # still waiting
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err[-2000:]
    assert out.strip() == "0"
    assert f"waiting for {home / '.asgard-storage.lock'}: another process has been opening" in err


def _schema(path) -> tuple[list, list, str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        tables = sorted(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        stamp = db.execute("SELECT version_num FROM alembic_version").fetchall()
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    return tables, stamp, mode


def test_a_new_run_file_is_the_one_dagster_would_make(tmp_path):
    """A run's file is copied from an empty one Dagster's own init made: the same tables,
    indexes, alembic stamp and WAL mode as Dagster's SqliteEventLogStorage gives a new
    run's file, and the run's events are stored in it."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    ours = dagster_instance.KeptEngineEventLogStorage(str(tmp_path / "ours"))
    theirs = SqliteEventLogStorage(str(tmp_path / "theirs"))
    for storage in (ours, theirs):
        with storage.run_connection("a-run") as conn:
            conn.exec_driver_sql("SELECT 1")
    copied, made = (_schema(s.path_for_shard("a-run")) for s in (ours, theirs))
    assert copied == made
    assert copied[1] and copied[2] == "wal"
    assert not [p.name for p in (tmp_path / "ours").iterdir() if p.name.startswith(".")]

    with instance_at(tmp_path / "home") as instance:
        result = run_range(instance)
        events = instance.all_logs(result.run_id)
    materialized = [
        e.dagster_event.asset_key.to_user_string()
        for e in events
        if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert sorted(materialized) == ["daily"] * 10 + ["total"]


def log_entry(message: str):
    from dagster._core.events.log import EventLogEntry

    return EventLogEntry(
        error_info=None,
        level="INFO",
        user_message=message,
        run_id="a-run",
        timestamp=time.time(),
        dagster_event=None,
    )


def test_a_run_file_another_process_made_is_kept(tmp_path):
    """A second storage (another process's) writing to a run's file that exists keeps the
    events in it: the copy never replaces a file."""
    first = dagster_instance.KeptEngineEventLogStorage(str(tmp_path))
    first.store_event(log_entry("first"))
    second = dagster_instance.KeptEngineEventLogStorage(str(tmp_path))
    second.store_event(log_entry("second"))
    assert [e.user_message for e in second.get_logs_for_run("a-run")] == ["first", "second"]


def test_a_run_file_is_checked_by_its_stamp_and_initialized_when_older(tmp_path, monkeypatch):
    """The run's process finds its file made (the process that created the run stored its
    planned events there): it carries the stamp of Dagster's own init in this process, so
    Dagster's init (its migration scripts read) is not run again; a file with another stamp
    (an older Dagster's) gets Dagster's init, which checks it as it always did."""
    import sqlite3

    dagster_instance.KeptEngineEventLogStorage(str(tmp_path)).store_event(log_entry("made"))
    inits: list[str] = []

    def storage():
        made = dagster_instance.KeptEngineEventLogStorage(str(tmp_path))
        real = made._initdb
        monkeypatch.setattr(
            made, "_initdb", lambda e, **kw: (inits.append(e.url.database), real(e, **kw))
        )
        return made

    storage().store_event(log_entry("current stamp"))
    assert not [db for db in inits if db.endswith("a-run.db")]
    with sqlite3.connect(tmp_path / "a-run.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'older'")
    storage().store_event(log_entry("older stamp"))
    assert [db for db in inits if db.endswith("a-run.db")] == [str(tmp_path / "a-run.db")]

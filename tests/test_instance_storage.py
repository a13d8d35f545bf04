"""The Dagster instance of dagster.yaml: Dagster's SQLite files, engines kept."""

import shutil

import dagster as dg
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

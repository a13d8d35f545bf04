"""Iceberg maintenance: after 30 daily partition overwrites, snapshots and files stay
bounded, rows are unchanged, and no file on disk is unreferenced."""

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa

from asgard_assets.maintenance.assets import iceberg_tables
from asgard_assets.partitions import Window
from asgard_assets.resources import resources_for
from asgard_assets.resources.lakehouse import IcebergLakehouse

TABLE = "silver.daily_events"
DAY0 = datetime(2025, 3, 1)
LAST = DAY0 + timedelta(days=31)  # the span of the daily partitions


def _day(i: int) -> pa.RecordBatchReader:
    start = DAY0 + timedelta(days=i)
    rows = pa.table(
        {
            "event_id": [f"E-{i:02d}-{j:03d}" for j in range(50)],
            "event_time": [start + timedelta(minutes=j) for j in range(50)],
            "value": [float(i * 100 + j) for j in range(50)],
        }
    )
    return pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())


def _files_on_disk(lakehouse: IcebergLakehouse) -> set[str]:
    location = lakehouse.table(TABLE).metadata.location.removeprefix("file://")
    return {str(p) for p in Path(location).rglob("*") if p.is_file()}


def test_thirty_daily_runs_stay_bounded(home):
    lakehouse = IcebergLakehouse()
    for i in range(30):  # one overwrite per day, each a snapshot with its own small file
        window = Window(
            "event_time", DAY0 + timedelta(days=i), DAY0 + timedelta(days=i + 1), DAY0, LAST
        )
        lakehouse.write(TABLE, _day(i), mode="overwrite", window=window)
    # and one day written twice: its first file is now referenced only by old snapshots
    lakehouse.write(
        TABLE,
        _day(3),
        mode="overwrite",
        window=Window("event_time", DAY0 + timedelta(3), DAY0 + timedelta(4), DAY0, LAST),
    )
    table = lakehouse.table(TABLE)
    assert len(table.metadata.snapshots) >= 31
    assert len(table.inspect.files()) == 30
    rows_before = table.scan().to_arrow().sort_by("event_id")
    # debris of an interrupted write: a data file no snapshot knows
    stray = Path(table.metadata.location.removeprefix("file://")) / "data" / "stray.parquet"
    stray.write_bytes(b"PAR1 not really")

    config = {
        "retention_days": 0,
        "retain_last": 3,
        "orphan_age_hours": 0,
        "compact_min_files": 8,
    }
    result = dg.materialize(
        [iceberg_tables],
        resources=resources_for("local"),
        run_config={"ops": {"maintenance__iceberg_tables": {"config": config}}},
    )
    assert result.success
    report = result.asset_materializations_for_node("maintenance__iceberg_tables")[0]
    tables = report.metadata["tables"].value
    assert tables[TABLE]["compacted_files"] == 30

    table = lakehouse.table(TABLE)
    assert len(table.metadata.snapshots) <= 3
    assert len(table.inspect.files()) == 1  # 1,500 rows fit one file
    assert table.scan().to_arrow().sort_by("event_id").to_pylist() == rows_before.to_pylist()
    assert not stray.exists()
    # every file left on disk is one the table still references
    assert _files_on_disk(lakehouse) <= lakehouse.referenced_files(TABLE)
    data_files = [f for f in _files_on_disk(lakehouse) if f.endswith(".parquet")]
    assert len(data_files) <= 3 * 30  # at most the retained snapshots' files


def test_young_orphans_and_recent_snapshots_are_kept(home):
    """Default settings: nothing younger than the retention or the orphan age goes."""
    lakehouse = IcebergLakehouse()
    for i in range(3):
        window = Window(
            "event_time", DAY0 + timedelta(days=i), DAY0 + timedelta(days=i + 1), DAY0, LAST
        )
        lakehouse.write(TABLE, _day(i), mode="overwrite", window=window)
    stray = (
        Path(lakehouse.table(TABLE).metadata.location.removeprefix("file://"))
        / "data"
        / "x.parquet"
    )
    stray.write_bytes(b"in flight")
    snapshots = lakehouse.table(TABLE).metadata.snapshots
    result = dg.materialize([iceberg_tables], resources=resources_for("local"))
    assert result.success
    assert lakehouse.table(TABLE).metadata.snapshots == snapshots
    assert stray.exists()


def test_compaction_keeps_what_the_last_write_recorded(home):
    """Checks read the last load's figures (quarantined rows, load id) from the current
    snapshot; a compaction rewrites the same rows, so it carries them over."""
    lakehouse = IcebergLakehouse()
    for i in range(8):
        window = Window(
            "event_time", DAY0 + timedelta(days=i), DAY0 + timedelta(days=i + 1), DAY0, LAST
        )
        loaded = {"asgard.load-id": f"load-{i}", "asgard.quarantined": str(i)}
        lakehouse.write(TABLE, _day(i), mode="overwrite", window=window, properties=loaded)
    config = {"retention_days": 0, "retain_last": 3, "orphan_age_hours": 0, "compact_min_files": 8}
    result = dg.materialize(
        [iceberg_tables],
        resources=resources_for("local"),
        run_config={"ops": {"maintenance__iceberg_tables": {"config": config}}},
    )
    assert result.success
    table = lakehouse.table(TABLE)
    assert len(table.inspect.files()) == 1  # compacted
    summary = table.current_snapshot().summary
    assert summary["asgard.operation"] == "compaction"
    assert summary["asgard.load-id"] == "load-7"
    assert summary["asgard.quarantined"] == "7"

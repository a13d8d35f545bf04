"""maintenance/iceberg_tables: snapshot expiry, orphan-file removal and compaction of every
Asgard table, after the tables are written and on a daily schedule."""

import dagster as dg

from ..metadata import code_version
from ..resources.data_files import TABLE_PROPERTIES
from ..resources.lakehouse import NAMESPACES, Lakehouse
from .iceberg import compact, default_cutoff, expire_snapshots

TARGET_FILE_BYTES = int(TABLE_PROPERTIES["write.target-file-size-bytes"])


class MaintenanceConfig(dg.Config):
    retention_days: float = 7.0
    """Snapshots older than this are expired (time travel reaches back this far)."""
    retain_last: int = 5
    """The newest snapshots kept whatever their age."""
    orphan_age_hours: float = 24.0
    """Unreferenced files younger than this are left alone: they may be a write in flight."""
    compact_min_files: int = 16
    """Compact a table once it has this many small data files."""


@dg.asset(
    key=["maintenance", "iceberg_tables"],
    # no edges to the tables it keeps: nine lines across the lineage graph would say nothing
    # a reader needs, and it must not wait for them (its schedule runs it)
    group_name="maintenance",
    kinds={"iceberg"},
    code_version=code_version("maintenance/iceberg.py", "maintenance/assets.py"),
)
def iceberg_tables(
    context: dg.AssetExecutionContext, config: MaintenanceConfig, lakehouse: Lakehouse
) -> dg.MaterializeResult:
    """Keeps every Iceberg table's history and file count bounded: compacts the small files daily
    partition overwrites leave, expires snapshots past the retention (keeping the newest
    few), then deletes files no live snapshot references (expired snapshots' files and
    debris of interrupted writes)."""
    expire_before = default_cutoff(config.retention_days * 24)
    orphans_before = default_cutoff(config.orphan_age_hours)
    report = {}
    catalog = lakehouse.catalog()
    for namespace in NAMESPACES:
        for ident in catalog.list_tables(namespace):
            identifier = ".".join(ident)
            compacted = compact(lakehouse, identifier, config.compact_min_files, TARGET_FILE_BYTES)
            table = lakehouse.table(identifier)
            expired = expire_snapshots(table, expire_before, config.retain_last)
            removed = len(lakehouse.remove_orphan_files(identifier, orphans_before))
            table = lakehouse.table(identifier)
            report[identifier] = {
                "compacted_files": compacted,
                "snapshots_expired": expired,
                "orphans_removed": removed,
                "snapshots": len(table.metadata.snapshots),
                "data_files": len(table.inspect.files()) if table.current_snapshot() else 0,
            }
            context.log.info(f"{identifier}: {report[identifier]}")
    return dg.MaterializeResult(
        metadata={
            "tables": dg.MetadataValue.json(report),
            "snapshots_expired": sum(r["snapshots_expired"] for r in report.values()),
            "orphans_removed": sum(r["orphans_removed"] for r in report.values()),
            "compacted_files": sum(r["compacted_files"] for r in report.values()),
        }
    )


maintenance_job = dg.define_asset_job(
    "maintenance",
    selection=dg.AssetSelection.assets(iceberg_tables),
    description="Iceberg maintenance of every table: compaction, snapshot expiry, orphans.",
)
maintenance_schedule = dg.ScheduleDefinition(
    name="daily_maintenance",
    job=maintenance_job,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    description="Iceberg maintenance at 04:00 UTC, after the daily ingest and its automation.",
)

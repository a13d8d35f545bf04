"""Table checks on bronze and silver: rows present, keys not null, keys unique.

Bronze is the raw copy and keeps the source's defects, so its key checks warn; silver
promises clean keys, so its checks fail the run.
"""

import dagster as dg

from .resources.lakehouse import Lakehouse
from .settings import SOURCE_TABLES

KEYS = {
    "work_orders": "work_order_id",
    "machine_logs": "log_id",
    "quality_checks": "check_id",
    "materials": "material_id",
}


def key_stats(lakehouse: Lakehouse, identifier: str, key: str) -> dict[str, int]:
    rows, nulls, distinct = lakehouse.query(
        f"SELECT count(*), count(*) FILTER (WHERE {key} IS NULL OR trim({key}) = ''), "
        f"count(DISTINCT {key}) FILTER (WHERE {key} IS NOT NULL AND trim({key}) <> '') "
        f"FROM {identifier}",
        identifier,
    ).fetchone()
    return {"rows": rows, "null_keys": nulls, "duplicate_keys": rows - nulls - distinct}


def table_checks(layer: str, table: str, severity: dg.AssetCheckSeverity) -> list:
    asset = dg.AssetKey([layer, table])
    identifier = f"{layer}.{table}"
    key = KEYS[table]

    @dg.asset_check(asset=asset, name="row_count_positive", blocking=True)
    def row_count_positive(lakehouse: Lakehouse) -> dg.AssetCheckResult:
        stats = key_stats(lakehouse, identifier, key)
        return dg.AssetCheckResult(passed=stats["rows"] > 0, metadata={"rows": stats["rows"]})

    @dg.asset_check(
        asset=asset, name=f"{key}_not_null", blocking=severity == dg.AssetCheckSeverity.ERROR
    )
    def key_not_null(lakehouse: Lakehouse) -> dg.AssetCheckResult:
        stats = key_stats(lakehouse, identifier, key)
        return dg.AssetCheckResult(
            passed=stats["null_keys"] == 0,
            severity=severity,
            metadata={"null_keys": stats["null_keys"]},
        )

    @dg.asset_check(
        asset=asset, name=f"{key}_unique", blocking=severity == dg.AssetCheckSeverity.ERROR
    )
    def key_unique(lakehouse: Lakehouse) -> dg.AssetCheckResult:
        stats = key_stats(lakehouse, identifier, key)
        return dg.AssetCheckResult(
            passed=stats["duplicate_keys"] == 0,
            severity=severity,
            metadata={"duplicate_keys": stats["duplicate_keys"]},
        )

    return [row_count_positive, key_not_null, key_unique]


bronze_checks = [
    c for t in SOURCE_TABLES for c in table_checks("bronze", t, dg.AssetCheckSeverity.WARN)
]
silver_checks = [
    c for t in SOURCE_TABLES for c in table_checks("silver", t, dg.AssetCheckSeverity.ERROR)
]

"""Table checks on bronze and silver: rows present, keys not null, keys unique; and the
daily row volume of the partitioned bronze tables.

Bronze is the raw copy and keeps the source's defects, so its key checks warn; silver
promises clean keys, so its checks fail the run.
"""

import statistics
from datetime import date, timedelta

import dagster as dg

from .contracts.sources import SOURCE_TABLES, SOURCES
from .partitions import PARTITION_COLUMNS, daily, run_days
from .resources.lakehouse import Lakehouse

# A day warns when it has under VOLUME_RATIO of the median of the VOLUME_LOOKBACK days
# before it; days before which the median is under VOLUME_MIN_USUAL rows are not judged.
VOLUME_RATIO = 0.5
VOLUME_LOOKBACK = 28
VOLUME_MIN_USUAL = 10


def key_stats(lakehouse: Lakehouse, identifier: str, key: str) -> dict[str, int]:
    rows, nulls, distinct = lakehouse.query(
        # keys may be integers in the source: text before trim
        f"SELECT count(*), count(*) FILTER (WHERE {key} IS NULL OR trim({key}::VARCHAR) = ''), "
        f"count(DISTINCT {key}) FILTER (WHERE {key} IS NOT NULL AND trim({key}::VARCHAR) <> '') "
        f"FROM {identifier}",
        identifier,
    ).fetchone()
    return {"rows": rows, "null_keys": nulls, "duplicate_keys": rows - nulls - distinct}


def table_checks(layer: str, table: str, severity: dg.AssetCheckSeverity) -> list:
    asset = dg.AssetKey([layer, table])
    identifier = f"{layer}.{table}"
    key = SOURCES[table].key

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


def volume_anomalies(counts: dict[date, int], days: list[date]) -> dict[str, dict]:
    """The days among ``days`` with far fewer rows than the days before them."""
    found = {}
    for day in days:
        before = [counts.get(day - timedelta(days=i), 0) for i in range(1, VOLUME_LOOKBACK + 1)]
        usual = statistics.median(before)
        rows = counts.get(day, 0)
        if usual >= VOLUME_MIN_USUAL and rows < VOLUME_RATIO * usual:
            found[day.isoformat()] = {"rows": rows, "usual": usual}
    return found


def volume_check(table: str) -> dg.AssetChecksDefinition:
    identifier = f"bronze.{table}"
    column = PARTITION_COLUMNS[table]

    @dg.asset_check(
        asset=dg.AssetKey(["bronze", table]),
        name="daily_row_count_anomaly",
        description=(
            f"Warns when a day the run loaded has under {VOLUME_RATIO:.0%} of the median "
            f"daily rows of the {VOLUME_LOOKBACK} days before it."
        ),
    )
    def _volume(context: dg.AssetCheckExecutionContext, lakehouse: Lakehouse):
        keys = run_days(context.run.tags) or [daily.get_last_partition_key()]
        days = [date.fromisoformat(k) for k in keys]
        counts = dict(
            lakehouse.query(
                f"SELECT CAST({column} AS DATE), count(*) FROM {identifier} GROUP BY 1",
                identifier,
            ).fetchall()
        )
        anomalies = volume_anomalies(counts, days)
        return dg.AssetCheckResult(
            passed=not anomalies,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{len(anomalies)} of {len(days)} days far below their usual volume"
                if anomalies
                else f"{len(days)} days at their usual volume"
            ),
            metadata={"days_checked": len(days), "anomalies": anomalies},
        )

    return _volume


bronze_checks = [
    c for t in SOURCE_TABLES for c in table_checks("bronze", t, dg.AssetCheckSeverity.WARN)
] + [volume_check(t) for t in PARTITION_COLUMNS]
silver_checks = [
    c for t in SOURCE_TABLES for c in table_checks("silver", t, dg.AssetCheckSeverity.ERROR)
]

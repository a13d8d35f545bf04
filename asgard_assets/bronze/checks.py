"""Checks of bronze/<table>.

Bronze is the raw copy and keeps the source's defects, so its key checks warn; an empty
table blocks publishing. The partitioned tables also report the rows that fall outside every
daily partition (they are kept, see docs/partitions.md) and warn on a day far below its usual
volume. The key checks and the outside-partitions count come from one query on the staged
data inside the asset; the volume check reads the published table afterwards.
"""

import statistics
from datetime import date, timedelta

import dagster as dg

from ..contracts.sources import SOURCES
from ..key_checks import OUTSIDE, SPAN, check_result, key_results, key_specs, key_stats
from ..partitions import PARTITION_COLUMNS, Window, daily, is_partitioned, run_days
from ..resources.lakehouse import Lakehouse
from ..resources.write_audit import Audit, Staged

# A day warns when it has under VOLUME_RATIO of the median of the VOLUME_LOOKBACK days
# before it; days before which the median is under VOLUME_MIN_USUAL rows are not judged.
VOLUME_RATIO = 0.5
VOLUME_LOOKBACK = 28
VOLUME_MIN_USUAL = 10


def bronze_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", table])


def bronze_check_specs(table: str) -> list[dg.AssetCheckSpec]:
    specs = key_specs(bronze_key(table), table, keys_block=False)
    if is_partitioned(table):
        column = PARTITION_COLUMNS[table]
        specs.append(
            dg.AssetCheckSpec(
                OUTSIDE,
                asset=bronze_key(table),
                description=(
                    f"Warns with the count and a sample of keys of rows whose `{column}` is "
                    "NULL or outside the daily partitions' span (they are kept)."
                ),
            )
        )
    return specs


def bronze_audit(table: str, window: Window | None = None) -> Audit:
    def audit(staged: Staged) -> list[dg.AssetCheckResult]:
        stats = key_stats(staged, SOURCES[table].key, window)
        results = key_results(bronze_key(table), table, stats, dg.AssetCheckSeverity.WARN)
        if window is not None:
            where = (
                f"{window.column} NULL, before {window.first:%Y-%m-%d} "
                f"or from {window.last:%Y-%m-%d} on"
            )
            results.append(
                check_result(
                    bronze_key(table),
                    OUTSIDE,
                    stats.outside,
                    f"rows outside the daily partitions ({where})",
                    dg.AssetCheckSeverity.WARN,
                    stats.outside_sample,
                    {SPAN: window.span},
                )
            )
        return results

    return audit


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
        asset=bronze_key(table),
        name="daily_row_count_anomaly",
        description=(
            f"Warns when a day the run loaded has under {VOLUME_RATIO:.0%} of the median "
            f"daily rows of the {VOLUME_LOOKBACK} days before it."
        ),
    )
    def _volume(context: dg.AssetCheckExecutionContext, lakehouse: Lakehouse):
        keys = run_days(context.run.tags) or [daily().get_last_partition_key()]
        days = [date.fromisoformat(k) for k in keys]
        counts = dict(
            lakehouse.query(
                f"SELECT CAST({column} AS DATE), count(*) FROM {identifier} "
                f"WHERE {column} IS NOT NULL GROUP BY 1",
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


bronze_checks = [volume_check(t) for t in PARTITION_COLUMNS]

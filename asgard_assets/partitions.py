"""Daily partitions: work orders by ``start_time``, machine logs by ``event_time``.

A partition is a UTC day of the source's own timestamp (source timestamps are naive and
read as UTC). Bronze and silver write a partition by replacing exactly the rows of its
window in one Iceberg commit, so re-running a day never duplicates rows. A range of days
runs as one run and one commit (``BackfillPolicy.single_run``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan

from .contracts.sources import PARTITIONED_TABLES, SOURCES
from .settings import partition_start

PARTITION_COLUMNS = {t: SOURCES[t].partition_column for t in PARTITIONED_TABLES}

daily = dg.DailyPartitionsDefinition(start_date=partition_start(), timezone="UTC")
single_run = dg.BackfillPolicy.single_run()


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


@dataclass(frozen=True)
class Window:
    """Rows whose ``column`` lies in [start, end), in the source, in DuckDB and in Iceberg."""

    column: str
    start: datetime
    end: datetime

    def sql(self) -> str:
        fmt = "%Y-%m-%d %H:%M:%S"
        return f"{self.column} >= '{self.start:{fmt}}' AND {self.column} < '{self.end:{fmt}}'"

    def iceberg_filter(self) -> BooleanExpression:
        return And(
            GreaterThanOrEqual(self.column, self.start.isoformat()),
            LessThan(self.column, self.end.isoformat()),
        )

    def __str__(self) -> str:
        return f"{self.column} in [{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d})"


def is_partitioned(table: str) -> bool:
    return table in PARTITION_COLUMNS


def partitions_of(table: str) -> dict:
    """The asset arguments that make ``table``'s bronze and silver assets daily-partitioned."""
    if not is_partitioned(table):
        return {}
    return {"partitions_def": daily, "backfill_policy": single_run}


def window_of(context: dg.AssetExecutionContext, table: str) -> Window | None:
    """The run's days (one partition or a range) as a row window; None when unpartitioned."""
    if not is_partitioned(table):
        return None
    tw = context.partition_time_window
    return Window(PARTITION_COLUMNS[table], _naive_utc(tw.start), _naive_utc(tw.end))


def range_tags(days: list[str]) -> dict[str, str]:
    """Run tags for one run over the days from the first to the last of ``days`` (a
    single-run backfill); the CLI's ``--partition-range first...last`` sets the same tags."""
    return {ASSET_PARTITION_RANGE_START_TAG: min(days), ASSET_PARTITION_RANGE_END_TAG: max(days)}


def run_days(tags: dict[str, str]) -> list[str]:
    """The days a run covered, from its tags (one partition or a range); [] if neither."""
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return daily.get_partition_keys_in_range(
            dg.PartitionKeyRange(
                tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
            )
        )
    return []


def source_days(ingestion, updated_after: datetime | None = None) -> list[str]:
    """The partitions holding source rows of any partitioned table (updated after
    ``updated_after``, when given)."""
    found = {d for t in PARTITION_COLUMNS for d in ingestion.days(t, updated_after)}
    return days_in(list(found))


def days_in(keys: list[str]) -> list[str]:
    """The keys that are partitions now (a day still in progress is not one yet)."""
    valid = set(daily.get_partition_keys())
    return sorted(k for k in keys if k in valid)

"""Daily partitions: work orders by ``start_time``, machine logs by ``event_time``.

A partition is a UTC day of the source's own timestamp (source timestamps are naive and
read as UTC). A run's window is its days plus the *remainder*: rows outside every daily
partition (NULL, before the first day, from the end of the last one on), which every run
replaces too, so no row is lost to partitioning. Bronze and silver replace the window's rows,
and the rows of the same keys elsewhere, in one Iceberg commit (see docs/partitions.md), so a
key is there once whatever days a run covers. A range of days runs as one run and one commit
(``BackfillPolicy.single_run``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster._record import replace
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
    Or,
)

from .contracts.sources import PARTITIONED_TABLES, SOURCES
from .days import partition_bounds, reversed_range
from .settings import source_url

PARTITION_COLUMNS = {t: SOURCES[t].partition_column for t in PARTITIONED_TABLES}


def daily_partitions() -> dg.DailyPartitionsDefinition:
    start, end = partition_bounds()
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end, timezone="UTC")


@functools.cache
def daily() -> dg.DailyPartitionsDefinition:
    """The daily partitions, built once per process on first use: their first day may be a
    query to the source, which a process needing only ``Window`` (the demo's summary, a
    script using the lakehouse) must not make."""
    return daily_partitions()


def stale_partitions() -> str | None:
    """Why this process's daily partitions no longer match the demo database's days (a day
    was added since the definitions loaded), or None. A real source's partitions end with
    time, not with its rows: never stale this way."""
    if source_url() is not None:
        return None
    loaded, (_, end) = daily(), partition_bounds()
    if loaded.end is None or f"{loaded.end:%Y-%m-%d}" == end:
        return None
    return (
        f"the demo database's days now end before {end}, these definitions' daily partitions "
        f"before {loaded.end:%Y-%m-%d}: reload the definitions (the UI's Deployment page, "
        "Reload) so the new day is a partition"
    )


single_run = dg.BackfillPolicy.single_run()


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


FMT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Window:
    """A run's rows, in the source, in DuckDB and in Iceberg: those whose ``column`` lies in
    [start, end) (the run's days), plus the remainder outside [first, last) (the span of all
    daily partitions) or NULL."""

    column: str
    start: datetime
    end: datetime
    first: datetime
    last: datetime

    def days_sql(self) -> str:
        c = self.column
        return f"({c} >= '{self.start:{FMT}}' AND {c} < '{self.end:{FMT}}')"

    def outside_sql(self) -> str:
        """Rows outside every partition. In SQLite a timestamp is text, and text that is not
        a date sorts after the digits, so it falls here too."""
        c = self.column
        return f"({c} IS NULL OR {c} < '{self.first:{FMT}}' OR {c} >= '{self.last:{FMT}}')"

    def sql(self) -> str:
        return f"({self.days_sql()} OR {self.outside_sql()})"

    def iceberg_filter(self) -> BooleanExpression:
        c = self.column
        return Or(
            And(GreaterThanOrEqual(c, self.start.isoformat()), LessThan(c, self.end.isoformat())),
            Or(
                IsNull(c),
                Or(
                    LessThan(c, self.first.isoformat()),
                    GreaterThanOrEqual(c, self.last.isoformat()),
                ),
            ),
        )

    @property
    def span(self) -> str:
        """The span of all daily partitions, which says which rows are outside them."""
        return f"[{self.first:%Y-%m-%d}, {self.last:%Y-%m-%d})"

    def __str__(self) -> str:
        return f"{self.column} in [{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d})"


def is_partitioned(table: str) -> bool:
    return table in PARTITION_COLUMNS


def partitions_of(table: str) -> dict:
    """The asset arguments that make ``table``'s bronze and silver assets daily-partitioned."""
    return {"partitions_def": daily()} if is_partitioned(table) else {}


def single_run_backfills(defs: dg.Definitions) -> dg.Definitions:
    """Every asset backfills a range of days as one run (``BackfillPolicy.single_run``), so
    ``dagster asset materialize --select '*' --partition-range A...B`` runs the whole graph,
    the unpartitioned assets once. Set here, not per decorator: ``@asset(backfill_policy=)``
    is a beta parameter and warns, ``with_attributes`` does not."""
    assets = [
        a.with_attributes(backfill_policy=single_run) if isinstance(a, dg.AssetsDefinition) else a
        for a in defs.assets or []
    ]
    return replace(defs, assets=assets)


def window_of(context: dg.AssetExecutionContext, table: str) -> Window | None:
    """The run's days (one partition or a range) as a row window; None when unpartitioned."""
    if not is_partitioned(table):
        return None
    return window_for(table, context.partition_time_window)


def window_for(table: str, days: dg.TimeWindow) -> Window:
    """The window of ``days`` of ``table``, with the remainder outside every partition. A
    range whose first day is after its last (Dagster accepts one) is refused: its window
    holds no row, so the run would succeed having done nothing."""
    if days.start >= days.end:
        start, end = days.start.date(), (days.end - timedelta(days=1)).date()
        raise dg.Failure(
            reversed_range(str(start), str(end)),
            allow_retries=False,  # bad input: retrying cannot help
        )
    first, last = daily().get_first_partition_window(), daily().get_last_partition_window()
    return Window(
        PARTITION_COLUMNS[table],
        _naive_utc(days.start),
        _naive_utc(days.end),
        _naive_utc(first.start),
        _naive_utc(last.end),
    )


def range_tags(days: list[str]) -> dict[str, str]:
    """Run tags for one run over the days from the first to the last of ``days`` (a
    single-run backfill); the CLI's ``--partition-range first...last`` sets the same tags."""
    return {ASSET_PARTITION_RANGE_START_TAG: min(days), ASSET_PARTITION_RANGE_END_TAG: max(days)}


def run_days(tags: dict[str, str]) -> list[str]:
    """The days a run covered, from its tags (one partition or a range); [] if neither."""
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return daily().get_partition_keys_in_range(
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
    valid = set(daily().get_partition_keys())
    return sorted(k for k in keys if k in valid)

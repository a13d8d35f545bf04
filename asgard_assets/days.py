"""The days of the daily partitions, without importing Dagster: their bounds, and the range
``asgard demo`` materializes (worked out before the run is launched, where importing Dagster
would add a second to every journey). ``partitions.py`` builds Dagster's
``DailyPartitionsDefinition`` from the same bounds; a test holds the two equal."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

from .contracts.sources import PARTITIONED_TABLES, SOURCES
from .settings import demo_source_path, partition_end, partition_start, source_url

DAY = "%Y-%m-%d"
# the generated demo database's days (demo_data.py); `asgard add-day` adds more
DEMO_START = datetime(2025, 1, 1)
DEMO_DAYS = 181  # 2025-01-01 .. 2025-06-30
# the stand-in first days this process used because the source could not be read: its
# partitions are not those of a process loading them now (orchestration/warm_worker.py)
STAND_INS: list[str] = []


def last_day(conn: sqlite3.Connection) -> datetime:
    """The latest day any partitioned table of a SQLite demo database has rows on."""
    days = [
        conn.execute(f"SELECT max(date({SOURCES[t].partition_column})) FROM {t}").fetchone()[0]
        for t in PARTITIONED_TABLES
    ]
    dated = [d for d in days if d]
    if not dated:
        raise ValueError("the demo database's partitioned tables have no dated rows")
    return datetime.strptime(max(dated), DAY)


def demo_last_day() -> datetime:
    """The demo database's last day: the generated days' last until ``asgard add-day``
    adds one (read from the file once it is made; one small query per table)."""
    path, generated = demo_source_path(), DEMO_START + timedelta(days=DEMO_DAYS - 1)
    if not path.exists():
        return generated
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            return last_day(conn)
    except (sqlite3.Error, ValueError) as e:  # the definitions must load all the same
        logging.getLogger("asgard").warning(f"cannot read the demo database {path}'s days: {e}")
        return generated


def _first_source_day(url: str) -> str:
    """The earliest day of any partitioned table in the source (one MIN query per table)."""
    import sqlalchemy as sa

    from .contracts.sources import table_name
    from .source_url import source_engine

    engine = source_engine(url)
    try:
        with engine.connect() as conn:
            firsts = []
            for table in PARTITIONED_TABLES:
                where = table_name(table, conn.dialect.name)
                column = SOURCES[table].partition_column
                firsts.append(conn.execute(sa.text(f"SELECT min({column}) FROM {where}")).scalar())
    finally:
        engine.dispose()
    days = [str(f)[:10] for f in firsts if f is not None]
    if not days:
        raise ValueError("the partitioned source tables are empty")
    return min(days)


class SourceUnreadable(ValueError):
    """The source cannot be read (not reachable, not a working URL); the message says why."""


def partition_bounds(strict: bool = False) -> tuple[str, str | None]:
    """(first day, day after the last) of the daily partitions; None: up to the day that
    just ended. ``ASGARD_PARTITION_START`` / ``ASGARD_PARTITION_END`` (last day) win.

    The demo database grows only by ``asgard add-day``: its partitions are exactly its
    days, so a finished demo has no Missing day. A real source is live: partitions run from its
    first day (read once when the definitions load) to yesterday, like the daily schedule.
    A source that cannot be read raises ``SourceUnreadable`` when ``strict`` (`asgard
    demo`: nothing to run); the definitions still load, from a stand-in first day.
    """
    end = partition_end()
    end = f"{datetime.strptime(end, DAY) + timedelta(days=1):{DAY}}" if end else None
    url = source_url()
    if url is None:
        last = demo_last_day() + timedelta(days=1)
        return partition_start() or f"{DEMO_START:{DAY}}", end or f"{last:{DAY}}"
    if partition_start() and not strict:
        return partition_start(), end
    try:  # strict (`asgard demo`): the source is read even with a first day set
        first = _first_source_day(url)
        return partition_start() or first, end
    except Exception as e:  # noqa: BLE001 - the definitions must load with the source down
        from .source_url import error_line, redact

        reason = error_line(e)
        if strict:
            raise SourceUnreadable(
                f"cannot read the source database (ASGARD_SOURCE_URL={redact(url)}): {reason}"
            ) from e
        fallback = f"{DEMO_START:{DAY}}"
        STAND_INS.append(fallback)
        logging.getLogger("asgard").warning(
            f"cannot read the source ({reason}): until it can be read, daily partitions "
            f"start at {fallback} (ASGARD_PARTITION_START sets the first day)"
        )
        return fallback, end


def all_days_range(strict: bool = False) -> str:
    """``FIRST...LAST``: every daily partition, for ``--partition-range``. As in Dagster's
    daily partitions, the last is the day before the end, and never later than the day that
    just ended (UTC)."""
    first, end = partition_bounds(strict)
    today = datetime.now(UTC).replace(tzinfo=None)
    after_last = min(datetime.strptime(end, DAY), today) if end else today
    last = f"{after_last - timedelta(days=1):{DAY}}"
    if last < first:
        if end and datetime.strptime(end, DAY) <= today:  # bounded by the data, not by time
            bound = "ASGARD_PARTITION_END" if partition_end() else "the demo data's last day"
            raise ValueError(f"the first day, {first}, is after the last, {last} ({bound})")
        raise ValueError(
            f"no complete day from {first} on yet (the last one ended is {last}): "
            "set ASGARD_PARTITION_START to a day that has ended"
        )
    return f"{first}...{last}"


def reversed_range(first: str, last: str) -> str:
    """The error for a ``FIRST...LAST`` range whose first day is after its last: Dagster
    accepts one, and its window holds no row."""
    return (
        f"the partition range {first}...{last} is reversed (its first day is after its "
        f"last): did you mean {last}...{first}?"
    )


def typed_range_mistake(days: str) -> str | None:
    """``reversed_range``'s error for a typed ``--partition-range`` value that is reversed,
    None for any other (Dagster's own parsing says what a malformed one should be)."""
    first, dots, last = days.partition("...")
    try:
        if dots and datetime.strptime(first, DAY) > datetime.strptime(last, DAY):
            return reversed_range(first, last)
    except ValueError:
        pass
    return None

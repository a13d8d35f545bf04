"""What bronze already holds, read back to plan a load: the incremental cursor, the rows
already loaded at it (read again, loaded once), and the keys of a window's rows that bronze
holds on other days."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from ..contracts.sources import CURSOR_COLUMN, LOADED_AT, TS_FORMAT
from ..partitions import Window
from .duckdb_bounds import bounded_duckdb
from .lakehouse import Lakehouse
from .source_streams import SPOOL


def not_yet_loaded(
    reader: pa.RecordBatchReader, lakehouse: Lakehouse, identifier: str, cursor: datetime
) -> pa.RecordBatchReader:
    """The rows of ``reader`` (read from ``cursor`` on, inclusive) minus exact copies of
    rows bronze already holds from the cursor on: rows sharing the cursor's timestamp are
    read again but loaded once. Streams: only bronze's rows at or past the cursor are held."""
    con = bounded_duckdb()
    lakehouse.attach(con, [identifier])
    loaded = set(lakehouse.table(identifier).schema().column_names)
    shared = [n for n in reader.schema.names if n in loaded]
    cols = ", ".join(f'"{c}"' for c in shared)
    on = " AND ".join(f'i."{c}" IS NOT DISTINCT FROM b."{c}"' for c in shared)
    con.register("incoming", reader)
    out = con.sql(
        f"SELECT i.* FROM incoming i ANTI JOIN (SELECT {cols} FROM {identifier} "
        f"WHERE {CURSOR_COLUMN} >= '{cursor:{TS_FORMAT}}') b ON {on}"
    ).to_arrow_reader(64_000)

    def batches():
        try:
            yield from out
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(out.schema, batches())


def moved_keys(
    lakehouse: Lakehouse, identifier: str, key: str, window: Window, folder: str
) -> tuple[list, list]:
    """Keys whose rows moved, between the spooled source rows of a window and bronze:
    (keys of the spooled rows that bronze holds outside the window: they moved in,
    keys bronze holds in the window that the source's window no longer has: they moved
    out to another day, or were deleted in the source). Blank keys are not keys."""
    rows = pa.ipc.open_file(pa.OSFile(f"{folder}/{SPOOL}"))
    keys = pa.RecordBatchReader.from_batches(
        pa.schema([rows.schema.field(key)]),
        (rows.get_batch(i).select([key]) for i in range(rows.num_record_batches)),
    )
    con = bounded_duckdb()
    try:
        con.register("_incoming", keys)
        con.execute(f"CREATE TEMP TABLE _keys AS SELECT DISTINCT {key} FROM _incoming")
        return lakehouse.keys_moved(con, identifier, key, window, "_keys")
    finally:
        con.close()


def same_time(a, b) -> bool:
    """Timestamps from different drivers (SQLite hands back text) compared as instants."""
    if a is None or b is None:
        return a is b
    as_time = [datetime.fromisoformat(str(v)) if not isinstance(v, datetime) else v for v in (a, b)]
    return as_time[0].replace(tzinfo=None) == as_time[1].replace(tzinfo=None)


def bronze_cursor(lakehouse: Lakehouse, identifier: str) -> datetime | None:
    """The incremental cursor: the greatest updated_at loaded into bronze that was not in
    the future when it was loaded (a row stamped 2999-01-01 must not freeze ingestion)."""
    if not lakehouse.exists(identifier):
        return None
    sql = (
        f"SELECT max({CURSOR_COLUMN}) FILTER (WHERE {CURSOR_COLUMN} <= {LOADED_AT}) "
        f"FROM {identifier}"
    )
    return lakehouse.query(sql, identifier).fetchone()[0]

"""Arrow record-batch streams of a bronze load: the source read (ADBC's binary COPY for
Postgres, connectorx for MySQL and SQLite), read ahead on a thread while Parquet is encoded;
the load columns appended; a window's rows spooled to local disk once."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from datetime import datetime

import adbc_driver_postgresql.dbapi as adbc_postgres
import connectorx as cx
import pyarrow as pa
import sqlalchemy as sa

from ..contracts.sources import LOADED_AT
from ..settings import asgard_home

LOAD_ID = "_asgard_load_id"


def _connectorx_url(url: str) -> str:
    """connectorx takes plain scheme URLs: drop SQLAlchemy's ``+driver`` part."""
    u = sa.engine.make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return f"sqlite://{u.database}" if u.database.startswith("/") else f"sqlite:///{u.database}"
    scheme = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}[backend]
    return u.set(drivername=scheme).render_as_string(hide_password=False)


def _adbc_postgres(url: str, query: str, batch_bytes: int) -> pa.RecordBatchReader:
    """Postgres through ADBC (binary COPY): measured faster than connectorx on this path."""
    u = sa.engine.make_url(url).set(drivername="postgresql")
    conn = adbc_postgres.connect(u.render_as_string(hide_password=False))
    cursor = conn.cursor()
    cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
    cursor.execute(query)
    reader = cursor.fetch_record_batch()

    def batches():
        try:
            yield from reader
        finally:
            cursor.close()
            conn.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def read_source(
    url: str, query: str, batch_rows: int, adbc_batch_bytes: int
) -> pa.RecordBatchReader:
    """The query's rows as Arrow batches, read ahead on a thread (see ``prefetched``)."""
    if sa.engine.make_url(url).get_backend_name() == "postgresql":
        return prefetched(_adbc_postgres(url, query, adbc_batch_bytes))
    return prefetched(
        cx.read_sql(_connectorx_url(url), query, return_type="arrow_stream", batch_size=batch_rows)
    )


PREFETCH_BATCHES = 4
_DONE = object()


def prefetched(reader: pa.RecordBatchReader, depth: int = PREFETCH_BATCHES):
    """The reader's batches, read ahead on a thread while the caller encodes Parquet (both
    release the GIL): the source read and the write overlap, with at most ``depth``
    batches in flight. An error on the source side is raised to the caller."""
    batches: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for batch in reader:
                while not stop.is_set():
                    try:
                        batches.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            batches.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer as is
            batches.put(e)

    def consume():
        thread = threading.Thread(target=produce, name="asgard-source-read", daemon=True)
        thread.start()
        try:
            while (item := batches.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    return pa.RecordBatchReader.from_batches(reader.schema, consume())


def with_load_columns(reader: pa.RecordBatchReader, load_id: str, loaded_at: datetime):
    """The reader's batches with bronze's load columns: when and by which load."""
    ts_type = pa.timestamp("us")
    schema = reader.schema.append(pa.field(LOADED_AT, ts_type)).append(
        pa.field(LOAD_ID, pa.string())
    )
    loaded = pa.scalar(loaded_at.replace(tzinfo=None), ts_type)
    load = pa.scalar(load_id, pa.string())

    def batches():
        for b in reader:
            n = b.num_rows  # constant columns via pa.repeat: no per-row Python objects
            yield pa.RecordBatch.from_arrays(
                [*b.columns, pa.repeat(loaded, n), pa.repeat(load, n)], schema=schema
            )

    return pa.RecordBatchReader.from_batches(schema, batches())


SPOOL = "rows.arrow"


def spool_dir():
    """Where windows are spooled: ASGARD_HOME/tmp/spool (local disk, cleaned per load)."""
    path = asgard_home() / "tmp" / "spool"
    path.mkdir(parents=True, exist_ok=True)
    return path


def spooled(reader: pa.RecordBatchReader, folder: str) -> pa.RecordBatchReader:
    """The window's source rows, written once to an Arrow file on local disk and read back
    batch by batch: their keys decide which bronze rows the write replaces, before the
    rows themselves are written (one source read; memory stays one batch). Not
    memory-mapped: mapped pages count in the process' RSS, which then grew with the window."""
    path = f"{folder}/{SPOOL}"
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, reader.schema) as out:
        for batch in reader:
            out.write_batch(batch)
    file = pa.ipc.open_file(pa.OSFile(path))
    return pa.RecordBatchReader.from_batches(
        file.schema, (file.get_batch(i) for i in range(file.num_record_batches))
    )


def chained(
    first: pa.RecordBatchReader, more: Iterable[pa.RecordBatchReader]
) -> pa.RecordBatchReader:
    """``first``'s batches, then those of each reader in ``more`` (opened as reached), in
    ``first``'s schema."""

    def batches():
        yield from first
        for reader in more:
            for batch in reader:
                yield batch.cast(first.schema)

    return pa.RecordBatchReader.from_batches(first.schema, batches())

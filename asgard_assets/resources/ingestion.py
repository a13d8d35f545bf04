"""Bronze ingestion: source database tables into Iceberg.

``EmbeddedIngestion`` streams Arrow record batches out of the source (ADBC for Postgres,
connectorx for MySQL and SQLite; no row loop) and writes them to Iceberg in one transaction. It is incremental on ``updated_at``: the cursor is the greatest ``updated_at``
already in bronze, read from the table itself, so state and data cannot disagree.
``AirbyteIngestion`` is the scale form (see its docstring).
"""

from __future__ import annotations

import tempfile
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import adbc_driver_postgresql.dbapi as adbc_postgres
import connectorx as cx
import dagster as dg
import duckdb
import pyarrow as pa
import sqlalchemy as sa

from .. import demo_data
from ..contracts.sources import SOURCES, STRING, qualified_name
from ..partitions import PARTITION_COLUMNS, Window
from ..settings import asgard_home, demo_source_path
from .lakehouse import Audit, KeyReplace, Lakehouse, WriteResult

CURSOR_COLUMN = "updated_at"
LOADED_AT = "_asgard_loaded_at"
LOAD_ID = "_asgard_load_id"


@dataclass(frozen=True)
class IngestResult:
    write: WriteResult
    mode: str  # "incremental", "full_refresh" or "partition_overwrite"
    cursor_from: datetime | None
    source: str


def redact(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


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


def _with_load_columns(reader: pa.RecordBatchReader, load_id: str, loaded_at: datetime):
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


class Ingestion(dg.ConfigurableResource, ABC):
    """Copies one source table into ``bronze.<table>``; returns what it wrote."""

    @abstractmethod
    def source_cursor(self, table: str) -> datetime | None:
        """The greatest ``updated_at`` in the source table (what a sensor compares)."""

    @abstractmethod
    def days(self, table: str, updated_after: datetime | None = None) -> list[str]:
        """Days (``YYYY-MM-DD`` of the partition column) holding rows (updated after
        ``updated_after``, when given)."""

    @abstractmethod
    def ingest(
        self,
        table: str,
        lakehouse: Lakehouse,
        *,
        full_refresh: bool = False,
        window: Window | None = None,
        audit: Audit | None = None,
    ) -> IngestResult:
        """Without a window: rows past the bronze cursor (all of them on ``full_refresh``).
        With one: the source's rows in the window, and every row of their keys, replace
        bronze's rows in the window and of those keys. ``audit`` judges the staged table
        before it is published."""


class EmbeddedIngestion(Ingestion):
    """Arrow batches from ``ASGARD_SOURCE_URL`` (the demo database when unset) into Iceberg."""

    source_url: str = ""
    batch_rows: int = 250_000
    # small ADBC batches: its buffers live outside Arrow's pool and grew with the table
    adbc_batch_bytes: int = 1024 * 1024

    def url(self) -> str:
        if self.source_url:
            return self.source_url
        return demo_data.ensure_sqlite(demo_source_path())

    @contextmanager
    def _connect(self):
        """A connection to the source; an unreachable source fails with a clear message
        (only connecting is translated: a failing query keeps its own error)."""
        url = self.url()
        engine = sa.create_engine(url)
        try:
            try:
                conn = engine.connect()
            except sa.exc.OperationalError as e:
                raise dg.Failure(
                    f"cannot reach source database {redact(url)}: {e.orig}",
                    metadata={"source": redact(url)},
                ) from e
            with conn:
                yield conn
        finally:
            engine.dispose()

    def _qualified(self, table: str, conn: sa.Connection | None = None) -> str:
        """The table's name in the source (schema-qualified where the dialect has schemas);
        a missing table fails with a clear message."""
        if conn is None:
            with self._connect() as conn:
                return self._qualified(table, conn)
        schema, name = qualified_name(table, conn.dialect.name)
        where = f"{schema}.{name}" if schema else name
        if not sa.inspect(conn).has_table(name, schema=schema):
            source = redact(self.url())
            raise dg.Failure(
                f"source table {where} does not exist in {source}",
                metadata={"source": source, "table": where},
            )
        return where

    def source_cursor(self, table: str) -> datetime | None:
        with self._connect() as conn:
            query = f"SELECT max({CURSOR_COLUMN}) FROM {self._qualified(table, conn)}"
            value = conn.execute(sa.text(query)).scalar()
        # SQLite hands back text; the others a datetime
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    def days(self, table: str, updated_after: datetime | None = None) -> list[str]:
        column = PARTITION_COLUMNS[table]
        with self._connect() as conn:
            query = (
                f"SELECT DISTINCT date({column}) FROM {self._qualified(table, conn)} "
                f"WHERE {column} IS NOT NULL"
            )
            params = {}
            if updated_after is not None:
                query += f" AND {CURSOR_COLUMN} > :since"
                # a formatted string: SQLite compares text, and Feast/MLflow re-register the
                # process's sqlite3 datetime adapter
                params["since"] = f"{updated_after:%Y-%m-%d %H:%M:%S.%f}"
            days = conn.execute(sa.text(query), params).scalars()
            return sorted(str(d)[:10] for d in days)

    def read(
        self, table: str, since: datetime | None = None, window: Window | None = None
    ) -> pa.RecordBatchReader:
        """Stream a source table as Arrow record batches: rows updated after ``since``, or
        the rows in ``window`` and every row of their keys (in time order, so bronze's files
        cover short time spans and a later one-day overwrite rewrites few of them)."""
        name = self._qualified(table)
        query = f"SELECT * FROM {name}"
        if window is not None:
            key = SOURCES[table].key
            # blank keys are not keys: their rows go by their day only
            real = f" AND TRIM({key}) <> ''" if SOURCES[table].column(key).type == STRING else ""
            query += (
                f" WHERE {window.sql()} OR {key} IN (SELECT {key} FROM {name} "
                f"WHERE {window.sql()}{real}) ORDER BY {window.column}"
            )
        elif since is not None:
            query += f" WHERE {CURSOR_COLUMN} > '{since:%Y-%m-%d %H:%M:%S.%f}'"
        url = self.url()
        if sa.engine.make_url(url).get_backend_name() == "postgresql":
            return _adbc_postgres(url, query, self.adbc_batch_bytes)
        return cx.read_sql(
            _connectorx_url(url), query, return_type="arrow_stream", batch_size=self.batch_rows
        )

    def ingest(
        self,
        table: str,
        lakehouse: Lakehouse,
        *,
        full_refresh: bool = False,
        window: Window | None = None,
        audit: Audit | None = None,
    ) -> IngestResult:
        identifier = f"bronze.{table}"
        load_id = uuid.uuid4().hex
        props = {"asgard.load-id": load_id}
        if window is not None:
            result = self._ingest_window(table, lakehouse, window, load_id, props, audit)
            return IngestResult(result, "partition_overwrite", None, redact(self.url()))
        else:
            cursor = None if full_refresh else bronze_cursor(lakehouse, identifier)
            reader = self.read(table, since=cursor)
            mode = "full_refresh" if cursor is None else "incremental"
            write = {"mode": "overwrite" if cursor is None else "append"}
            props["asgard.cursor-from"] = str(cursor)
        result = lakehouse.write(
            identifier,
            _with_load_columns(reader, load_id, datetime.now(UTC)),
            properties=props,
            audit=audit,
            **write,
        )
        return IngestResult(result, mode, cursor, redact(self.url()))

    def _ingest_window(
        self,
        table: str,
        lakehouse: Lakehouse,
        window: Window,
        load_id: str,
        props: dict[str, str],
        audit: Audit | None,
    ) -> WriteResult:
        """The window's source rows, and every row of their keys, replace bronze's rows in
        the window and of those keys (a row whose day changed leaves its old day)."""
        identifier, key = f"bronze.{table}", SOURCES[table].key
        with tempfile.TemporaryDirectory(dir=_spool_dir()) as spool:
            reader = _spooled(self.read(table, window=window), spool)
            moved = _keys_elsewhere(lakehouse, identifier, key, window, spool)
            return lakehouse.write(
                identifier,
                _with_load_columns(reader, load_id, datetime.now(UTC)),
                mode="overwrite",
                window=window,
                replace=KeyReplace(key, moved),
                properties=props,
                audit=audit,
            )


SPOOL = "rows.arrow"


def _spool_dir():
    path = asgard_home() / "tmp" / "spool"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _spooled(reader: pa.RecordBatchReader, folder: str) -> pa.RecordBatchReader:
    """The window's source rows, written once to an Arrow file on local disk and read back
    memory-mapped: their keys decide which bronze rows the write replaces, before the
    rows themselves are written (one source read; memory stays one batch)."""
    path = f"{folder}/{SPOOL}"
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, reader.schema) as out:
        for batch in reader:
            out.write_batch(batch)
    spooled = pa.ipc.open_file(pa.memory_map(path))
    return pa.RecordBatchReader.from_batches(
        spooled.schema, (spooled.get_batch(i) for i in range(spooled.num_record_batches))
    )


def _keys_elsewhere(
    lakehouse: Lakehouse, identifier: str, key: str, window: Window, folder: str
) -> list:
    """Keys of the spooled rows that bronze holds outside the window (rows that moved)."""
    spooled = pa.ipc.open_file(pa.memory_map(f"{folder}/{SPOOL}"))
    keys = pa.RecordBatchReader.from_batches(
        pa.schema([spooled.schema.field(key)]),
        (spooled.get_batch(i).select([key]) for i in range(spooled.num_record_batches)),
    )
    con = duckdb.connect()
    try:
        con.register("_incoming", keys)
        con.execute(f"CREATE TEMP TABLE _keys AS SELECT DISTINCT {key} FROM _incoming")
        return lakehouse.keys_outside(con, identifier, key, window, "_keys")
    finally:
        con.close()


def bronze_cursor(lakehouse: Lakehouse, identifier: str) -> datetime | None:
    """The greatest updated_at already loaded into bronze: the incremental cursor."""
    if not lakehouse.exists(identifier):
        return None
    return lakehouse.query(f"SELECT max({CURSOR_COLUMN}) FROM {identifier}", identifier).fetchone()[
        0
    ]


class AirbyteIngestion(Ingestion):
    """Scale profile: an Airbyte connection per source table, landing in the same Iceberg
    catalog. Its sync is triggered and awaited; the bronze table is Airbyte's output."""

    api_url: str
    connection_id: str
    client_id: str = ""
    client_secret: str = ""

    def source_cursor(self, table: str) -> datetime | None:
        raise dg.Failure("AirbyteIngestion.source_cursor is not implemented yet")

    def days(self, table: str, updated_after: datetime | None = None) -> list[str]:
        raise dg.Failure("AirbyteIngestion.days is not implemented yet")

    def ingest(
        self,
        table: str,
        lakehouse: Lakehouse,
        *,
        full_refresh: bool = False,
        window: Window | None = None,
        audit: Audit | None = None,
    ) -> IngestResult:
        raise dg.Failure(
            "AirbyteIngestion is configured for the k8s profile but not yet implemented; "
            "run with ASGARD_PROFILE=local"
        )

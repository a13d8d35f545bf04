"""Bronze ingestion: source database tables into Iceberg.

``EmbeddedIngestion`` streams Arrow record batches out of the source (ADBC for Postgres,
connectorx for MySQL and SQLite; no row loop) and writes them to Iceberg in one transaction.
Before reading, the source table is checked against the data contract (``contracts/sources``):
a missing or mistyped contracted column fails before any write. It is incremental on
``updated_at``: the cursor is the greatest ``updated_at`` already in bronze that was not in
the future when it was loaded, read from the table itself, so state and data cannot
disagree. Rows at the cursor are read again and dropped when bronze already holds them
(ties are never missed, never loaded twice), and the write commits only on the snapshot the
cursor came from (a concurrent load of the same table makes it read again).
``AirbyteIngestion`` is the scale form (see its docstring).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa
from pyiceberg.exceptions import CommitFailedException

from ..contracts.sources import (
    CURSOR_COLUMN,
    SOURCES,
    STRING,
    TS_FORMAT,
    contract_violations,
    cursor_query,
    physical_type,
    qualified_name,
    rows_changed_query,
    table_name,
)
from ..partitions import PARTITION_COLUMNS, Window
from ..source_url import SourceUrlError, demo_source_url, redact, source_engine
from .bronze_state import (
    bronze_cursor,
    moved_keys,
    not_yet_loaded,
    same_time,
)
from .ingestion_interface import Ingestion, IngestResult
from .lakehouse import Lakehouse
from .source_fits import (
    QUARANTINE,
    misfit_table,
    not_yet_quarantined,
    quarantine,
    sqlite_fits,
)
from .source_streams import (
    chained,
    read_source,
    spool_dir,
    spooled,
    with_load_columns,
)
from .write_audit import Audit
from .write_pins import EMPTY
from .write_results import KeyReplace, WriteResult

# a concurrent load of the same table committed first: read again past its rows
COMMIT_ATTEMPTS = 3


def _literal(value) -> str:
    """A key as a SQL literal: integers as they are, text quoted."""
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class EmbeddedIngestion(Ingestion):
    """Arrow batches from ``ASGARD_SOURCE_URL`` (the demo database when unset) into Iceberg."""

    source_url: str = ""
    batch_rows: int = 250_000
    # small ADBC batches: its buffers live outside Arrow's pool and grew with the table
    adbc_batch_bytes: int = 1024 * 1024

    def url(self) -> str:
        if self.source_url:
            return self.source_url
        return demo_source_url()

    @contextmanager
    def _connect(self):
        """A connection to the source; an unreachable source fails with a clear message
        (only connecting is translated: a failing query keeps its own error)."""
        url = self.url()
        try:
            engine = source_engine(url)
        except SourceUrlError as e:
            raise dg.Failure(
                f"source database {redact(url)}: {e}",
                metadata={"source": redact(url)},
                allow_retries=False,  # bad input: retrying cannot help
            ) from e
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
        where = table_name(table, conn.dialect.name)
        if not sa.inspect(conn).has_table(name, schema=schema):
            source = redact(self.url())
            raise dg.Failure(
                f"source table {where} does not exist in {source}",
                metadata={"source": source, "table": where},
                allow_retries=False,  # bad input: retrying cannot help
            )
        return where

    def _columns(self, table: str, conn: sa.Connection) -> dict[str, sa.types.TypeEngine]:
        """The source table's columns and their SQL types; fails before any write when
        they do not meet the data contract, naming the table and each column."""
        schema, name = qualified_name(table, conn.dialect.name)
        columns = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(name, schema)}
        problems = contract_violations(table, columns)
        if problems:
            where = table_name(table, conn.dialect.name)
            raise dg.Failure(
                f"source table {where} does not meet the data contract: {'; '.join(problems)} "
                "(docs/data-contract.md)",
                metadata={"table": where, "problems": problems},
                allow_retries=False,
            )
        return columns

    def source_cursor(self, table: str) -> datetime | None:
        with self._connect() as conn:
            query, now = cursor_query(self._qualified(table, conn))
            value = conn.execute(sa.text(query), now).scalar()
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
                params["since"] = f"{updated_after:{TS_FORMAT}}"
            days = conn.execute(sa.text(query), params).scalars()
            return sorted(str(d)[:10] for d in days)

    def read(
        self, table: str, since: datetime | None = None, window: Window | None = None
    ) -> pa.RecordBatchReader:
        """Stream a source table as Arrow record batches: rows updated at or after ``since``,
        or the rows in ``window`` and every row of their keys (in time order, so bronze's files cover short time spans
        and a later one-day overwrite rewrites few of them). Rows whose values do not fit
        their column's type are left out (see ``misfits``)."""
        with self._connect() as conn:
            where = self._qualified(table, conn)
            columns = self._columns(table, conn)
        scope = self._scope(columns, since, self._window_clause(table, where, columns, window))
        query = f"SELECT * FROM {where} WHERE {scope}"
        if window is not None:
            query += f" ORDER BY {window.column}"
        return read_source(self.url(), query, self.batch_rows, self.adbc_batch_bytes)

    def read_keys(self, table: str, keys: list) -> Iterator[pa.RecordBatchReader]:
        """The source rows of ``keys`` (few: a window's keys whose rows moved to other days),
        a query per 1,000 keys."""
        with self._connect() as conn:
            where = self._qualified(table, conn)
            columns = self._columns(table, conn)
        key = SOURCES[table].key
        for start in range(0, len(keys), 1000):
            listed = ", ".join(_literal(k) for k in keys[start : start + 1000])
            scope = self._scope(columns, None, f"{key} IN ({listed})")
            yield read_source(
                self.url(),
                f"SELECT * FROM {where} WHERE {scope}",
                self.batch_rows,
                self.adbc_batch_bytes,
            )

    def _scope(
        self,
        columns: dict[str, sa.types.TypeEngine],
        since: datetime | None,
        window_clause: str | None,
        fitting: bool = True,
    ) -> str:
        """The WHERE clause of a read: the window or cursor, and (SQLite) the rows whose
        values fit their types, or with ``fitting=False`` the rows that do not."""
        where = ["1 = 1"]
        if window_clause is not None:
            where.append(window_clause)
        elif since is not None:
            where.append(f"{CURSOR_COLUMN} >= '{since:{TS_FORMAT}}'")
        fits = self._fits(columns)
        if fits:
            where.append(fits if fitting else f"NOT ({fits})")
        elif not fitting:
            where.append("1 = 0")
        return " AND ".join(where)

    def unchanged(self, table: str, lakehouse: Lakehouse, window: Window) -> bool:
        """Bronze already holds the window's source rows: the same number of rows and the
        same latest ``updated_at`` in the window on both sides (every change to a row moves
        its ``updated_at``: the contract's cursor). One aggregate query on each side; a source
        that no longer meets the contract fails here too, as a load would."""
        identifier = f"bronze.{table}"
        if lakehouse.snapshot_id(identifier) is None:
            return False
        with self._connect() as conn:
            where = self._qualified(table, conn)
            # a type changed in place moves no row's updated_at
            fits = self._fits(self._columns(table, conn))
            # a row whose values do not fit (SQLite) is never in bronze: it is not counted
            rows = f"{window.sql()} AND {fits}" if fits else window.sql()
            source = conn.execute(sa.text(rows_changed_query(where, rows))).one()
        loaded = lakehouse.query(
            rows_changed_query(identifier, window.sql()), identifier
        ).fetchone()
        if not (source[0] == loaded[0] and same_time(source[1], loaded[1])):
            return False
        # ...but a row that does not fit, new or changed, is a change (to quarantine)
        return (
            not fits
            or not not_yet_quarantined(
                lakehouse, identifier + QUARANTINE, self.misfits(table, window=window)
            ).num_rows
        )

    def _window_clause(
        self,
        table: str,
        name: str,
        columns: dict[str, sa.types.TypeEngine],
        window: Window | None,
    ) -> str | None:
        """The rows in ``window`` and every row of their keys (a row whose day changed is
        replaced where it was); blank keys are not keys: their rows go by their day only."""
        if window is None:
            return None
        key = SOURCES[table].key
        # by the source's own type: an integer key has no blanks (and no TRIM in Postgres)
        real = f" AND TRIM({key}) <> ''" if physical_type(columns[key]) == STRING else ""
        return f"({window.sql()} OR {key} IN (SELECT {key} FROM {name} WHERE {window.sql()}{real}))"

    def _fits(self, columns: dict[str, sa.types.TypeEngine]) -> str | None:
        """SQLite only: the predicate of rows whose values all fit their declared types
        (the other databases enforce column types themselves)."""
        if sa.engine.make_url(self.url()).get_backend_name() != "sqlite":
            return None
        return " AND ".join(sqlite_fits(columns).values())

    def misfits(
        self, table: str, since: datetime | None = None, window: Window | None = None
    ) -> pa.Table:
        """The rows of a read whose values do not fit their column's type, every value as
        text, with ``_asgard_reason`` naming the columns that did not fit: what goes to
        ``bronze.<table>__quarantine`` instead of failing the whole table."""
        with self._connect() as conn:
            where = self._qualified(table, conn)
            columns = self._columns(table, conn)
            if self._fits(columns) is None:
                return misfit_table(list(columns), [])
            flags = ", ".join(
                f"CASE WHEN {f} THEN 0 ELSE 1 END" for f in sqlite_fits(columns).values()
            )
            scope = self._scope(
                columns, since, self._window_clause(table, where, columns, window), fitting=False
            )
            rows = conn.execute(sa.text(f"SELECT *, {flags} FROM {where} WHERE {scope}")).all()
        return misfit_table(list(columns), rows)

    def ingest(
        self,
        table: str,
        lakehouse: Lakehouse,
        *,
        full_refresh: bool = False,
        window: Window | None = None,
        audit: Audit | None = None,
    ) -> IngestResult:
        last: CommitFailedException | None = None
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                result = self._ingest_once(table, lakehouse, full_refresh, window, audit)
            except CommitFailedException as e:
                last = e  # another load of this table committed first: read again
                continue
            return replace(result, attempts=attempt)
        raise dg.Failure(
            f"bronze.{table}: {COMMIT_ATTEMPTS} attempts in a row lost to concurrent loads of "
            f"the same table ({last}); nothing was written by this run"
        )

    def _ingest_once(
        self,
        table: str,
        lakehouse: Lakehouse,
        full_refresh: bool,
        window: Window | None,
        audit: Audit | None,
    ) -> IngestResult:
        identifier = f"bronze.{table}"
        load_id = uuid.uuid4().hex
        loaded_at = datetime.now(UTC)
        # the snapshot the cursor is read from (EMPTY: none yet); the write commits only on
        # top of it (a concurrent first load makes this one read again, on top of that one)
        base = lakehouse.snapshot_id(identifier)
        base = EMPTY if base is None else base
        props = {"asgard.load-id": load_id}
        cursor = None
        mode = "partition_overwrite"
        if window is None:
            cursor = None if full_refresh else bronze_cursor(lakehouse, identifier)
            mode = "full_refresh" if cursor is None else "incremental"
            write = {"mode": "overwrite" if cursor is None else "append"}
            props["asgard.cursor-from"] = str(cursor)
        misfits = self.misfits(table, since=cursor, window=window)
        found = misfits.num_rows
        props.update(quarantine(lakehouse, table, misfits, load_id, loaded_at))
        if window is not None:
            result = self._ingest_window(table, lakehouse, window, load_id, props, audit, base)
            return IngestResult(result, mode, None, redact(self.url()), found)
        reader = self.read(table, since=cursor)
        if cursor is not None:
            reader = not_yet_loaded(reader, lakehouse, identifier, cursor)
        result = lakehouse.write(
            identifier,
            with_load_columns(reader, load_id, loaded_at),
            properties=props,
            base_snapshot_id=base,
            audit=audit,
            **write,
        )
        return IngestResult(result, mode, cursor, redact(self.url()), found)

    def _ingest_window(
        self,
        table: str,
        lakehouse: Lakehouse,
        window: Window,
        load_id: str,
        props: dict[str, str],
        audit: Audit | None,
        base: int,
    ) -> WriteResult:
        """The window's source rows, and every row of their keys, replace bronze's rows in
        the window and of those keys (a row whose day changed leaves its old day)."""
        identifier, key = f"bronze.{table}", SOURCES[table].key
        with ExitStack() as cleanup:
            reader, moved = self.read(table, window=window), []
            if base != EMPTY:  # rows bronze holds may have moved: spooled to learn their keys
                spool = cleanup.enter_context(tempfile.TemporaryDirectory(dir=spool_dir()))
                reader = spooled(reader, spool)
                moved, departed = moved_keys(lakehouse, identifier, key, window, spool)
                if departed:  # their rows now on other days come too, or they would be lost
                    reader = chained(reader, self.read_keys(table, departed))
                    moved = sorted({*moved, *departed}, key=str)
            return lakehouse.write(
                identifier,
                with_load_columns(reader, load_id, datetime.now(UTC)),
                mode="overwrite",
                window=window,
                replace=KeyReplace(key, moved),
                properties=props,
                audit=audit,
                base_snapshot_id=base,
            )

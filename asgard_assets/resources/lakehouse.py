"""The Iceberg lakehouse: one catalog, namespaces bronze/silver/gold, atomic table writes.

``LocalLakehouse`` is a pyiceberg SQL catalog (SQLite under ASGARD_HOME by default, any
SQLAlchemy URL by config) over a local warehouse folder. ``RestLakehouse`` is the scale form:
a REST/Nessie catalog over S3. Both share every method but ``catalog_properties``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg
import duckdb
import pyarrow as pa
import yaml
from pydantic import PrivateAttr
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, In
from pyiceberg.io import FileIO
from pyiceberg.table import DataScan, Table, Transaction

from ..partitions import Window
from ..settings import asgard_home

NAMESPACES = ("bronze", "silver", "gold")
CATALOG_NAME = "asgard"
ALL_ROWS = AlwaysTrue()
# pyiceberg writes one data file per this many in-memory Arrow bytes; Asgard hands it a
# segment of SEGMENT_BYTES at a time. Together they bound the memory of a write.
TABLE_PROPERTIES = {"write.target-file-size-bytes": str(32 * 1024 * 1024)}
SEGMENT_BYTES = 256 * 1024 * 1024
# keys per Iceberg delete filter when a write replaces rows by key
KEY_CHUNK = 1000


@dataclass(frozen=True)
class WriteResult:
    identifier: str
    snapshot_id: int | None
    rows_written: int
    total_rows: int
    checks: tuple[dg.AssetCheckResult, ...] = field(default=())


@dataclass(frozen=True)
class Staged:
    """A table as a write would publish it: the transaction's state before its commit."""

    identifier: str
    txn: Transaction
    io: FileIO

    def rows(self, *columns: str) -> pa.RecordBatchReader:
        """A stream of the staged rows (only ``columns``, when given)."""
        scan = DataScan(
            table_metadata=self.txn.table_metadata,
            io=self.io,
            selected_fields=columns or ("*",),
        )
        return scan.to_arrow_batch_reader()


# judges staged data: the checks' results; a failed ERROR result keeps the write unpublished
Audit = Callable[[Staged], list[dg.AssetCheckResult]]


@dataclass(frozen=True)
class KeyReplace:
    """Rows outside a write's window that it replaces too: those whose ``column`` is among
    ``keys`` (keys that moved into the window, or are written again from elsewhere)."""

    column: str
    keys: Sequence

    def filters(self) -> list[BooleanExpression]:
        return [
            In(self.column, list(self.keys[i : i + KEY_CHUNK]))
            for i in range(0, len(self.keys), KEY_CHUNK)
        ]


def to_local_path(uri: str) -> str:
    """Iceberg stores ``file://`` URIs; DuckDB and pyarrow want a plain path for local files."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


class _Segments:
    """Cuts one stream into consecutive readers of about ``limit`` Arrow bytes, and counts rows.

    pyiceberg hands micro-batches to a thread pool with ``executor.map``, which drains its
    input eagerly; feeding it one segment at a time is what keeps memory bounded.
    """

    def __init__(self, reader: pa.RecordBatchReader, limit: int):
        self.rows = 0
        self._schema = reader.schema
        self._it = iter(reader)
        self._limit = limit
        self._pending = next(self._it, None)

    @property
    def exhausted(self) -> bool:
        return self._pending is None

    def _segment(self):
        size = 0
        while self._pending is not None and size < self._limit:
            batch = self._pending
            self._pending = next(self._it, None)
            size += batch.nbytes
            self.rows += batch.num_rows
            yield batch

    def __iter__(self):
        while True:
            yield pa.RecordBatchReader.from_batches(self._schema, self._segment())
            if self._pending is None:
                return


class Lakehouse(dg.ConfigurableResource, ABC):
    """Iceberg tables behind every asset: asset key ``silver/work_orders`` is table
    ``silver.work_orders``."""

    _catalog: Catalog | None = PrivateAttr(default=None)

    @abstractmethod
    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg ``load_catalog`` properties of this catalog."""

    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(CATALOG_NAME, **self.catalog_properties())
            for ns in NAMESPACES:
                self._catalog.create_namespace_if_not_exists(ns)
        return self._catalog

    def table(self, identifier: str) -> Table:
        try:
            return self.catalog().load_table(identifier)
        except NoSuchTableError as e:
            raise dg.Failure(
                f"Iceberg table {identifier} does not exist yet: materialize its asset first"
            ) from e

    def exists(self, identifier: str) -> bool:
        return self.catalog().table_exists(identifier)

    def snapshot_id(self, identifier: str) -> int | None:
        snap = self.table(identifier).current_snapshot()
        return snap.snapshot_id if snap else None

    def current_files(self, identifier: str, row_filter: BooleanExpression = ALL_ROWS) -> list[str]:
        """Data files of the table's current snapshot only (older snapshots' files share the
        folder, so a glob would read them too); with ``row_filter``, only the files whose
        column statistics say they may hold matching rows."""
        files = []
        for task in self.table(identifier).scan(row_filter=row_filter).plan_files():
            if task.delete_files:
                raise dg.Failure(f"{identifier} has delete files; Asgard writes copy-on-write only")
            files.append(to_local_path(task.file.file_path))
        return files

    def attach(
        self,
        con: duckdb.DuckDBPyConnection,
        identifiers: Iterable[str],
        window: Window | None = None,
    ) -> None:
        """Make each table readable in DuckDB under its own name (``silver.work_orders``),
        as a view over its current snapshot's files; with ``window``, over its rows in the
        window only (and only the files that may hold them)."""
        for identifier in identifiers:
            namespace, name = identifier.split(".")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {namespace}")
            files = self.current_files(identifier, window_filter(window))
            if files:
                source = f"read_parquet({files!r}, union_by_name = true)"
            else:  # no rows (or none in the window) still has a schema
                con.register(f"_empty_{namespace}_{name}", self.table(identifier).scan().to_arrow())
                source = f"_empty_{namespace}_{name}"
            where = f" WHERE {window.sql()}" if window else ""
            con.execute(
                f"CREATE OR REPLACE VIEW {namespace}.{name} AS SELECT * FROM {source}{where}"
            )

    def query(self, sql: str, *identifiers: str) -> duckdb.DuckDBPyConnection:
        """Run DuckDB SQL that names Iceberg tables (``FROM silver.work_orders``); returns the
        cursor to fetch from."""
        con = duckdb.connect()
        self.attach(con, identifiers)
        return con.execute(sql)

    def write(
        self,
        identifier: str,
        batches: pa.RecordBatchReader,
        *,
        mode: str = "overwrite",
        window: Window | None = None,
        replace: KeyReplace | None = None,
        properties: dict[str, str] | None = None,
        audit: Audit | None = None,
    ) -> WriteResult:
        """Write a stream of batches in one Iceberg transaction: all of it lands, or nothing.

        ``overwrite`` replaces all rows, or with ``window`` only the rows in it (recorded in
        the snapshot as ``asgard.window``) and the rows of the keys in ``replace``; ``append``
        adds. pyiceberg streams the reader, so memory stays bounded by ``TABLE_PROPERTIES``;
        the schema is created on first write and evolved by name when new columns appear.

        Write-audit-publish: ``audit`` judges the staged table before the commit; if one of
        its ERROR checks fails, nothing is committed (the table stays at its snapshot) and the
        write fails naming the checks and what they found.
        """
        if mode not in ("overwrite", "append"):
            raise ValueError(f"unknown write mode {mode!r}")
        catalog = self.catalog()
        table = catalog.create_table_if_not_exists(
            identifier, schema=batches.schema, properties=TABLE_PROPERTIES
        )
        segments = _Segments(batches, SEGMENT_BYTES)
        props = dict(properties or {})
        if window is not None:
            props["asgard.window"] = str(window)
        overwrite_filter = window_filter(window)
        if mode == "append" and segments.exhausted:  # nothing new: no empty snapshot
            checks = audit(Staged(identifier, table.transaction(), table.io)) if audit else []
            return dataclasses.replace(self.describe(identifier, 0), checks=tuple(checks))
        txn = table.transaction()
        if _schema_differs(table, batches.schema):
            try:
                with txn.update_schema() as update:
                    update.union_by_name(batches.schema)
            except ValueError as e:
                raise dg.Failure(
                    f"schema of {identifier} cannot evolve to the new data: {e}"
                ) from e
        if replace is not None and table.current_snapshot() is not None:
            for key_filter in replace.filters():
                txn.delete(key_filter, snapshot_properties=props)
        for i, segment in enumerate(segments):
            if i == 0 and mode == "overwrite":
                txn.overwrite(segment, overwrite_filter=overwrite_filter, snapshot_properties=props)
            else:
                txn.append(segment, snapshot_properties=props)
        checks = audit(Staged(identifier, txn, table.io)) if audit else []
        _publish_or_fail(identifier, table, checks)
        txn.commit_transaction()
        return dataclasses.replace(self.describe(identifier, segments.rows), checks=tuple(checks))

    def keys_outside(
        self, con: duckdb.DuckDBPyConnection, identifier: str, key: str, window: Window, keys: str
    ) -> list:
        """The keys among DuckDB relation ``keys`` (a column named ``key``) that
        ``identifier`` holds outside ``window``: rows that a write of the window must replace
        too, so that a key whose partition column changed is there once. Computed in DuckDB,
        so only these (few) keys become Iceberg filter literals. Blank keys are not keys:
        their rows go by their day only."""
        if not self.exists(identifier) or self.snapshot_id(identifier) is None:
            return []
        self.attach(con, [identifier])
        return [
            k
            for (k,) in con.execute(
                f"SELECT DISTINCT {key} FROM {identifier} WHERE NOT {window.sql()} "
                f"AND {key} IN (SELECT {key} FROM {keys}) "
                f"AND trim(CAST({key} AS VARCHAR)) <> '' ORDER BY 1"
            ).fetchall()
        ]

    def describe(self, identifier: str, written: int = 0) -> WriteResult:
        """The table as it is now: current snapshot id and row count."""
        table = self.catalog().load_table(identifier)
        snap = table.current_snapshot()
        total = int(snap.summary["total-records"]) if snap and snap.summary else 0
        return WriteResult(identifier, snap.snapshot_id if snap else None, written, total)

    def write_pyiceberg_config(self) -> Path:
        """``PYICEBERG_HOME=$ASGARD_HOME`` + ``load_catalog("asgard")`` opens this catalog."""
        path = asgard_home() / ".pyiceberg.yaml"
        body = {"catalog": {CATALOG_NAME: self.catalog_properties()}}
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path


def _publish_or_fail(identifier: str, table: Table, checks: list[dg.AssetCheckResult]) -> None:
    """Raise, naming each failed ERROR check and what it found, unless all of them passed."""
    failed = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
    if not failed:
        return
    snap = table.current_snapshot()
    found = "; ".join(f"{c.check_name}: {c.description}" for c in failed)
    raise dg.Failure(
        f"{identifier} not published, blocking check failed ({found}); the table stays at "
        f"snapshot {snap.snapshot_id if snap else None}",
        metadata={c.check_name: c.description for c in failed},
    )


def window_filter(window: Window | None) -> BooleanExpression:
    """The Iceberg filter of a window's rows; all rows without one."""
    return window.iceberg_filter() if window is not None else ALL_ROWS


def _schema_differs(table: Table, schema: pa.Schema) -> bool:
    """New columns or widened types (float -> double, int -> long): evolve by name."""
    current = table.schema().as_arrow()
    return any(
        name not in current.names or not current.field(name).type.equals(schema.field(name).type)
        for name in schema.names
    )


class LocalLakehouse(Lakehouse):
    """pyiceberg SQL catalog plus a local warehouse folder, both under ASGARD_HOME unless set."""

    catalog_uri: str = ""
    warehouse: str = ""

    def catalog_properties(self) -> dict[str, str]:
        home = asgard_home()
        warehouse = self.warehouse or (home / "warehouse").as_uri()
        if warehouse.startswith("file://"):
            Path(to_local_path(warehouse)).mkdir(parents=True, exist_ok=True)
        return {
            "type": "sql",
            "uri": self.catalog_uri or f"sqlite:///{home / 'catalog.db'}",
            "warehouse": warehouse,
        }

    def catalog(self) -> Catalog:
        fresh = self._catalog is None
        catalog = super().catalog()
        if fresh:
            self.write_pyiceberg_config()
        return catalog


class RestLakehouse(Lakehouse):
    """Scale profile: an Iceberg REST catalog (Nessie, Polaris, ...) over S3."""

    uri: str
    warehouse: str
    s3_endpoint: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    token: str = ""

    def catalog_properties(self) -> dict[str, str]:
        props = {"type": "rest", "uri": self.uri, "warehouse": self.warehouse}
        optional = {
            "s3.endpoint": self.s3_endpoint,
            "s3.access-key-id": self.s3_access_key_id,
            "s3.secret-access-key": self.s3_secret_access_key,
            "token": self.token,
        }
        props.update({k: v for k, v in optional.items() if v})
        return props

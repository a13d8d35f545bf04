"""The Iceberg lakehouse: one catalog, namespaces bronze/silver/gold, atomic table writes.

``IcebergLakehouse`` picks the catalog and the warehouse independently: the catalog is a
SQL catalog on any SQLAlchemy database (SQLite under ASGARD_HOME by default) or an Iceberg
REST catalog by ``http(s)://`` URI; the warehouse is a local folder or an ``s3://`` bucket
(any S3 endpoint). Every read goes through the table's pyiceberg FileIO, so DuckDB never
needs an extension to reach object storage.
"""

from __future__ import annotations

import dataclasses
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import sqlalchemy.exc
import yaml
from pydantic import PrivateAttr
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table

from .. import judged
from ..partitions import Window
from ..settings import asgard_home, embedded_catalog_uri, local_warehouse, rest_catalog
from . import data_files, table_files
from .duckdb_bounds import bounded_duckdb
from .failed_writes import undo_on_failure
from .table_reads import (
    ALL_ROWS,
    current_data_files,
    loaded_at_alias,
    stream_scan,
    table_dataset,
    to_local_path,
    window_filter,
)
from .write_audit import Audit, Staged, publish_or_fail
from .write_pins import check_base
from .write_results import KeyReplace, WriteResult, described

NAMESPACES = ("bronze", "silver", "gold")
CATALOG_NAME = "asgard"
SECRET_PROPERTIES = ("s3.access-key-id", "s3.secret-access-key", "token")


class _Counted:
    """A stream of batches that counts its rows."""

    def __init__(self, batches: Iterable[pa.RecordBatch]):
        self.rows = 0
        self._batches = batches

    def __iter__(self):
        for batch in self._batches:
            self.rows += batch.num_rows
            yield batch


def _open_catalog(properties: dict[str, str]) -> Catalog:
    """The catalog, its tables created on first open. A new SQL catalog opened by two
    processes at once: both find its tables missing and the loser's ``CREATE TABLE`` fails
    (pyiceberg checks, then creates) with "already exists" (SQLite, MySQL, PostgreSQL's
    ``DuplicateTable``) or a unique-key violation (PostgreSQL's catalog of types). Opened
    again, it finds the tables the winner made. Any other error (a refused connection, a
    wrong password) is the database's answer: raised at once, not waited for twice."""
    try:
        return load_catalog(CATALOG_NAME, **properties)
    except sqlalchemy.exc.DBAPIError as e:
        lost_race = isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in str(e.orig)
        if not lost_race:
            raise
        return load_catalog(CATALOG_NAME, **properties)


def _ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """``namespace`` exists afterwards. pyiceberg checks, then creates: a process that creates
    it in between (two first writes into a new catalog at once) makes the create fail, with
    the catalog's own error (the SQL catalog's is a unique-key violation), not with
    ``NamespaceAlreadyExistsError``. Fine when the namespace is there after all."""
    try:
        catalog.create_namespace_if_not_exists(namespace)
    except Exception:
        if not catalog.namespace_exists(namespace):
            raise


class Lakehouse(dg.ConfigurableResource, ABC):
    """Iceberg tables behind every asset: asset key ``silver/work_orders`` is table
    ``silver.work_orders``."""

    _catalog: Catalog | None = PrivateAttr(default=None)

    @abstractmethod
    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg ``load_catalog`` properties of this catalog."""

    def catalog(self) -> Catalog:
        if self._catalog is None:
            catalog = _open_catalog(self.catalog_properties())
            for ns in NAMESPACES:
                _ensure_namespace(catalog, ns)
            self._catalog = catalog
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
        """The table's current snapshot id; None if it has none yet or does not exist."""
        table = self.loaded(identifier)
        snap = table.current_snapshot() if table is not None else None
        return snap.snapshot_id if snap else None

    def loaded(self, identifier: str) -> Table | None:
        """The table as the catalog has it now; None when it does not exist."""
        try:
            return self.catalog().load_table(identifier)
        except NoSuchTableError:
            return None

    def current_files(self, identifier: str, row_filter: BooleanExpression = ALL_ROWS) -> list[str]:
        """Data files of the table's current snapshot only (older snapshots' files share the
        folder, so a glob would read them too); with ``row_filter``, only the files whose
        column statistics say they may hold matching rows. Local files as plain paths,
        others as URIs (``s3://...``): read those with ``dataset``."""
        return [to_local_path(f) for f in current_data_files(self.table(identifier), row_filter)]

    def rows(self, identifier: str) -> pa.RecordBatchReader:
        """A stream of the table's rows at its current snapshot, read a file at a time."""
        table = self.table(identifier)
        return stream_scan(table.scan(), identifier, table.io)

    def dataset(self, identifier: str, row_filter: BooleanExpression = ALL_ROWS) -> ds.Dataset:
        """The current snapshot's data files (with ``row_filter``, only those that may hold
        matching rows) as an Arrow dataset in the table's schema, read through the table's
        FileIO: local disk, or S3 with the catalog's endpoint and credentials."""
        table = self.table(identifier)
        return table_dataset(table, current_data_files(table, row_filter))

    def attach(
        self,
        con: duckdb.DuckDBPyConnection,
        identifiers: Iterable[str],
        window: Window | None = None,
    ) -> None:
        """Make each table readable in DuckDB under its own name (``silver.work_orders``),
        as a view over its current snapshot's files; with ``window``, over its rows in the
        window only (and only the files that may hold them). Local files are read by
        DuckDB's own Parquet reader; object storage through an Arrow dataset on the table's
        FileIO (DuckDB pushes filters and projections into it), so no DuckDB extension is
        ever downloaded."""
        for identifier in identifiers:
            namespace, name = identifier.split(".")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {namespace}")
            table = self.table(identifier)
            files = current_data_files(table, window_filter(window))
            if files and all(urlparse(f).scheme == "file" for f in files):
                source = (
                    f"read_parquet({[to_local_path(f) for f in files]!r}, union_by_name = true)"
                )
            else:  # object storage, or no files (an empty table still has a schema)
                source = f"_arrow_{namespace}_{name}"
                con.register(source, table_dataset(table, files))
            where = f" WHERE {window.sql()}" if window else ""
            columns = f"*{loaded_at_alias(table)}"
            con.execute(
                f"CREATE OR REPLACE VIEW {namespace}.{name} AS SELECT {columns} FROM {source}{where}"
            )

    def query(self, sql: str, *identifiers: str) -> duckdb.DuckDBPyConnection:
        """Run DuckDB SQL that names Iceberg tables (``FROM silver.work_orders``); returns the
        cursor to fetch from."""
        con = bounded_duckdb()
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
        base_snapshot_id: int | None = None,
        audit: Audit | None = None,
    ) -> WriteResult:
        """Write a stream of batches in one Iceberg transaction: all of it lands, or nothing.

        ``overwrite`` replaces all rows, or with ``window`` only the rows in it (recorded in
        the snapshot as ``asgard.window``) and the rows of the keys in ``replace``; ``append``
        adds. The reader is streamed, so memory stays bounded (see ``data_files``);
        the schema is created on first write and evolved by name when new columns appear.
        With ``base_snapshot_id`` it commits only if the table is still at that snapshot
        (``EMPTY``: still has none; ``CommitFailedException`` otherwise: what was read from
        it is stale). A failed write removes the files it wrote (see
        ``failed_writes.undo_on_failure``).

        Write-audit-publish: ``audit`` judges the staged table before the commit; if one of
        its ERROR checks fails, nothing is committed (the table stays at its snapshot, the
        staged files are removed) and the write fails naming the checks and what they found.
        """
        if mode not in ("overwrite", "append"):
            raise ValueError(f"unknown write mode {mode!r}")
        table = self.loaded(identifier)
        check_base(identifier, table, base_snapshot_id)  # a stale plan fails before its stream
        stream = iter(batches)
        first = next(stream, None)  # a query that fails at once creates no table
        created = False
        if table is None:
            table, created = self._create(identifier, batches.schema)
            check_base(identifier, table, base_snapshot_id)  # another write may have been first
        props = dict(properties or {})
        if window is not None:
            props["asgard.window"] = str(window)
        if mode == "append" and first is None:  # nothing new: no empty snapshot
            checks = audit(Staged(identifier, table.transaction(), table.io)) if audit else []
            return dataclasses.replace(self.describe(identifier, 0), checks=tuple(checks))
        rows = _Counted(stream if first is None else itertools.chain([first], stream))
        txn = table.transaction()
        if _schema_differs(table, batches.schema):
            try:
                with txn.update_schema() as update:
                    update.union_by_name(batches.schema)
            except ValueError as e:
                raise dg.Failure(
                    f"schema of {identifier} cannot evolve to the new data: {e}"
                ) from e
        with undo_on_failure(self.catalog(), identifier, table, created):
            if replace is not None and table.current_snapshot() is not None:
                for key_filter in replace.filters():
                    txn.delete(key_filter, snapshot_properties=props)
            data_files.write_stream(
                txn, table.io, rows, batches.schema, mode, window_filter(window), props
            )
            checks = audit(Staged(identifier, txn, table.io)) if audit else []
            publish_or_fail(identifier, table, checks)
            if checks:  # the verdicts travel with the snapshot: a skipped step reports them
                txn.set_properties(
                    judged.as_property(txn.table_metadata.current_snapshot_id, checks)
                )
            txn.commit_transaction()
        return dataclasses.replace(self.describe(identifier, rows.rows), checks=tuple(checks))

    def keys_outside(
        self, con: duckdb.DuckDBPyConnection, identifier: str, key: str, window: Window, keys: str
    ) -> list:
        """The keys among DuckDB relation ``keys`` (a column named ``key``) that
        ``identifier`` holds outside ``window``: rows that a write of the window must replace
        too, so that a key whose partition column changed is there once. Computed in DuckDB,
        so only these (few) keys become Iceberg filter literals. Blank keys are not keys:
        their rows go by their day only."""
        return self.keys_moved(con, identifier, key, window, keys, left=False)[0]

    def keys_moved(
        self,
        con: duckdb.DuckDBPyConnection,
        identifier: str,
        key: str,
        window: Window,
        keys: str,
        left: bool = True,
    ) -> tuple[list, list]:
        """(``keys_outside``: the keys that moved into the window, and with ``left`` the keys
        ``identifier`` holds in ``window`` that relation ``keys`` lacks: they moved out of the
        window, or were deleted at the source). Blank keys are not keys."""
        if self.snapshot_id(identifier) is None:
            return [], []
        self.attach(con, [identifier])

        def held(where: str) -> list:
            return [
                k
                for (k,) in con.execute(
                    f"SELECT DISTINCT {key} FROM {identifier} WHERE {where} "
                    f"AND trim(CAST({key} AS VARCHAR)) <> '' ORDER BY 1"
                ).fetchall()
            ]

        moved_in = held(f"NOT {window.sql()} AND {key} IN (SELECT {key} FROM {keys})")
        if not left:
            return moved_in, []
        listed = f"SELECT {key} FROM {keys} WHERE {key} IS NOT NULL"
        return moved_in, held(f"{window.sql()} AND {key} NOT IN ({listed})")

    def _create(self, identifier: str, schema: pa.Schema) -> tuple[Table, bool]:
        """The new table, and whether this write created it (another may have been first).
        Only for a table found missing: pyiceberg's ``create_table_if_not_exists`` writes a
        new metadata file before it finds the table exists, an orphan per call."""
        table = self.catalog().create_table_if_not_exists(
            identifier, schema=schema, properties=data_files.TABLE_PROPERTIES
        )
        return table, table.current_snapshot() is None

    def referenced_files(self, identifier: str) -> set[str]:
        """Every file the table's metadata references (``table_files.referenced_files``)."""
        return table_files.referenced_files(self.catalog().load_table(identifier))

    def orphan_files(self, identifier: str, older_than: datetime | None = None) -> list[str]:
        """Files under the table's location nothing references (``table_files``)."""
        return table_files.orphan_files(self.catalog().load_table(identifier), older_than)

    def remove_orphan_files(self, identifier: str, older_than: datetime | None) -> list[str]:
        """Delete the table's orphan files older than ``older_than`` (``table_files``)."""
        return table_files.remove_orphan_files(self.catalog().load_table(identifier), older_than)

    def describe(self, identifier: str, written: int = 0) -> WriteResult:
        """The table as it is now: current snapshot id and row count."""
        return described(self.catalog().load_table(identifier), identifier, written)

    def write_pyiceberg_config(self) -> Path:
        """``PYICEBERG_HOME=$ASGARD_HOME`` + ``load_catalog("asgard")`` opens this catalog."""
        path = asgard_home() / ".pyiceberg.yaml"
        # secrets stay in the environment (AWS_* is where the S3 client looks anyway)
        props = {k: v for k, v in self.catalog_properties().items() if k not in SECRET_PROPERTIES}
        body = {"catalog": {CATALOG_NAME: props}}
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path


def _schema_differs(table: Table, schema: pa.Schema) -> bool:
    """New columns or widened types (float -> double, int -> long): evolve by name."""
    current = table.schema().as_arrow()
    return any(
        name not in current.names or not current.field(name).type.equals(schema.field(name).type)
        for name in schema.names
    )


class IcebergLakehouse(Lakehouse):
    """An Iceberg catalog over a warehouse, each chosen on its own.

    ``catalog_uri``: a SQLAlchemy URL is a pyiceberg SQL catalog. Its ``iceberg_tables`` and
    ``iceberg_namespace_properties`` tables are the layout of Iceberg's JDBC catalog, so
    Trino (``iceberg.catalog.type=jdbc``) and Spark's ``JdbcCatalog`` with catalog name
    ``asgard`` read the same tables. ``http(s)://`` is an Iceberg REST catalog (Nessie,
    Polaris, Lakekeeper). Empty: SQLite under ASGARD_HOME.
    ``warehouse``: ``file://`` or ``s3://bucket/prefix`` (a REST catalog may take a
    warehouse name instead). Empty: ASGARD_HOME/warehouse.
    ``s3_*``: the object store's endpoint (MinIO, Ceph, moto; empty is AWS) and credentials
    (empty: the AWS SDK's own chain: AWS_* variables, profile, instance role).
    """

    catalog_uri: str = ""
    warehouse: str = ""
    s3_endpoint: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_region: str = ""
    token: str = ""  # REST catalog bearer token

    def catalog_properties(self) -> dict[str, str]:
        home = asgard_home()
        uri = self.catalog_uri or embedded_catalog_uri()
        warehouse = local_warehouse(self.warehouse, uri) or (home / "warehouse").as_uri()
        rest = rest_catalog(uri)
        if warehouse.startswith("file://"):
            Path(to_local_path(warehouse)).mkdir(parents=True, exist_ok=True)
        props = {"type": "rest" if rest else "sql", "uri": uri, "warehouse": warehouse}
        optional = {
            "s3.endpoint": self.s3_endpoint,
            "s3.access-key-id": self.s3_access_key_id,
            "s3.secret-access-key": self.s3_secret_access_key,
            "s3.region": self.s3_region,
            "token": self.token,
        }
        props.update({k: v for k, v in optional.items() if v})
        return props

    def catalog(self) -> Catalog:
        fresh = self._catalog is None
        catalog = super().catalog()
        if fresh:
            self.write_pyiceberg_config()
        return catalog

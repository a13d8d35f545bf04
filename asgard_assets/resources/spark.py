"""The silver engine: Spark-SQL text files that build one table each.

``DuckDbSparkSql`` transpiles the Spark SQL with sqlglot and runs it in DuckDB over the
input tables' current Iceberg snapshot files (all of them: a key's versions may lie on any
day), streaming the result into one Iceberg commit. ``SparkOperatorEngine``
(``spark_operator.py``) is the scale form: the same SQL text as a SparkApplication of the
Spark Operator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import sqlglot
from pyiceberg.exceptions import CommitFailedException
from sqlglot.errors import ParseError

from ..partitions import Window
from .duckdb_bounds import DUCKDB_MEMORY, bounded_duckdb
from .lakehouse import Lakehouse
from .window_rewrite import split_latest_row_windows
from .write_audit import Audit
from .write_pins import EMPTY
from .write_results import KeyReplace, WriteResult


def transpile(sql_path: Path) -> str:
    """Spark SQL file → DuckDB SQL (its latest-row windows planned for DuckDB:
    ``window_rewrite.py``), failing with the file name and sqlglot's message."""
    text = sql_path.read_text()
    try:
        statements = [
            split_latest_row_windows(tree).sql("duckdb") if tree is not None else ""
            for tree in sqlglot.parse(text, read="spark")
        ]
    except ParseError as e:
        raise dg.Failure(f"Spark SQL in {sql_path.name} does not parse: {e}") from e
    if len(statements) != 1:
        raise dg.Failure(f"{sql_path.name} must hold exactly one SELECT, found {len(statements)}")
    return statements[0]


class SparkSqlEngine(dg.ConfigurableResource, ABC):
    """Builds ``target`` from the SELECT in ``sql_path`` over the ``inputs`` tables. With a
    ``window`` and the target's ``key``, replaces only the target's rows in the window and
    the rows of the keys that are or were in it (so a key is there once, on its current day);
    ``audit`` judges the staged result before it is published."""

    @abstractmethod
    def build(
        self,
        sql_path: Path,
        target: str,
        inputs: list[str],
        lakehouse: Lakehouse,
        window: Window | None = None,
        *,
        key: str | None = None,
        audit: Audit | None = None,
    ) -> WriteResult: ...


class DuckDbSparkSql(SparkSqlEngine):
    memory_limit: str = DUCKDB_MEMORY
    batch_rows: int = 250_000

    def build(
        self,
        sql_path: Path,
        target: str,
        inputs: list[str],
        lakehouse: Lakehouse,
        window: Window | None = None,
        *,
        key: str | None = None,
        audit: Audit | None = None,
    ) -> WriteResult:
        sql = transpile(sql_path)
        try:
            return self._build(sql, sql_path, target, inputs, lakehouse, window, key, audit)
        except CommitFailedException:
            # a first build streamed as if the table were empty, and another build committed
            # meanwhile: build again on top of that one
            return self._build(sql, sql_path, target, inputs, lakehouse, window, key, audit)

    def _build(
        self,
        sql: str,
        sql_path: Path,
        target: str,
        inputs: list[str],
        lakehouse: Lakehouse,
        window: Window | None,
        key: str | None,
        audit: Audit | None,
    ) -> WriteResult:
        con = bounded_duckdb(self.memory_limit)
        try:
            lakehouse.attach(con, inputs)
            rows, replace, base = sql, None, None
            if window is not None and key is not None:
                if lakehouse.snapshot_id(target) is not None:
                    # the whole key space: dedup must see a key's versions on every day
                    _run(con, f"CREATE TEMP TABLE _result AS {sql}", sql_path)
                    rows, replace = _window_rows(con, lakehouse, target, key, window)
                else:  # nothing to replace: a key's one row is in the window or it is not
                    rows, base = f"SELECT * FROM ({sql}) WHERE {window.sql()}", EMPTY
            return lakehouse.write(
                target,
                _reader(con, rows, sql_path, self.batch_rows),
                mode="overwrite",
                window=window,
                replace=replace,
                properties={"asgard.sql": sql_path.name},
                base_snapshot_id=base,
                audit=_after_release(con, audit),
            )
        finally:
            con.close()


def _failed(sql_path: Path, error: Exception) -> dg.Failure:
    return dg.Failure(f"{sql_path.name} failed in DuckDB: {error}")


def _run(con: duckdb.DuckDBPyConnection, sql: str, sql_path: Path) -> None:
    try:
        con.execute(sql)
    except duckdb.Error as e:
        raise _failed(sql_path, e) from e


def _reader(
    con: duckdb.DuckDBPyConnection, sql: str, sql_path: Path, batch_rows: int
) -> pa.RecordBatchReader:
    """The rows of ``sql`` as a stream; DuckDB's errors, when binding it or while it runs
    (its Arrow stream raises them as ``OSError``), fail naming the SQL file."""
    try:
        reader = con.sql(sql).to_arrow_reader(batch_rows)
    except duckdb.Error as e:
        raise _failed(sql_path, e) from e

    def batches():
        try:
            yield from reader
        except (duckdb.Error, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:  # the disk, not the SQL
                raise
            raise _failed(sql_path, e) from e

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _window_rows(
    con: duckdb.DuckDBPyConnection, lakehouse: Lakehouse, target: str, key: str, window: Window
) -> tuple[str, KeyReplace]:
    """The result rows a window run writes into ``target`` (which has rows), and the target
    rows it replaces besides the window's: the keys that are in the window now (in the
    result) or were (in the target) are written wherever their row lies now, and their rows
    elsewhere are replaced."""
    con.execute(f"CREATE TEMP TABLE _keys AS SELECT {key} FROM _result WHERE {window.sql()}")
    lakehouse.attach(con, [target])
    con.execute(f"INSERT INTO _keys SELECT {key} FROM {target} WHERE {window.sql()}")
    moved = lakehouse.keys_outside(con, target, key, window, "_keys")
    rows = f"SELECT * FROM _result WHERE {window.sql()} OR {key} IN (SELECT {key} FROM _keys)"
    return rows, KeyReplace(key, moved)


def _after_release(con: duckdb.DuckDBPyConnection, audit: Audit | None) -> Audit | None:
    """``audit``, run once the result's temp tables are dropped: the rows are written by
    then, and the audit's own DuckDB connection should not sit beside their memory."""
    if audit is None:
        return None

    def run(staged):
        con.execute("DROP TABLE IF EXISTS _keys")
        con.execute("DROP TABLE IF EXISTS _result")
        return audit(staged)

    return run

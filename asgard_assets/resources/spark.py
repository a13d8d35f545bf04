"""The silver engine: Spark-SQL text files that build one table each.

``DuckDbSparkSql`` transpiles the Spark SQL with sqlglot and runs it in DuckDB over the
input tables' current Iceberg snapshot files, streaming the result into an atomic
overwrite. ``SparkOperatorEngine`` (``spark_operator.py``) is the scale form: the same SQL
text as a SparkApplication of the Spark Operator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
import duckdb
import sqlglot
from sqlglot.errors import ParseError

from ..partitions import Window
from ..settings import asgard_home
from .lakehouse import Lakehouse, WriteResult


def transpile(sql_path: Path) -> str:
    """Spark SQL file → DuckDB SQL, failing with the file name and sqlglot's message."""
    text = sql_path.read_text()
    try:
        statements = sqlglot.transpile(text, read="spark", write="duckdb")
    except ParseError as e:
        raise dg.Failure(f"Spark SQL in {sql_path.name} does not parse: {e}") from e
    if len(statements) != 1:
        raise dg.Failure(f"{sql_path.name} must hold exactly one SELECT, found {len(statements)}")
    return statements[0]


class SparkSqlEngine(dg.ConfigurableResource, ABC):
    """Builds ``target`` from the SELECT in ``sql_path`` over the ``inputs`` tables; with a
    ``window``, over the inputs' rows in it, replacing only the target's rows in it."""

    @abstractmethod
    def build(
        self,
        sql_path: Path,
        target: str,
        inputs: list[str],
        lakehouse: Lakehouse,
        window: Window | None = None,
    ) -> WriteResult: ...


class DuckDbSparkSql(SparkSqlEngine):
    memory_limit: str = "1GB"
    batch_rows: int = 250_000

    def build(
        self,
        sql_path: Path,
        target: str,
        inputs: list[str],
        lakehouse: Lakehouse,
        window: Window | None = None,
    ) -> WriteResult:
        sql = transpile(sql_path)
        spill = asgard_home() / "tmp" / "duckdb"
        spill.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(
            config={"memory_limit": self.memory_limit, "temp_directory": str(spill)}
        )
        try:
            lakehouse.attach(con, inputs, window)
            try:
                reader = con.sql(sql).to_arrow_reader(self.batch_rows)
                return lakehouse.write(
                    target,
                    reader,
                    mode="overwrite",
                    window=window,
                    properties={"asgard.sql": sql_path.name},
                )
            except duckdb.Error as e:
                raise dg.Failure(f"{sql_path.name} failed in DuckDB: {e}") from e
        finally:
            con.close()

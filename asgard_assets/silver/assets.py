"""silver/<table>: cleaned, typed, flagged; Spark-SQL files in ``sql/`` do the work."""

import hashlib
from pathlib import Path

import dagster as dg

from ..metadata import table_metadata
from ..resources.lakehouse import Lakehouse
from ..resources.spark import SparkSqlEngine
from ..settings import SOURCE_TABLES

SQL_DIR = Path(__file__).parent / "sql"


def sql_path(table: str) -> Path:
    return SQL_DIR / f"{table}.sql"


def invalid_share(lakehouse: Lakehouse, identifier: str) -> float:
    sql = f"SELECT avg(CASE WHEN quality_flag = 'INVALID' THEN 1.0 ELSE 0.0 END) FROM {identifier}"
    return lakehouse.query(sql, identifier).fetchone()[0] or 0.0


def silver_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["silver", table],
        deps=[dg.AssetKey(["bronze", table])],
        group_name="silver",
        kinds={"iceberg", "spark", "duckdb"},
        description=f"Cleaned, typed and flagged `{table}`; rules in `silver/sql/{table}.sql`.",
        code_version=hashlib.sha256(sql_path(table).read_bytes()).hexdigest()[:12],
    )
    def _silver(spark: SparkSqlEngine, lakehouse: Lakehouse) -> dg.MaterializeResult:
        identifier = f"silver.{table}"
        result = spark.build(sql_path(table), identifier, [f"bronze.{table}"], lakehouse)
        return dg.MaterializeResult(
            metadata={
                **table_metadata(lakehouse, result),
                "invalid_share": invalid_share(lakehouse, identifier),
                "sql_file": f"silver/sql/{table}.sql",
            }
        )

    return _silver


silver_assets = [silver_asset(t) for t in SOURCE_TABLES]

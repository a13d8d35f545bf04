"""silver/<table>: cleaned, typed, flagged; Spark-SQL files in ``sql/`` do the work."""

from pathlib import Path

import dagster as dg

from ..built_from import built_from, covers, inputs, record, unchanged
from ..contracts.sources import SOURCE_TABLES, SOURCES
from ..metadata import code_version, table_metadata
from ..partitions import partitions_of, window_of
from ..resources.lakehouse import Lakehouse
from ..resources.spark import SparkSqlEngine
from .checks import silver_audit, silver_check_specs

SQL_DIR = Path(__file__).parent / "sql"

# A bronze load (any day, not only the latest) rebuilds the same silver partition once
# nothing upstream is missing or running: the partition-aware form of "bronze loaded".
TRANSFORM_AUTOMATION = dg.AutomationCondition.eager().without(
    dg.AutomationCondition.in_latest_time_window()
)


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
        code_version=code_version(sql_path(table)),
        automation_condition=TRANSFORM_AUTOMATION,
        check_specs=silver_check_specs(table),
        **partitions_of(table),
    )
    def _silver(
        context: dg.AssetExecutionContext, spark: SparkSqlEngine, lakehouse: Lakehouse
    ) -> dg.MaterializeResult:
        identifier = f"silver.{table}"
        window = window_of(context, table)
        source = f"bronze.{table}"
        built = inputs(lakehouse, code_version(sql_path(table)), [source], window)
        if covers(built_from(lakehouse, identifier), built):
            return unchanged(context, lakehouse, identifier, silver_audit(table), source)
        result = spark.build(
            sql_path(table),
            identifier,
            [f"bronze.{table}"],
            lakehouse,
            window,
            key=SOURCES[table].key,
            audit=silver_audit(table),
        )
        record(lakehouse, identifier, built, snapshot_id=result.snapshot_id)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(str(result.snapshot_id)),
            metadata={
                **table_metadata(lakehouse, result, window),
                "invalid_share": invalid_share(lakehouse, identifier),
                "sql_file": f"silver/sql/{table}.sql",
            },
            check_results=list(result.checks),
        )

    return _silver


silver_assets = [silver_asset(t) for t in SOURCE_TABLES]

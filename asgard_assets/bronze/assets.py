"""bronze/<table>: the source rows unchanged, plus load metadata columns, in Iceberg."""

import dagster as dg

from ..metadata import table_metadata
from ..resources.ingestion import Ingestion
from ..resources.lakehouse import Lakehouse
from ..settings import SOURCE_TABLES


class BronzeConfig(dg.Config):
    full_refresh: bool = False
    """Re-read the whole source table and replace bronze, instead of rows past the cursor."""


def bronze_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["bronze", table],
        group_name="bronze",
        kinds={"iceberg", "python"},
        description=(
            f"Raw copy of source table `{table}` (`updated_at` incremental; "
            "`full_refresh: true` reloads it). Columns `_asgard_loaded_at` and "
            "`_asgard_load_id` record each load."
        ),
    )
    def _bronze(
        context: dg.AssetExecutionContext,
        config: BronzeConfig,
        ingestion: Ingestion,
        lakehouse: Lakehouse,
    ) -> dg.MaterializeResult:
        result = ingestion.ingest(table, lakehouse, full_refresh=config.full_refresh)
        context.log.info(
            f"{result.mode}: {result.write.rows_written} rows from {result.source} "
            f"into bronze.{table} (snapshot {result.write.snapshot_id})"
        )
        return dg.MaterializeResult(
            metadata={
                **table_metadata(lakehouse, result.write),
                "load_mode": result.mode,
                "cursor_from": str(result.cursor_from),
                "source": result.source,
            }
        )

    return _bronze


bronze_assets = [bronze_asset(t) for t in SOURCE_TABLES]

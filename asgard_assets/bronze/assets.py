"""bronze/<table>: the source rows unchanged, plus load metadata columns, in Iceberg."""

import dagster as dg

from ..built_from import unchanged
from ..contracts.sources import SOURCE_TABLES
from ..metadata import code_version, skipped, table_metadata
from ..orchestration.retries import EXTERNAL_SYSTEM_RETRY
from ..partitions import is_partitioned, partitions_of, window_of
from ..resources.ingestion_interface import Ingestion
from ..resources.lakehouse import Lakehouse
from .checks import bronze_audit, bronze_check_specs


class BronzeConfig(dg.Config):
    full_refresh: bool = False
    """Unpartitioned tables: re-read the whole source table and replace bronze, instead of
    the rows past the cursor. Partition runs: reload the days even when bronze already holds
    the source's rows of them (a run otherwise notices that and skips)."""


def _description(table: str) -> str:
    how = (
        "daily partitions; a run replaces its days, the rows outside every partition and "
        "the rows of the same keys elsewhere with the source's rows"
        if is_partitioned(table)
        else "`updated_at` incremental; `full_refresh: true` reloads it"
    )
    return (
        f"Raw copy of source table `{table}` ({how}). Columns `_asgard_loaded_at` and "
        "`_asgard_load_id` record each load."
    )


def bronze_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["bronze", table],
        group_name="bronze",
        kinds={"iceberg", "python"},
        description=_description(table),
        code_version=code_version(
            "resources/ingestion.py",
            "resources/source_streams.py",
            "resources/bronze_state.py",
            "resources/source_fits.py",
        ),
        retry_policy=EXTERNAL_SYSTEM_RETRY,
        check_specs=bronze_check_specs(table),
        **partitions_of(table),
    )
    def _bronze(
        context: dg.AssetExecutionContext,
        config: BronzeConfig,
        ingestion: Ingestion,
        lakehouse: Lakehouse,
    ) -> dg.MaterializeResult:
        window = window_of(context, table)
        if (
            window is not None
            and not config.full_refresh
            and ingestion.unchanged(table, lakehouse, window)
        ):
            return unchanged(
                context,
                lakehouse,
                f"bronze.{table}",
                bronze_audit(table, window),
                "the source's window",
                window,
            )
        result = ingestion.ingest(
            table,
            lakehouse,
            full_refresh=config.full_refresh,
            window=window,
            audit=bronze_audit(table, window),
        )
        context.log.info(
            f"{result.mode}: {result.write.rows_written} rows from {result.source} "
            f"into bronze.{table} (snapshot {result.write.snapshot_id})"
        )
        nothing_new = (
            result.mode == "incremental"
            and result.write.rows_written == 0
            and result.quarantined == 0
        )
        return dg.MaterializeResult(
            data_version=dg.DataVersion(str(result.write.snapshot_id)),
            metadata={
                **table_metadata(lakehouse, result.write, window),
                "load_mode": result.mode,
                "cursor_from": str(result.cursor_from),
                "source": result.source,
                "quarantined": result.quarantined,
                "commit_attempts": result.attempts,
                **(skipped(context, "no source rows past the cursor") if nothing_new else {}),
            },
            check_results=list(result.write.checks),
        )

    return _bronze


bronze_assets = [bronze_asset(t) for t in SOURCE_TABLES]

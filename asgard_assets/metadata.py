"""Metadata a person looking at an asset wants first: rows, schema, snapshot, a preview."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg

from .partitions import Window
from .resources.lakehouse import Lakehouse
from .resources.write_results import WriteResult

PACKAGE = Path(__file__).resolve().parent


def code_version(*paths: str | Path) -> str:
    """A short hash of the files whose change changes an asset's output (paths relative to
    the package, or absolute): Dagster marks the asset stale when it differs."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update((PACKAGE / path).read_bytes())
    return digest.hexdigest()[:12]


def skipped(context: dg.AssetExecutionContext, reason: str) -> dict[str, str]:
    """The metadata of a step that found nothing to do, its reason also logged as
    ``skipped: <reason>`` (the line `asgard demo` shows as ``same``)."""
    context.log.info(f"skipped: {reason}")
    return {"skipped": reason}


def table_schema(lakehouse: Lakehouse, identifier: str) -> dg.TableSchema:
    schema = lakehouse.table(identifier).schema()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.name,
                str(f.field_type),
                constraints=dg.TableColumnConstraints(nullable=not f.required),
            )
            for f in schema.fields
        ]
    )


def preview(lakehouse: Lakehouse, identifier: str, rows: int = 10) -> str:
    df = lakehouse.query(f"SELECT * FROM {identifier} LIMIT {rows}", identifier).df()
    return df.to_markdown(index=False) if len(df) else "(empty)"


def table_metadata(
    lakehouse: Lakehouse, result: WriteResult, window: Window | None = None, written: bool = True
) -> dict:
    """With a window (a partition run), also the rows written into it and which days.
    ``written=False`` for a table described after another engine wrote it (gold after dbt):
    no ``rows_written`` then, rather than a 0 beside the real row count."""
    partition = (
        {"dagster/partition_row_count": result.rows_written, "partition_window": str(window)}
        if window
        else {}
    )
    return {
        "dagster/row_count": result.total_rows,
        **partition,
        **({"rows_written": result.rows_written} if written else {}),
        "dagster/column_schema": table_schema(lakehouse, result.identifier),
        "dagster/table_name": f"asgard.{result.identifier}",
        "iceberg_table": result.identifier,
        "iceberg_snapshot_id": str(result.snapshot_id),
        "preview": dg.MetadataValue.md(preview(lakehouse, result.identifier)),
    }

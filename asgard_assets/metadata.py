"""Metadata a person looking at an asset wants first: rows, schema, snapshot, a preview."""

from __future__ import annotations

import dagster as dg

from .resources.lakehouse import Lakehouse, WriteResult


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


def table_metadata(lakehouse: Lakehouse, result: WriteResult) -> dict:
    return {
        "dagster/row_count": result.total_rows,
        "rows_written": result.rows_written,
        "dagster/column_schema": table_schema(lakehouse, result.identifier),
        "dagster/table_name": f"asgard.{result.identifier}",
        "iceberg_table": result.identifier,
        "iceberg_snapshot_id": str(result.snapshot_id),
        "preview": dg.MetadataValue.md(preview(lakehouse, result.identifier)),
    }

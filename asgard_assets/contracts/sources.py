"""The source-table registry: every source table Asgard reads, declared once.

Each table has a logical name (its ``bronze/<name>`` and ``silver/<name>`` asset), the schema
it lives in (Postgres schema, MySQL database; SQLite has none), its columns with their
logical types, its key, its daily partition column (or none) and its incremental cursor.
Ingestion, partitions, checks, the demo database and the docs (``docs/data-contract.md``)
all read this registry, so a table is added or changed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

# logical column types; a source may use any physical type that reads as one of these
STRING, INTEGER, DOUBLE, TIMESTAMP = "string", "integer", "double", "timestamp"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class SourceTable:
    name: str
    schema: str  # Postgres schema / MySQL database of the table
    columns: tuple[Column, ...]
    key: str
    partition_column: str | None = None  # daily partitions on this timestamp, or None
    cursor: str = "updated_at"  # incremental cursor: the row's last-change time

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def partitioned(self) -> bool:
        return self.partition_column is not None


def _cols(*spec: tuple) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


SOURCES: dict[str, SourceTable] = {
    t.name: t
    for t in (
        SourceTable(
            "work_orders",
            "production",
            _cols(
                ("work_order_id", STRING),
                ("product_id", STRING),
                ("operator_id", STRING),
                ("machine_id", STRING),
                ("status", STRING),
                ("quantity", INTEGER),
                ("start_time", TIMESTAMP),
                ("end_time", TIMESTAMP),
                ("updated_at", TIMESTAMP),
            ),
            key="work_order_id",
            partition_column="start_time",
        ),
        SourceTable(
            "machine_logs",
            "production",
            _cols(
                ("log_id", STRING),
                ("machine_id", STRING),
                ("operator_id", STRING),
                ("event_type", STRING),
                ("temperature_c", DOUBLE),
                ("vibration_mm_s", DOUBLE),
                ("event_time", TIMESTAMP),
                ("updated_at", TIMESTAMP),
            ),
            key="log_id",
            partition_column="event_time",
        ),
        SourceTable(
            "quality_checks",
            "production",
            _cols(
                ("check_id", STRING),
                ("work_order_id", STRING),
                ("inspector_id", STRING),
                ("result", STRING),
                ("defects_found", INTEGER),
                ("check_time", TIMESTAMP),
                ("updated_at", TIMESTAMP),
            ),
            key="check_id",
        ),
        SourceTable(
            "materials",
            "inventory",
            _cols(
                ("material_id", STRING),
                ("material_name", STRING),
                ("category", STRING),
                ("unit", STRING),
                ("quantity_on_hand", INTEGER),
                ("unit_cost", DOUBLE),
                ("supplier", STRING),
                ("updated_at", TIMESTAMP),
            ),
            key="material_id",
        ),
    )
}
SOURCE_TABLES = tuple(SOURCES)
PARTITIONED_TABLES = tuple(t for t in SOURCE_TABLES if SOURCES[t].partitioned)


def source(name: str) -> SourceTable:
    return SOURCES[name]


def qualified_name(table: str, dialect: str) -> tuple[str | None, str]:
    """(schema, table) for a source table in a database of ``dialect``: Postgres keeps
    schemas ``production``/``inventory``; in MySQL a schema is a database; SQLite has bare
    table names."""
    return (None if dialect == "sqlite" else SOURCES[table].schema), table

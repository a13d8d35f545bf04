"""The source-table registry: every source table Asgard reads, declared once.

Each table has a logical name (its ``bronze/<name>`` and ``silver/<name>`` asset), the schema
it lives in (Postgres schema, MySQL database; SQLite has none), its columns with their
logical types, its key, its daily partition column (or none) and its incremental cursor.
Ingestion, partitions, checks, the demo database and the docs (``docs/data-contract.md``)
all read this registry, so a table is added or changed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # SQLAlchemy is imported where types are judged: the registry loads light
    import sqlalchemy as sa

# logical column types; a source may use any physical type that reads as one of these
STRING, INTEGER, DOUBLE, TIMESTAMP = "string", "integer", "double", "timestamp"

# The physical types each logical type accepts (physical = the logical type of the source
# column's own SQL type, see ``physical_type``). Text columns may hold integers (integer
# ids): silver casts them to text. A double may come from an integer or decimal column.
ACCEPTS = {
    STRING: {STRING, INTEGER},
    INTEGER: {INTEGER},
    DOUBLE: {DOUBLE, INTEGER},
    TIMESTAMP: {TIMESTAMP},
}


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


def physical_type(sql_type: sa.types.TypeEngine) -> str | None:
    """The logical type a source column's SQL type reads as (None: none Asgard reads)."""
    import sqlalchemy as sa

    if isinstance(sql_type, sa.Integer) or (
        isinstance(sql_type, sa.Numeric) and getattr(sql_type, "scale", None) == 0
    ):
        return INTEGER
    if isinstance(sql_type, sa.Float | sa.Numeric):
        return DOUBLE
    if isinstance(sql_type, sa.DateTime):
        return TIMESTAMP
    if isinstance(sql_type, sa.String | sa.Enum):
        return STRING
    return None


def contract_violations(table: str, columns: dict[str, sa.types.TypeEngine]) -> list[str]:
    """What keeps a source table (its column name -> SQL type) from meeting the contract:
    a contracted column missing, or of a type that does not read as its logical type.
    Columns beyond the contract are fine (bronze gains them)."""
    found = {name.lower(): sql_type for name, sql_type in columns.items()}
    problems = []
    for col in SOURCES[table].columns:
        if col.name not in found:
            problems.append(f"column {col.name} ({col.type}) is missing")
            continue
        physical = physical_type(found[col.name])
        if physical not in ACCEPTS[col.type]:
            problems.append(f"column {col.name} is {found[col.name]}, the contract says {col.type}")
    return problems


# bronze's load-time column, and what other loaders call it: Airbyte's destinations stamp
# `_airbyte_extracted_at`. Readers of bronze see it under Asgard's name (silver's tie-break).
LOADED_AT = "_asgard_loaded_at"
# every change to a source row moves its updated_at: the incremental cursor, and what tells
# that a table changed (with its row count)
CURSOR_COLUMN = "updated_at"
# timestamps compared as text (SQLite stores them so): this format sorts as the times do
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
LOADED_AT_ALIASES = ("_airbyte_extracted_at",)


def source(name: str) -> SourceTable:
    return SOURCES[name]


def qualified_name(table: str, dialect: str) -> tuple[str | None, str]:
    """(schema, table) for a source table in a database of ``dialect``: Postgres keeps
    schemas ``production``/``inventory``; in MySQL a schema is a database; SQLite has bare
    table names."""
    return (None if dialect == "sqlite" else SOURCES[table].schema), table


def table_name(table: str, dialect: str) -> str:
    """The source table's name in SQL: ``schema.table``, or ``table`` in SQLite."""
    return ".".join(filter(None, qualified_name(table, dialect)))


def cursor_query(name: str) -> tuple[str, dict[str, str]]:
    """The latest ``updated_at`` of table ``name`` that is not in the future (a row stamped
    in the future would look new forever), as a query and its parameter."""
    now = datetime.now(UTC).replace(tzinfo=None)  # source timestamps are naive UTC
    query = f"SELECT max({CURSOR_COLUMN}) FROM {name} WHERE {CURSOR_COLUMN} <= :now"
    return query, {"now": f"{now:{TS_FORMAT}}"}


def rows_changed_query(name: str, where: str = "1 = 1") -> str:
    """The row count and latest ``updated_at`` of table ``name``'s rows ``where``: two reads
    of the same rows differ in these whenever a row was added, changed or removed (the
    cursor moves with every change)."""
    return f"SELECT count(*), max({CURSOR_COLUMN}) FROM {name} WHERE {where}"


def contract_markdown() -> str:
    """The registry as the tables of ``docs/data-contract.md`` (regenerate with
    ``python -m asgard_assets.contracts.sources``; a test keeps the doc in sync)."""
    out = []
    for t in SOURCES.values():
        where = f"`{t.schema}.{t.name}` (MySQL: database `{t.schema}`; SQLite: `{t.name}`)"
        extra = f", daily partitions on `{t.partition_column}`" if t.partitioned else ""
        out += [
            f"### {t.name}",
            "",
            f"{where}; key `{t.key}`, cursor `{t.cursor}`{extra}.",
            "",
            "| column | type | accepted source types |",
            "|---|---|---|",
            *(
                f"| `{c.name}` | {c.type} | {', '.join(sorted(ACCEPTS[c.type]))} |"
                for c in t.columns
            ),
            "",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    print(contract_markdown())

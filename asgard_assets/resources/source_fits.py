"""Source values that do not fit their column's declared type (SQLite stores any value in any
column; the other databases enforce column types themselves): the predicate that keeps a
read to the rows that fit, and the quarantine table of the rows that do not."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import sqlalchemy as sa

from ..contracts.sources import DOUBLE, INTEGER, SOURCES, TIMESTAMP, physical_type
from .duckdb_bounds import bounded_duckdb
from .source_streams import with_load_columns

if TYPE_CHECKING:
    from .lakehouse import Lakehouse

REASON = "_asgard_reason"  # quarantine: the columns whose value does not fit their type
QUARANTINE = "__quarantine"  # bronze.<table>__quarantine holds the rows that did not fit
# the snapshot property naming (the first of) the keys of the rows a load found misfit
QUARANTINED_KEYS = "asgard.quarantined-keys"
SAMPLE_KEYS = 20  # keys listed in a check's metadata


def sqlite_fits(columns: dict[str, sa.types.TypeEngine]) -> dict[str, str]:
    """Per column, a SQLite predicate: its value fits the declared type (connectorx panics
    on the first one that does not)."""
    return {name: _fits(name, physical_type(kind)) for name, kind in columns.items()}


def _fits(column: str, physical: str | None) -> str:
    c = f'"{column}"'
    if physical == INTEGER:
        return f"typeof({c}) IN ('integer', 'null')"
    if physical == DOUBLE:
        return f"typeof({c}) IN ('integer', 'real', 'null')"
    if physical == TIMESTAMP:
        return f"({c} IS NULL OR (typeof({c}) = 'text' AND datetime({c}) IS NOT NULL))"
    return f"typeof({c}) IN ('text', 'null')"


def misfit_table(names: list[str], rows: Sequence[Sequence]) -> pa.Table:
    """The quarantine rows: ``rows`` hold each row's values of ``names`` followed by one
    0/1 flag per column (1: did not fit); every value as text, with ``_asgard_reason``
    naming the columns that did not fit."""
    found = []
    for row in rows:
        values, bad = row[: len(names)], row[len(names) :]
        reason = ", ".join(n for n, b in zip(names, bad, strict=True) if b)
        found.append([None if v is None else str(v) for v in values] + [reason])
    columns = list(zip(*found, strict=True)) if found else [[] for _ in [*names, REASON]]
    return pa.table(
        {n: pa.array(list(v), pa.string()) for n, v in zip([*names, REASON], columns, strict=True)}
    )


def not_yet_quarantined(lakehouse: Lakehouse, quarantine: str, misfits: pa.Table) -> pa.Table:
    """The rows of ``misfits`` that the quarantine table does not already hold (the same
    value in every column, the reason included)."""
    if not misfits.num_rows or not lakehouse.exists(quarantine):
        return misfits
    held = {f.name for f in lakehouse.table(quarantine).schema().fields}
    if not set(misfits.column_names) <= held:
        return misfits  # a column the table never had: none of these is held
    columns = ", ".join(f'"{c}"' for c in misfits.column_names)
    con = bounded_duckdb()
    lakehouse.attach(con, [quarantine])
    con.register("misfits", misfits)
    return con.sql(
        f"SELECT * FROM misfits EXCEPT ALL SELECT {columns} FROM {quarantine}"
    ).to_arrow_table()


def quarantine(
    lakehouse: Lakehouse, table: str, misfits: pa.Table, load_id: str, loaded_at: datetime
) -> dict[str, str]:
    """Append the rows of a read that did not fit to ``bronze.<table>__quarantine`` (those
    it does not hold yet); the properties the load's bronze snapshot records about them."""
    props = {"asgard.quarantined": str(misfits.num_rows)}
    if not misfits.num_rows:
        return props
    keys = misfits.column(SOURCES[table].key).to_pylist()
    props[QUARANTINED_KEYS] = json.dumps(sorted(k for k in keys if k is not None)[:SAMPLE_KEYS])
    # a row already quarantined, found again (a reload of its day, or a cursor it never moved
    # past: it never reached bronze), is not appended again
    identifier = f"bronze.{table}{QUARANTINE}"
    new = not_yet_quarantined(lakehouse, identifier, misfits)
    if new.num_rows:
        lakehouse.write(
            identifier,
            with_load_columns(
                pa.RecordBatchReader.from_batches(new.schema, new.to_batches()),
                load_id,
                loaded_at,
            ),
            mode="append",
            properties={"asgard.load-id": load_id},
        )
    return props

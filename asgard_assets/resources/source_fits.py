"""Source values that do not fit their column's declared type (SQLite stores any value in any
column; the other databases enforce column types themselves): the predicate that keeps a
read to the rows that fit, and the quarantine table of the rows that do not."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import sqlalchemy as sa

from ..contracts.sources import DOUBLE, INTEGER, TIMESTAMP, physical_type

REASON = "_asgard_reason"  # quarantine: the columns whose value does not fit their type


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

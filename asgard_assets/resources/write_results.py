"""What a table write replaces besides its window (``KeyReplace``) and what it reports
(``WriteResult``): the values every engine, ingestion and asset passes around."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
from pyiceberg.expressions import BooleanExpression, In
from pyiceberg.table import Table

# keys per Iceberg delete filter when a write replaces rows by key
KEY_CHUNK = 1000


@dataclass(frozen=True)
class WriteResult:
    identifier: str
    snapshot_id: int | None
    rows_written: int
    total_rows: int
    checks: tuple[dg.AssetCheckResult, ...] = field(default=())


def described(table: Table, identifier: str, written: int = 0) -> WriteResult:
    """``table`` (loaded already) as it is: current snapshot id and row count."""
    snap = table.current_snapshot()
    total = int(snap.summary["total-records"]) if snap and snap.summary else 0
    return WriteResult(identifier, snap.snapshot_id if snap else None, written, total)


@dataclass(frozen=True)
class KeyReplace:
    """Rows outside a write's window that it replaces too: those whose ``column`` is among
    ``keys`` (keys that moved into the window, or are written again from elsewhere)."""

    column: str
    keys: Sequence

    def filters(self) -> list[BooleanExpression]:
        return [
            In(self.column, list(self.keys[i : i + KEY_CHUNK]))
            for i in range(0, len(self.keys), KEY_CHUNK)
        ]

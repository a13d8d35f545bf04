"""Write-audit-publish: a write's staged table (its transaction before the commit) is judged
by the write's checks, and published only when no blocking (ERROR) check failed; a table an
outside engine already committed (Spark, Airbyte) goes back to its previous snapshot instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
import pyarrow as pa
from pyiceberg.io import FileIO
from pyiceberg.table import DataScan, Table, Transaction

from .. import judged
from .table_reads import stream_scan

if TYPE_CHECKING:
    from .lakehouse import Lakehouse


@dataclass(frozen=True)
class Staged:
    """A table as a write would publish it: the transaction's state before its commit."""

    identifier: str
    txn: Transaction
    io: FileIO

    def rows(self, *columns: str) -> pa.RecordBatchReader:
        """A stream of the staged rows (only ``columns``, when given)."""
        scan = DataScan(table_metadata=self.txn.table_metadata, io=self.io)
        return stream_scan(scan, self.identifier, self.io, columns)


# judges staged data: the checks' results; a failed ERROR result keeps the write unpublished
Audit = Callable[[Staged], list[dg.AssetCheckResult]]


def publish_or_fail(identifier: str, table: Table, checks: list[dg.AssetCheckResult]) -> None:
    """Raise, naming each failed ERROR check and what it found, unless all of them passed."""
    failed = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
    if not failed:
        return
    snap = table.current_snapshot()
    found = "; ".join(f"{c.check_name}: {c.description}" for c in failed)
    raise dg.Failure(
        f"{identifier} not published, blocking check failed ({found}); the table stays at "
        f"snapshot {snap.snapshot_id if snap else None}",
        metadata={c.check_name: c.description for c in failed},
    )


def audit_published(
    lakehouse: Lakehouse, target: str, before: int | None, audit: Audit | None
) -> list[dg.AssetCheckResult]:
    """The audit of a snapshot an outside engine (Spark, Airbyte) already committed: on a
    failed blocking check the table goes back to ``before`` (when known) and the step fails
    naming the checks. Weaker than ``write``'s audit: readers may see the snapshot meanwhile."""
    if audit is None:
        return []
    table = lakehouse.table(target)
    checks = audit(Staged(target, table.transaction(), table.io))
    try:
        publish_or_fail(target, table, checks)
    except dg.Failure:
        if before is not None:
            table.manage_snapshots().rollback_to_snapshot(before).commit()
        raise
    snapshot = table.current_snapshot()
    if snapshot is not None and checks:
        with table.transaction() as txn:
            txn.set_properties(judged.as_property(snapshot.snapshot_id, checks))
    return checks

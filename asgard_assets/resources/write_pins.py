"""A write pinned to the snapshot its caller planned on (``Lakehouse.write``'s
``base_snapshot_id``): it commits only if the table is still there."""

from __future__ import annotations

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, TableProperties

# ``base_snapshot_id`` of a write planned on a table that has no snapshot yet (Iceberg's
# snapshot ids are never negative)
EMPTY = -1


def check_base(identifier: str, table: Table | None, base_snapshot_id: int | None) -> None:
    """Pin a write to the snapshot its caller read (a cursor, say; ``EMPTY``: no snapshot
    yet): fail now if the table has moved since, and at commit if it moves meanwhile.
    pyiceberg would rebase a conflicting commit onto the new snapshot and retry; for an
    append planned from a cursor that appends the same rows twice, and a first load that
    replaced nothing would leave the other's rows of its keys beside its own, so these
    writes do not retry inside pyiceberg (the caller reads again instead)."""
    if base_snapshot_id is None:
        return
    snap = table.current_snapshot() if table is not None else None  # None: no table yet
    current, planned = snap.snapshot_id if snap else None, base_snapshot_id
    if planned == EMPTY:
        planned = None
    if current != planned:
        raise CommitFailedException(
            f"{identifier} moved from snapshot {planned} to {current} since this write was planned"
        )
    if table is None:
        return  # pinned again once created
    props = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    table.metadata = table.metadata.model_copy(update={"properties": props})

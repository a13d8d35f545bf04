"""Iceberg table maintenance: expire old snapshots, remove orphan files, compact small files.

Daily partition overwrites leave a snapshot and a few small files behind per run; an
interrupted write leaves files no snapshot references. Left alone, both grow without
bound. These are the three standard Iceberg maintenance actions, done with pyiceberg and
the table's own FileIO (local or S3 alike); orphan files are found and removed by
``Lakehouse.remove_orphan_files``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyiceberg.table import Table


def expire_snapshots(table: Table, older_than: datetime, retain_last: int) -> int:
    """Expire snapshots older than ``older_than``, always keeping the newest ``retain_last``
    (and every branch or tag head). Their files become orphans for ``remove_orphan_files``."""
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    keep = {s.snapshot_id for s in snapshots[-retain_last:]} if retain_last else set()
    cutoff_ms = older_than.timestamp() * 1000
    expired = [
        s.snapshot_id for s in snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep
    ]
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    expired = [s for s in expired if s not in protected]
    if expired:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return len(expired)


def small_files(table: Table, target_bytes: int) -> int:
    """Data files of the current snapshot smaller than half the target size."""
    if table.current_snapshot() is None:
        return 0
    sizes = table.inspect.files().column("file_size_in_bytes").to_pylist()
    return sum(1 for s in sizes if s < target_bytes // 2)


def compact(lakehouse, identifier: str, min_small_files: int, target_bytes: int) -> int:
    """Rewrite the current snapshot's rows into files near the target size, in one commit,
    once at least ``min_small_files`` small files have piled up; returns the number of
    files replaced (0 when nothing was done). The rows are unchanged, and the commit fails
    without changing anything if a writer committed in between."""
    table = lakehouse.table(identifier)
    if small_files(table, target_bytes) < min_small_files:
        return 0
    before = len(table.inspect.files())
    reader = lakehouse.rows(identifier)  # a file at a time: memory stays bounded
    lakehouse.write(
        identifier,
        reader,
        mode="overwrite",
        properties={**_carried(table), "asgard.operation": "compaction"},
        # pinned: a write that lands meanwhile makes this commit fail, not get overwritten
        base_snapshot_id=table.current_snapshot().snapshot_id,
    )
    return before


def _carried(table: Table) -> dict[str, str]:
    """The Asgard properties of the snapshot a compaction rewrites: the rows stay the same,
    so what their write recorded (load id, quarantined rows) still describes them, and the
    checks that read it from the current snapshot must find it there."""
    summary = table.current_snapshot().summary
    extra = summary.additional_properties if summary is not None else {}
    return {k: v for k, v in extra.items() if k.startswith("asgard.")}


def default_cutoff(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)

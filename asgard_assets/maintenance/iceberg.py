"""Iceberg table maintenance: expire old snapshots, remove orphan files, compact small files.

Daily partition overwrites leave a snapshot and a few small files behind per run; an
interrupted write leaves files no snapshot references. Left alone, both grow without
bound. These are the three standard Iceberg maintenance actions, done with pyiceberg and
the table's own FileIO (local or S3 alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table


@dataclass(frozen=True)
class MaintenanceResult:
    identifier: str
    snapshots_expired: int
    orphans_removed: int
    compacted_files: int  # data files rewritten into fewer (0 when not needed)
    snapshots: int
    data_files: int


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


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata still reaches: metadata files, manifest lists,
    manifests and data files of all live snapshots."""
    refs = {table.metadata_location, *(e.metadata_file for e in table.metadata.metadata_log)}
    refs |= {s.manifest_list for s in table.metadata.snapshots}
    if table.metadata.snapshots:
        refs |= set(table.inspect.all_manifests().column("path").to_pylist())
        refs |= set(table.inspect.all_files().column("file_path").to_pylist())
    return {_path(r) for r in refs}


def remove_orphan_files(table: Table, older_than: datetime) -> int:
    """Delete files under the table's location that no live snapshot or metadata file
    references and that are older than ``older_than`` (younger ones may belong to a write
    in flight)."""
    filesystem, root = _filesystem(table)
    keep = referenced_files(table)
    cutoff = older_than.astimezone(UTC)
    removed = 0
    for info in filesystem.get_file_info(
        pafs.FileSelector(root, recursive=True, allow_not_found=True)
    ):
        if info.type != pafs.FileType.File or info.path in keep:
            continue
        if info.mtime is not None and info.mtime.astimezone(UTC) >= cutoff:
            continue
        filesystem.delete_file(info.path)
        removed += 1
    return removed


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
    reader = table.scan().to_arrow_batch_reader()
    lakehouse.write(
        identifier, reader, mode="overwrite", properties={"asgard.operation": "compaction"}
    )
    return before


def _filesystem(table: Table) -> tuple[pafs.FileSystem, str]:
    location = table.metadata.location
    io = table.io if isinstance(table.io, PyArrowFileIO) else PyArrowFileIO(table.io.properties)
    scheme, netloc, path = PyArrowFileIO.parse_location(location)
    return io.fs_by_scheme(scheme, netloc), path


def _path(uri: str) -> str:
    """The filesystem path of a table URI as pyarrow lists it (``file:///a`` -> ``/a``,
    ``s3://bucket/a`` -> ``bucket/a``)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return parsed.path
    return f"{parsed.netloc}{parsed.path}"


def default_cutoff(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)

"""The files of an Iceberg table: what its metadata references, and what lies under its
location that nothing references (orphans: debris of killed or failed writes)."""

from __future__ import annotations

from datetime import datetime

import pyarrow.fs as pafs
from pyiceberg.table import Table

from .table_reads import strip_scheme, table_filesystem, to_local_path


def referenced_files(table: Table) -> set[str]:
    """Every file any snapshot or metadata version of ``table`` needs: metadata files,
    manifest lists, manifests, data and delete files (including deleted entries still
    reachable from older snapshots)."""
    meta = table.metadata
    refs = {table.metadata_location, *(m.metadata_file for m in meta.metadata_log)}
    refs |= {s.statistics_path for s in meta.statistics}
    refs |= {s.statistics_path for s in getattr(meta, "partition_statistics", [])}
    for snap in meta.snapshots:
        refs.add(snap.manifest_list)
        for manifest in snap.manifests(table.io):
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                refs.add(entry.data_file.file_path)
    return {to_local_path(r) for r in refs}


def orphan_files(table: Table, older_than: datetime | None = None) -> list[str]:
    """Files under ``table``'s location that nothing in its metadata references, last
    modified before ``older_than`` when given: a write in flight has files not referenced
    yet, so keep a margin in production."""
    fs, root = table_filesystem(table)
    listed = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    refs = {strip_scheme(r) for r in referenced_files(table)}
    return sorted(
        f.path
        for f in listed
        if f.type == pafs.FileType.File
        and f.path not in refs
        and (older_than is None or f.mtime < older_than.astimezone(f.mtime.tzinfo))
    )


def remove_orphan_files(table: Table, older_than: datetime | None) -> list[str]:
    """Delete ``orphan_files`` of ``table`` last modified before ``older_than`` (None: all
    of them, only when no write to the table can be in flight); returns what was removed."""
    fs, _ = table_filesystem(table)
    orphans = orphan_files(table, older_than)
    for path in orphans:
        fs.delete_file(path)
    return orphans

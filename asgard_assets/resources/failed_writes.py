"""A failed write leaves nothing behind: the files it wrote are deleted, a table it created
is dropped again, and a full disk or a conflicting concurrent commit fails with a message
that says so (``Lakehouse.write`` runs every write inside ``undo_on_failure``)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import ValidationException
from pyiceberg.io import FileIO, InputFile, OutputFile
from pyiceberg.table import Table

from .table_files import referenced_files
from .table_reads import to_local_path


@contextmanager
def undo_on_failure(
    catalog: Catalog, identifier: str, table: Table, created: bool
) -> Iterator[None]:
    """Files written inside the block are deleted when it fails (a full disk, a lost
    commit, a bad batch): a failed write leaves the table at its snapshot and no debris
    (a killed process cannot clean up: ``remove_orphan_files`` does, later). A table this
    write created is dropped again rather than left empty. A full disk fails with that
    message."""
    recorder = _RecordingIO(table.io)
    table.io = recorder
    try:
        yield
    except BaseException as e:
        try:  # a commit that failed late may have landed: never delete what it references
            keep = referenced_files(catalog.load_table(identifier))
        except Exception:  # noqa: BLE001 - catalog unreachable: debris beats a broken table
            keep = None
        if keep is not None:
            recorder.delete_written(keep)
        if created:
            _drop_if_empty(catalog, identifier)
        if _disk_full(e):
            snap = table.current_snapshot()
            raise dg.Failure(
                f"no space left on device writing {identifier}: the table stays at "
                f"snapshot {snap.snapshot_id if snap else None} and this write's "
                f"{len(recorder.written)} files were removed; free space and re-run",
                metadata={"table": identifier, "files_removed": len(recorder.written)},
                allow_retries=False,  # someone must free space first
            ) from e
        if isinstance(e, ValidationException):  # pyiceberg's rebase found a conflict
            raise dg.Failure(
                f"a concurrent write to {identifier} committed first and conflicts with "
                "this one: this write was discarded (its files removed), the other's "
                f"snapshot stands; re-run to rebuild on top of it ({e})",
                metadata={"table": identifier},
            ) from e
        raise
    finally:
        table.io = recorder.inner


def _drop_if_empty(catalog: Catalog, identifier: str) -> None:
    """Drop a table that has no snapshot (its first write failed), with its metadata."""
    try:
        table = catalog.load_table(identifier)
        if table.current_snapshot() is None:
            catalog.drop_table(identifier)
            table.io.delete(table.metadata_location)
    except Exception:  # noqa: BLE001 - best effort: the write's own error matters more
        pass


def _disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and (
        error.errno == errno.ENOSPC or "No space left on device" in str(error)
    )


class _RecordingIO(FileIO):
    """The table's FileIO, remembering every file opened for writing."""

    def __init__(self, inner: FileIO):
        super().__init__(inner.properties)
        self.inner = inner
        self.written: list[str] = []

    def new_input(self, location: str) -> InputFile:
        return self.inner.new_input(location)

    def new_output(self, location: str) -> OutputFile:
        self.written.append(location)
        return self.inner.new_output(location)

    def delete(self, location: str | InputFile | OutputFile) -> None:
        self.inner.delete(location)

    def delete_written(self, keep: set[str]) -> None:
        for location in self.written:
            if to_local_path(location) in keep:
                continue
            try:
                self.inner.delete(location)
            except (FileNotFoundError, OSError):
                pass  # never created, or already gone

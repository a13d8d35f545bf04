"""Reading an Iceberg table's current snapshot: its data files (planned by pyiceberg, never
delete files), streamed a file at a time or opened as one Arrow dataset through the table's
own FileIO (local disk or S3 with the catalog's settings), and local paths for DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote, urlparse

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import DataScan, Table

from ..contracts.sources import LOADED_AT, LOADED_AT_ALIASES
from ..partitions import Window

ALL_ROWS = AlwaysTrue()


def to_local_path(uri: str) -> str:
    """Iceberg stores ``file://`` URIs; DuckDB and pyarrow want a plain path for local files."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def window_filter(window: Window | None) -> BooleanExpression:
    """The Iceberg filter of a window's rows; all rows without one."""
    return window.iceberg_filter() if window is not None else ALL_ROWS


def current_data_files(table: Table, row_filter: BooleanExpression) -> list[str]:
    """Locations of the current snapshot's data files that may hold ``row_filter``'s rows."""
    return scan_files(table.scan(row_filter=row_filter), table_name(table))


def scan_files(scan: DataScan, name: str) -> list[str]:
    files = []
    for task in scan.plan_files():
        if task.delete_files:
            raise dg.Failure(f"{name} has delete files; Asgard writes copy-on-write only")
        files.append(task.file.file_path)
    return files


def stream_scan(scan: DataScan, name: str, io: FileIO, columns: Sequence[str] = ()):
    """The scan's rows (only ``columns``, when given), a file at a time. pyiceberg's own
    batch reader reads every file of the scan at once on its thread pool, so its memory
    grows with the table."""
    schema = scan.table_metadata.schema().as_arrow()
    dataset = open_dataset(schema, scan_files(scan, name), getattr(io, "inner", io), name)
    scanner = dataset.scanner(
        columns=list(columns) or None, batch_readahead=2, fragment_readahead=1
    )
    return scanner.to_reader()


def table_name(table: Table) -> str:
    return ".".join(table.name())


def table_dataset(table: Table, files: list[str]) -> ds.Dataset:
    """``files`` of ``table`` as one Arrow dataset, opened with the filesystem pyiceberg built
    from the catalog's properties (S3 endpoint, credentials, region)."""
    return open_dataset(table.schema().as_arrow(), files, table.io, table_name(table))


def open_dataset(schema: pa.Schema, files: list[str], io: FileIO, name: str) -> ds.Dataset:
    if not files:
        return ds.dataset([], schema=schema, format="parquet")
    if not isinstance(io, PyArrowFileIO):
        raise dg.Failure(
            f"{name} is read with {type(io).__name__}; Asgard reads through "
            "pyiceberg's PyArrowFileIO (remove py-io-impl from the catalog properties)"
        )
    scheme, netloc, _ = io.parse_location(files[0])
    paths = [io.parse_location(f)[2] for f in files]
    return ds.dataset(
        paths, schema=schema, format="parquet", filesystem=io.fs_by_scheme(scheme, netloc)
    )


def loaded_at_alias(table: Table) -> str:
    """A bronze table another loader wrote (Airbyte) shows its load time as Asgard's."""
    names = {f.name for f in table.schema().fields}
    if LOADED_AT in names:
        return ""
    alias = next((a for a in LOADED_AT_ALIASES if a in names), None)
    return f", {alias} AS {LOADED_AT}" if alias else ""


def table_filesystem(table: Table) -> tuple[pafs.FileSystem, str]:
    """The filesystem of the table's location, as pyiceberg's FileIO configured it (S3
    endpoint and credentials from the catalog properties), and the location's path in it."""
    io = table.io if isinstance(table.io, PyArrowFileIO) else PyArrowFileIO(table.io.properties)
    scheme, netloc, path = PyArrowFileIO.parse_location(table.location())
    return io.fs_by_scheme(scheme, netloc), path


def strip_scheme(uri: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key`` (how pyarrow's filesystems name files)."""
    parsed = urlparse(uri)
    return f"{parsed.netloc}{parsed.path}" if parsed.scheme not in ("", "file") else uri

"""Iceberg data files from a stream of Arrow batches: Parquet row groups encoded on a
thread while the next one is read, files closed at the table's target size on disk, each
described (field ids, column statistics) as pyiceberg's own ``write_file`` does.
``write_stream`` commits them as pyiceberg's ``overwrite``/``append`` would; the lakehouse
wraps it in write-audit-publish and undo-on-failure."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import BooleanExpression
from pyiceberg.io import FileIO, InputFile, OutputFile
from pyiceberg.io.fileformat import FileFormatFactory, FileFormatWriter
from pyiceberg.io.pyarrow import (
    ParquetFormatWriter,
    _check_pyarrow_schema_compatible,
    _to_requested_schema,
    bin_pack_record_batches,
    pyarrow_to_schema,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import sanitize_column_names
from pyiceberg.table import (
    DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE,
    TableProperties,
    Transaction,
    WriteTask,
)
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation
from pyiceberg.typedef import Record
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_int

# One data file per this many bytes on disk. Dictionary pages stop at 64 KiB: a
# column with more distinct values (ids, timestamps) falls back to plain encoding early
# instead of hashing 2 MiB of values per row group first (pyiceberg's default), which
# halved the encoding time and the file size in bench/ingest.py. Tables created before
# these properties existed get them as write defaults.
TABLE_PROPERTIES = {
    "write.target-file-size-bytes": str(32 * 1024 * 1024),
    "write.parquet.dict-size-bytes": str(64 * 1024),
}
# Arrow bytes per Parquet row group: a write holds about two of them (see _encoded_files)
ROW_GROUP_BYTES = 8 * 1024 * 1024
# A column gets a dictionary when its distinct values are at most this share of the rows of
# the write's first row group. On near-unique columns (ids, timestamps) Arrow hashes values
# until the dictionary page is full and then falls back to plain anyway, in every row group
# (parquet-mr drops a dictionary that does not pay off; Arrow has no such check): bench/
# ingest.py's work orders encoded with 40 % less CPU into 40 % smaller files without them.
DICTIONARY_MAX_DISTINCT = 0.1


def write_stream(
    txn: Transaction,
    io: FileIO,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    mode: str,
    overwrite_filter: BooleanExpression,
    props: dict[str, str],
) -> None:
    """``Transaction.overwrite``/``append`` of a stream, as pyiceberg does them (the same
    checks, deletes and one append snapshot), with the data files from ``_encoded_files``."""
    meta = txn.table_metadata
    if not meta.spec().is_unpartitioned():
        raise NotImplementedError(
            "Asgard streams its writes, and pyiceberg cannot stream into a partitioned table"
        )
    _check_pyarrow_schema_compatible(
        meta.schema(),
        provided_schema=schema,
        downcast_ns_timestamp_to_us=_downcast_ns(),
        format_version=meta.format_version,
    )
    if mode == "overwrite":
        with warnings.catch_warnings():  # nothing to replace yet (a first load) is expected
            warnings.filterwarnings("ignore", message="Delete operation did not match any")
            txn.delete(
                overwrite_filter,
                snapshot_properties=props,
                _isolation_operation=Operation.OVERWRITE,
            )
    with txn._append_snapshot_producer(props) as append:  # as Transaction.append does
        for data_file in _encoded_files(txn, io, batches, schema, append.commit_uuid):
            append.append_data_file(data_file)


def _encoded_files(
    txn: Transaction,
    io: FileIO,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    write_uuid: uuid.UUID,
) -> list[DataFile]:
    """The stream as data files of the table's target size, written a row group at a time
    on a thread while the next row group is read (pyarrow and the source reader release the
    GIL). The read waits while a row group is being encoded: memory stays about two row
    groups, however long the stream. (pyiceberg's own streamed write holds a whole file per
    task and hands its pool every task at once, so its memory grows with the stream whenever
    reading outpaces encoding.)"""
    meta = txn.table_metadata
    meta = meta.model_copy(update={"properties": {**TABLE_PROPERTIES, **meta.properties}})
    files = _DataFiles(meta, io, schema, write_uuid)
    with ThreadPoolExecutor(1, thread_name_prefix="asgard-encode") as encoder:
        encoding = None
        try:
            for group in bin_pack_record_batches(batches, min(ROW_GROUP_BYTES, files.target)):
                if encoding is not None:
                    encoding.result()
                encoding = encoder.submit(files.write, group)
            if encoding is not None:
                encoding.result()
        except BaseException:
            if encoding is not None:  # the write's cleanup must find the file complete
                with suppress(BaseException):
                    encoding.result()
            files.abort()
            raise
    files.close()
    return files.written


class _DataFiles:
    """Data files written row group by row group, each closed once its encoded size reaches
    the table's target size (Iceberg's meaning of ``write.target-file-size-bytes``; counted
    in Arrow bytes, files came out 3-6x smaller and maintenance took every large table's
    files for small ones and rewrote it). Named, laid out and described (schema with field
    ids, column statistics) as pyiceberg's ``write_file`` does; only the row groups differ."""

    def __init__(self, meta: TableMetadata, io: FileIO, schema: pa.Schema, write_uuid: uuid.UUID):
        self.meta, self.io, self.write_uuid = meta, io, write_uuid
        self.target = property_as_int(
            meta.properties,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
        )
        self.file_format = FileFormat(
            meta.properties.get(
                TableProperties.WRITE_FILE_FORMAT, TableProperties.WRITE_FILE_FORMAT_DEFAULT
            )
        )
        self.format_model = FileFormatFactory.get(self.file_format)
        self.locations = load_location_provider(meta.location, meta.properties)
        self.file_schema = sanitize_column_names(meta.schema())
        # pyiceberg's setting, read from its config file: once per write, not per batch
        self.downcast_ns = _downcast_ns()
        self.task_schema = pyarrow_to_schema(
            schema,
            name_mapping=meta.schema().name_mapping,
            downcast_ns_timestamp_to_us=self.downcast_ns,
            format_version=meta.format_version,
        )
        self.written: list[DataFile] = []
        self._writer: FileFormatWriter | None = None
        self._path = ""
        self._output: _MeasuredOutput | None = None
        self._dictionary: list[str] | bool | None = None  # decided on the first row group

    def write(self, batches: list[pa.RecordBatch]) -> None:
        """One row group, into the current file (a new one when none is open)."""
        rows = [
            _to_requested_schema(
                requested_schema=self.file_schema,
                file_schema=self.task_schema,
                batch=batch,
                downcast_ns_timestamp_to_us=self.downcast_ns,
                include_field_ids=True,
                format_model=self.format_model,
            )
            for batch in batches
        ]
        group = pa.Table.from_batches(rows)
        if self._writer is None:
            self._open(group)
        self._writer.write(group)
        if self._output.written() >= self.target:
            self.close()

    def _open(self, group: pa.Table) -> None:
        name = WriteTask(self.write_uuid, len(self.written), self.task_schema, [])
        self._path = self.locations.new_data_location(
            name.generate_data_file_filename(self.format_model.file_extension())
        )
        self._output = _MeasuredOutput(self.io.new_output(self._path))
        self._writer = self.format_model.create_writer(
            self._output, self.file_schema, self.meta.properties
        )
        if isinstance(self._writer, ParquetFormatWriter):
            if self._dictionary is None:
                self._dictionary = dictionary_columns(group)
            # pyiceberg has no per-column dictionary property (nor has Iceberg)
            self._writer._parquet_writer_kwargs["use_dictionary"] = self._dictionary

    def close(self) -> None:
        """Finish the current file, if one is open."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        statistics = writer.close()
        self.written.append(
            DataFile.from_args(
                content=DataFileContent.DATA,
                file_path=self._path,
                file_format=self.file_format,
                partition=Record(),
                file_size_in_bytes=len(self._output),
                sort_order_id=None,
                spec_id=self.meta.default_spec_id,
                equality_ids=None,
                key_metadata=None,
                **statistics.to_serialized_dict(),
            )
        )

    def abort(self) -> None:
        """Close the current file without describing it (the write failed)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with suppress(Exception):
                writer.close()


class _MeasuredOutput(OutputFile):
    """An output file that keeps the stream it opened, to tell how many bytes are written."""

    def __init__(self, inner: OutputFile):
        super().__init__(inner.location)
        self.inner = inner
        self.stream = None

    def __len__(self) -> int:
        return len(self.inner)

    def exists(self) -> bool:
        return self.inner.exists()

    def to_input_file(self) -> InputFile:
        return self.inner.to_input_file()

    def create(self, overwrite: bool = False):
        self.stream = self.inner.create(overwrite=overwrite)
        return self.stream

    def written(self) -> int:
        return self.stream.tell() if self.stream is not None else 0


def dictionary_columns(group: pa.Table) -> list[str] | bool:
    """The columns of ``group`` (a write's first row group) worth a dictionary; True (every
    column, Arrow's default) when one is nested (``use_dictionary`` names leaf paths)."""
    if any(pa.types.is_nested(field.type) for field in group.schema):
        return True
    most = DICTIONARY_MAX_DISTINCT * group.num_rows
    return [
        name
        for name, column in zip(group.column_names, group.columns, strict=True)
        if pc.count_distinct(column, mode="all").as_py() <= most
    ]


def _downcast_ns() -> bool:
    return Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False

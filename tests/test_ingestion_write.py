"""How a stream lands in Iceberg (Lakehouse.write): data files of the table's target size,
written a row group at a time while the stream is read, in one append snapshot; the read
never runs more than two row groups ahead of the writer; a stream failing midway leaves
the table at its snapshot and no files."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.expressions import EqualTo

from asgard_assets.maintenance.iceberg import small_files as small_file_count
from asgard_assets.resources import data_files
from asgard_assets.resources.lakehouse import IcebergLakehouse
from asgard_assets.resources.table_reads import to_local_path

TABLE = "bronze.stream"
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
BATCH_ROWS = 1_000


def batch(i: int) -> pa.RecordBatch:
    ids = pa.array(range(i * BATCH_ROWS, (i + 1) * BATCH_ROWS), pa.int64())
    names = pa.array([f"name-{n % 97}" for n in ids.to_pylist()], pa.string())
    return pa.RecordBatch.from_arrays([ids, names], schema=SCHEMA)


BATCH_BYTES = batch(0).nbytes


TARGET = 4 * BATCH_BYTES  # a file's size on disk: many encoded row groups
FILES_3 = 200  # batches: about three files (a row group of 4 batches encodes to ~5 KB)


@pytest.fixture
def small_files(monkeypatch):
    """Row groups of 4 batches and a small target file size, so that a short stream spans
    several files."""
    row_group = 4 * BATCH_BYTES
    monkeypatch.setattr(data_files, "ROW_GROUP_BYTES", row_group)
    properties = {**data_files.TABLE_PROPERTIES}
    properties["write.target-file-size-bytes"] = str(TARGET)
    monkeypatch.setattr(data_files, "TABLE_PROPERTIES", properties)
    return row_group


def reader(batches) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(SCHEMA, batches)


def test_a_stream_lands_as_files_of_row_groups_in_one_snapshot(home, small_files):
    lh = IcebergLakehouse()
    result = lh.write(TABLE, reader(batch(i) for i in range(FILES_3)), mode="overwrite")

    table = lh.table(TABLE)
    assert result.rows_written == result.total_rows == FILES_3 * BATCH_ROWS
    assert len(table.snapshots()) == 1
    assert sorted(table.scan().to_arrow()["id"].to_pylist()) == list(range(FILES_3 * BATCH_ROWS))
    files = sorted(
        (task.file for task in table.scan().plan_files()), key=lambda f: f.file_size_in_bytes
    )
    assert len(files) >= 2
    # each file is closed with the row group that takes it to the target size on disk
    # (Iceberg's meaning of the property), the last one possibly short of it
    assert all(f.file_size_in_bytes >= TARGET for f in files[1:])
    assert small_file_count(table, TARGET) <= 1  # nothing for maintenance to compact
    for f in files:
        meta = pq.ParquetFile(to_local_path(f.file_path)).metadata
        assert meta.num_rows == f.record_count
        assert f.file_size_in_bytes == os.path.getsize(to_local_path(f.file_path))
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        assert all(g.num_rows == 4 * BATCH_ROWS for g in groups[:-1])
        before_last = sum(g.column(c).total_compressed_size for g in groups[:-1] for c in (0, 1))
        assert before_last < TARGET
        # Iceberg field ids in the file, as pyiceberg writes them
        assert meta.schema.to_arrow_schema().field("id").metadata[b"PARQUET:field_id"] == b"1"
    # each file's column bounds are right: a lookup by id plans the one file holding it
    lookup = table.scan(row_filter=EqualTo("id", 25_000))
    assert len(list(lookup.plan_files())) == 1
    assert lookup.to_arrow()["name"].to_pylist() == [f"name-{25_000 % 97}"]


def test_the_read_stays_at_most_two_row_groups_ahead_of_the_writer(home, small_files, monkeypatch):
    written = []  # batches in finished row groups
    write = data_files._DataFiles.write

    def counted(self, batches):
        write(self, batches)
        written.append(len(batches))

    monkeypatch.setattr(data_files._DataFiles, "write", counted)
    ahead = []

    def stream():
        for i in range(60):
            ahead.append(i - sum(written))  # batches read but not yet written
            yield batch(i)

    IcebergLakehouse().write(TABLE, reader(stream()), mode="overwrite")
    assert sum(written) == 60
    assert max(ahead) <= 2 * 4  # the row group being written and the one being read


def test_a_stream_failing_midway_leaves_the_table_and_no_files(home, small_files):
    lh = IcebergLakehouse()
    lh.write(TABLE, reader(batch(i) for i in range(3)), mode="overwrite")
    before = lh.snapshot_id(TABLE)

    def failing():
        yield from (batch(i) for i in range(FILES_3))  # several files' worth
        raise OSError("source connection lost")

    with pytest.raises(OSError, match="source connection lost"):
        lh.write(TABLE, reader(failing()), mode="overwrite")
    assert lh.snapshot_id(TABLE) == before
    assert lh.table(TABLE).scan().to_arrow().num_rows == 3 * BATCH_ROWS
    assert [f for f in lh.orphan_files(TABLE) if f.endswith(".parquet")] == []


def test_an_overwrite_makes_the_snapshots_pyiceberg_makes(home, small_files):
    """A streamed overwrite of a table holding rows: the same snapshot operations as
    pyiceberg's own ``Table.overwrite``."""
    lh = IcebergLakehouse()
    for _ in range(2):
        lh.write(TABLE, reader(batch(i) for i in range(20)), mode="overwrite")
    ours = [s.summary.operation for s in lh.table(TABLE).snapshots()]

    other = lh.catalog().create_table("bronze.reference", SCHEMA)
    for _ in range(2):
        other.overwrite(pa.Table.from_batches([batch(i) for i in range(20)]))
    assert ours == [s.summary.operation for s in other.snapshots()]


def _encodings(table, column: str) -> set[str]:
    found = set()
    for task in table.scan().plan_files():
        meta = pq.ParquetFile(to_local_path(task.file.file_path)).metadata
        index = meta.schema.names.index(column)
        for g in range(meta.num_row_groups):
            found |= set(meta.row_group(g).column(index).encodings)
    return found


def test_only_columns_with_few_distinct_values_get_a_dictionary(home, small_files):
    """Judged on the write's first row group, for every file of the write: near-unique ids
    are plain-encoded (no dictionary built and dropped per row group), names with 97
    values are dictionary-encoded. A nested column keeps Arrow's default (all)."""
    lh = IcebergLakehouse()
    lh.write(TABLE, reader(batch(i) for i in range(FILES_3)), mode="overwrite")
    table = lh.table(TABLE)
    assert len(list(table.scan().plan_files())) >= 2
    assert "RLE_DICTIONARY" in _encodings(table, "name")
    assert "RLE_DICTIONARY" not in _encodings(table, "id")

    nested = pa.table({"id": [1, 2, 3], "tags": [["a"], ["b", "c"], []]})
    assert data_files.dictionary_columns(nested) is True
    lh.write("bronze.nested", pa.RecordBatchReader.from_batches(nested.schema, nested.to_batches()))
    assert lh.table("bronze.nested").scan().to_arrow()["tags"].to_pylist() == [
        ["a"],
        ["b", "c"],
        [],
    ]

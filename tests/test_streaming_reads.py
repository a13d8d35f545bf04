"""Reads whose memory must not grow with the table: a table's rows and a write's staged rows
come a file at a time, and every DuckDB connection spills under ASGARD_HOME past its limit."""

import pyarrow as pa

from asgard_assets.resources import resource
from asgard_assets.resources.duckdb_bounds import DUCKDB_MEMORY, bounded_duckdb
from asgard_assets.resources.write_audit import Staged

TABLE = "bronze.stream_probe"


def _batch(ids: range, extra: bool = False) -> pa.RecordBatchReader:
    columns = {"id": pa.array(list(ids), pa.int64()), "v": pa.array([f"v{i}" for i in ids])}
    if extra:
        columns["note"] = pa.array([f"n{i}" for i in ids])
    table = pa.table(columns)
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def _sorted(table: pa.Table) -> list[dict]:
    return table.sort_by("id").to_pylist()


def test_rows_are_the_snapshot_rows_across_files_and_schema_versions(home):
    lakehouse = resource("lakehouse")
    lakehouse.write(TABLE, _batch(range(0, 100)), mode="overwrite")
    lakehouse.write(TABLE, _batch(range(100, 150)), mode="append")
    lakehouse.write(TABLE, _batch(range(150, 160), extra=True), mode="append")  # evolves
    assert len(lakehouse.current_files(TABLE)) == 3

    got = lakehouse.rows(TABLE).read_all()

    expected = lakehouse.table(TABLE).scan().to_arrow()
    assert got.num_rows == 160
    assert got.schema.names == ["id", "v", "note"]
    assert _sorted(got) == _sorted(expected)
    assert got.column("note").null_count == 150  # the older files' rows have no note


def test_staged_rows_during_a_write_are_the_rows_about_to_be_published(home):
    lakehouse = resource("lakehouse")
    lakehouse.write(TABLE, _batch(range(0, 10)), mode="overwrite")
    seen: list[pa.Table] = []

    def audit(staged: Staged):
        seen.append(staged.rows("id").read_all())
        return []

    lakehouse.write(TABLE, _batch(range(10, 15)), mode="append", audit=audit)

    assert seen[0].schema.names == ["id"]
    assert sorted(seen[0].column("id").to_pylist()) == list(range(15))


def test_duckdb_connections_spill_under_asgard_home_past_their_limit(home):
    lakehouse = resource("lakehouse")
    lakehouse.write(TABLE, _batch(range(3)), mode="overwrite")
    limit, temp = lakehouse.query(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')", TABLE
    ).fetchone()
    reference = bounded_duckdb(DUCKDB_MEMORY)
    assert limit == reference.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert temp.startswith(str(home))


def test_connections_share_a_database_but_each_sees_only_its_own_tables(home):
    lakehouse = resource("lakehouse")
    lakehouse.write(TABLE, _batch(range(5)), mode="overwrite")
    before = lakehouse.query(f"SELECT count(*) FROM {TABLE}", TABLE)
    lakehouse.write(TABLE, _batch(range(5, 8)), mode="append")
    after = lakehouse.query(f"SELECT count(*) FROM {TABLE}", TABLE)

    # each connection's view of bronze.stream_probe is over the snapshot it attached
    assert before.fetchone()[0] == 5
    assert after.fetchone()[0] == 8
    plain = bounded_duckdb()
    missing = plain.execute(
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'bronze' AND database_name = "
        "current_database()"
    ).fetchone()[0]
    assert missing == 0


def test_a_connection_gone_leaves_no_catalog_behind(home):
    import gc

    lakehouse = resource("lakehouse")
    lakehouse.write(TABLE, _batch(range(3)), mode="overwrite")
    count = "SELECT count(*) FROM duckdb_databases()"
    start = bounded_duckdb().execute(count).fetchone()[0]
    for _ in range(50):
        assert lakehouse.query(f"SELECT count(*) FROM {TABLE}", TABLE).fetchone()[0] == 3
    gc.collect()
    # the 50 connections' catalogs are detached by the next connection
    assert bounded_duckdb().execute(count).fetchone()[0] <= start + 1


def test_connections_in_threads_at_once(home):
    from concurrent.futures import ThreadPoolExecutor

    lakehouse = resource("lakehouse")
    lakehouse.write(TABLE, _batch(range(1000)), mode="overwrite")

    def total(_):
        return lakehouse.query(f"SELECT sum(id) FROM {TABLE}", TABLE).fetchone()[0]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(total, range(64))) == {sum(range(1000))}

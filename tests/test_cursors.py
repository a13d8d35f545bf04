"""Cursors you can trust: ties on updated_at are not missed, a row stamped in the future
neither freezes ingestion nor hides, concurrent loads of one table never append the same
rows twice."""

import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import FOUNDATION, create_source_table, materialize
from test_contract import DAY, checks, material

from asgard_assets import demo_data
from asgard_assets.bronze.contract_checks import bronze_contract_checks
from asgard_assets.partitions import Window
from asgard_assets.resources import lakehouse as lakehouse_module
from asgard_assets.resources import resource
from asgard_assets.resources.bronze_state import bronze_cursor

ASSETS = [*FOUNDATION, *bronze_contract_checks]
MATERIALS = "bronze/materials"
MAT = "bronze.materials"


@pytest.fixture
def source(home, tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    monkeypatch.setenv("ASGARD_SOURCE_URL", url)
    create_source_table(url, "materials", [material(i) for i in range(1, 4)])
    assert materialize(MATERIALS, assets=ASSETS).success
    return url


def insert(url: str, *rows: dict) -> None:
    from asgard_assets import demo_data

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(demo_data.TABLES["materials"].insert(), list(rows))
    engine.dispose()


def bronze() -> list[tuple[str, datetime]]:
    df = resource("lakehouse").table("bronze.materials").scan().to_pandas()
    return sorted(zip(df["material_id"], df["updated_at"], strict=True))


def test_a_row_committed_later_with_the_cursors_timestamp_loads_once(source):
    cursor = DAY + timedelta(minutes=3)
    assert bronze_cursor(resource("lakehouse"), "bronze.materials") == cursor
    insert(source, material(4, updated_at=cursor))  # same timestamp, committed later
    assert materialize(MATERIALS, assets=ASSETS).success
    assert ("MAT-4", cursor) in bronze()
    assert len(bronze()) == 4
    assert materialize(MATERIALS, assets=ASSETS).success  # the tie is read again, not loaded
    assert len(bronze()) == len(set(bronze())) == 4


def test_a_row_stamped_in_the_future_is_flagged_and_does_not_freeze_the_cursor(source):
    future = datetime(2999, 1, 1)
    insert(source, material(4, updated_at=future))
    result = materialize(MATERIALS, assets=ASSETS)
    assert result.success
    assert ("MAT-4", future) in bronze()  # no row lost
    check = checks(result)["updated_at_not_in_future"]
    assert not check.passed
    assert check.metadata["future_rows"].value == 1
    assert check.metadata["keys"].value == ["MAT-4"]
    assert check.description == (
        "1 rows of bronze.materials updated after their load (keys ['MAT-4']): loaded, "
        "but the cursor ignores them"
    )
    # the cursor stayed at the last row that was not in the future
    assert bronze_cursor(resource("lakehouse"), "bronze.materials") == DAY + timedelta(minutes=3)
    assert resource("ingestion").source_cursor("materials") == DAY + timedelta(minutes=3)
    later = datetime(2026, 1, 1)
    insert(source, material(5, updated_at=later))
    assert materialize(MATERIALS, assets=ASSETS).success
    assert ("MAT-5", later) in bronze()
    assert len(bronze()) == len(set(bronze())) == 5


def twice_at_once(work, monkeypatch) -> tuple[list, list]:
    """Run ``work`` in two threads whose first writes start their Iceberg transactions
    together (a barrier holds the first to get there): both plan on the same snapshot.
    Returns (results, errors)."""
    barrier = threading.Barrier(2, timeout=60)
    calls = []
    real = lakehouse_module.Table.transaction

    def held_transaction(table):
        calls.append(1)
        if len(calls) <= 2:  # the first attempt of each waits for the other
            barrier.wait()
        return real(table)

    monkeypatch.setattr(lakehouse_module.Table, "transaction", held_transaction)
    results, errors = [], []

    def run():
        try:
            results.append(work())
        except Exception as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_loads_of_one_table_append_each_row_once(source, monkeypatch):
    """Both loads read the same cursor and write their files before either commits: one
    commits, the other's commit fails on the stale snapshot, it deletes its files, reads
    again past the new cursor and appends nothing."""
    insert(
        source, *(material(i, updated_at=DAY + timedelta(days=1, minutes=i)) for i in range(4, 9))
    )
    # separate resources, as two runs in two processes would have
    results, errors = twice_at_once(
        lambda: resource("ingestion").ingest("materials", resource("lakehouse")), monkeypatch
    )
    assert errors == []
    assert sorted(r.write.rows_written for r in results) == [0, 5]
    assert sorted(r.attempts for r in results) == [1, 2]
    assert len(bronze()) == len(set(bronze())) == 8
    lh = resource("lakehouse")
    # the loser removed its data files; a metadata file the catalog wrote for the lost
    # commit may remain, and maintenance removes it without touching the table
    assert not [f for f in lh.orphan_files("bronze.materials") if f.endswith(".parquet")]
    lh.remove_orphan_files("bronze.materials", None)
    assert lh.orphan_files("bronze.materials") == []
    assert len(bronze()) == 8


def test_concurrent_silver_builds_lose_no_commit_and_duplicate_nothing(source, monkeypatch):
    """Two builds of one silver table at once, both planned on the same snapshot: the first
    commit stands, the second is refused with a clear message (pyiceberg finds the conflict
    when it rebases), and the table holds each row once."""
    from asgard_assets.silver.assets import sql_path

    assert materialize("silver/materials", assets=ASSETS).success
    before = len(resource("lakehouse").table("silver.materials").history())
    _, errors = twice_at_once(
        lambda: resource("spark").build(
            sql_path("materials"), "silver.materials", [MAT], resource("lakehouse")
        ),
        monkeypatch,
    )
    (error,) = errors
    assert "a concurrent write to silver.materials committed first" in str(error)
    lh = resource("lakehouse")
    table = lh.table("silver.materials")
    assert len(table.history()) > before  # the first build's commit stands
    assert sorted(table.scan().to_pandas()["material_id"]) == ["MAT-1", "MAT-2", "MAT-3"]
    assert not [f for f in lh.orphan_files("silver.materials") if f.endswith(".parquet")]


def demo_window(column: str) -> Window:
    first = datetime.combine(demo_data.START, datetime.min.time())
    last = first + timedelta(days=demo_data.DAYS)
    return Window(column, first, last, first, last)


def test_concurrent_first_loads_of_a_window_hold_each_row_once(own_source, monkeypatch):
    """Two first loads of one window at once, both planned on a table with no snapshot: the
    first commit stands, the other's commit is refused (it would have replaced nothing and
    left both loads' rows), and it loads again on top of the first, replacing its rows."""
    window = demo_window("event_time")
    results, errors = twice_at_once(
        lambda: resource("ingestion").ingest("machine_logs", resource("lakehouse"), window=window),
        monkeypatch,
    )
    assert errors == []
    assert sorted(r.attempts for r in results) == [1, 2]
    engine = sa.create_engine(own_source)
    with engine.connect() as conn:
        source_rows = conn.execute(sa.text("SELECT count(*) FROM machine_logs")).scalar()
    engine.dispose()
    assert resource("lakehouse").describe("bronze.machine_logs").total_rows == source_rows


def test_concurrent_first_silver_builds_hold_each_key_once(own_source, monkeypatch):
    """Two first builds of one silver table at once: they stream as if the table were empty,
    so the second to commit is refused and builds again on top of the first."""
    from asgard_assets.silver.assets import sql_path

    assert materialize("bronze/machine_logs", assets=ASSETS).success
    results, errors = twice_at_once(
        lambda: resource("spark").build(
            sql_path("machine_logs"),
            "silver.machine_logs",
            ["bronze.machine_logs"],
            resource("lakehouse"),
            demo_window("event_time"),
            key="log_id",
        ),
        monkeypatch,
    )
    assert errors == [] and len(results) == 2
    ids = resource("lakehouse").table("silver.machine_logs").scan().to_arrow()["log_id"]
    assert len(ids) == len(set(ids.to_pylist())) == 24_751


def test_a_catalog_created_by_another_process_meanwhile_opens(home, monkeypatch):
    """Two first opens of a new SQL catalog: both find its tables missing, one creates them,
    the other's CREATE TABLE fails ("already exists"). Opened again, the catalog is there;
    any other database error is raised at once, with its own message."""
    from pyiceberg.catalog.sql import SqlCatalog, SqlCatalogBaseTable

    real = SqlCatalog.create_tables
    creates = []

    def lost_the_race(self):
        creates.append(self)
        real(self)  # the other process's, after this one found the tables missing
        SqlCatalogBaseTable.metadata.create_all(self.engine, checkfirst=False)  # this one's

    monkeypatch.setattr(SqlCatalog, "create_tables", lost_the_race)
    catalog = resource("lakehouse").catalog()
    assert len(creates) == 1  # the second open found the tables
    assert {ns[0] for ns in catalog.list_namespaces()} >= {"bronze", "silver", "gold"}

    def refused(self):
        creates.append(self)
        raise sa.exc.OperationalError("CREATE TABLE iceberg_tables", {}, Exception("disk I/O"))

    monkeypatch.setattr(SqlCatalog, "create_tables", refused)
    monkeypatch.setenv("ASGARD_HOME", str(home.with_name("other")))
    creates.clear()
    with pytest.raises(sa.exc.OperationalError, match="disk I/O"):
        resource("lakehouse").catalog()
    assert len(creates) == 1  # not a lost race: not opened again


def test_a_namespace_created_by_another_process_meanwhile_is_not_an_error(home, monkeypatch):
    """Two first writes into a new catalog: both find the namespace missing, one creates it,
    the other's insert breaks the catalog's unique key. That is the namespace existing, not
    a failure; a create failing while the namespace is still missing stays an error."""
    from pyiceberg.catalog.sql import SqlCatalog

    lakehouse_module.load_catalog(
        lakehouse_module.CATALOG_NAME, **resource("lakehouse").catalog_properties()
    ).create_namespace("bronze")  # the other process's, between the check and the insert
    real = SqlCatalog.namespace_exists
    asked = []

    def missing_when_checked(self, namespace):
        asked.append(namespace)
        return False if len(asked) == 1 else real(self, namespace)

    monkeypatch.setattr(SqlCatalog, "namespace_exists", missing_when_checked)
    catalog = resource("lakehouse").catalog()
    assert asked[:2] == ["bronze", "bronze"]  # pyiceberg's check, then ours after its error
    assert {ns[0] for ns in catalog.list_namespaces()} >= {"bronze", "silver", "gold"}

    def refused(self, namespace, properties=None):
        raise PermissionError("no rights to create a namespace")

    monkeypatch.setattr(SqlCatalog, "create_namespace", refused)
    monkeypatch.setattr(SqlCatalog, "namespace_exists", lambda self, ns: False)
    with pytest.raises(PermissionError, match="no rights"):
        resource("lakehouse").catalog()

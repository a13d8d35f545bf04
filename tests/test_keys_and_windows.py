"""No row lost, none counted twice: partition runs replace by key, rows outside every
partition are kept and reported, and blocking checks judge staged data before it is
published (write-audit-publish)."""

import json
import shutil
from datetime import datetime

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from conftest import materialize
from test_ingestion import failure_message, rows, stable
from test_partitions import evaluate_new_rows, keys

from asgard_assets import demo_data, judged, partitions
from asgard_assets.key_checks import key_stats
from asgard_assets.partitions import range_tags
from asgard_assets.resources import resource
from asgard_assets.silver import assets as silver_module

WO = "bronze/work_orders silver/work_orders"
ML = "bronze/machine_logs silver/machine_logs"
LATER = datetime(2026, 1, 1)
ORDERS = demo_data.TABLES["work_orders"]


@pytest.fixture(params=["sqlite", "postgres"])
def source(request, home, monkeypatch) -> sa.Engine:
    """A private demo source: a SQLite copy, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = request.getfixturevalue("own_source")
    else:
        url = request.getfixturevalue("postgres_url")
        demo_data.load(url)
        monkeypatch.setenv("ASGARD_SOURCE_URL", url)
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def orders(engine: sa.Engine):
    schema = None if engine.dialect.name == "sqlite" else "production"
    return ORDERS.to_metadata(sa.MetaData(), schema=schema)


def source_rows(engine: sa.Engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def checks(result, layer: str) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.path[-1]}.{e.check_name}": e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.path[0] == layer
    }


def once(identifier: str, key: str, value: str) -> pd.DataFrame:
    df = stable(identifier)
    found = df[df[key] == value]
    assert len(found) == 1, found
    return found


def test_readme_backfill_keeps_keys_unique(own_source):
    """The README's backfill example after a full run, the days reloaded (`full_refresh`: an
    unchanged source would skip them): no key twice, every check passes."""
    assert materialize(f"{WO} {ML}").success
    reload = {"config": {"full_refresh": True}}
    result = materialize(
        f"{WO} {ML}",
        tags=range_tags(["2025-03-01", "2025-03-03"]),
        run_config={"ops": {"bronze__work_orders": reload, "bronze__machine_logs": reload}},
    )
    assert result.success
    for step in ("bronze__work_orders", "silver__work_orders", "silver__machine_logs"):
        (mat, *_) = result.asset_materializations_for_node(step)
        assert "skipped" not in mat.metadata, step  # the days were written again
    assert rows("silver.machine_logs") == 24_751 and rows("silver.work_orders") == 14_850
    assert rows("bronze.machine_logs") == 25_000 and rows("bronze.work_orders") == 15_000
    silver = checks(result, "silver")
    assert len(silver) == 6 and all(e.passed for e in silver.values())
    logs = stable("silver.machine_logs")
    assert logs["log_id"].is_unique


def move(engine: sa.Engine, key: str, to: datetime):
    table = orders(engine)
    with engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.work_order_id == key)
            .values(start_time=to, updated_at=LATER)
        )


def test_moved_order_is_once_after_rerunning_its_new_day(source):
    assert materialize(WO).success
    move(source, "WO-000001", datetime(2025, 5, 3, 9))  # it was on 2025-05-01
    assert materialize(WO, partition_key="2025-05-03").success
    for table in ("bronze.work_orders", "silver.work_orders"):
        found = once(table, "work_order_id", "WO-000001")
        assert found["start_time"].iloc[0] == pd.Timestamp("2025-05-03 09:00")
    assert rows("bronze.work_orders") == source_rows(source, orders(source)) == 15_000
    assert rows("silver.work_orders") == 14_850
    # and back to an earlier day, re-running only that day
    move(source, "WO-000001", datetime(2025, 4, 30, 9))
    assert materialize(WO, partition_key="2025-04-30").success
    once("silver.work_orders", "work_order_id", "WO-000001")
    assert rows("bronze.work_orders") == 15_000 and rows("silver.work_orders") == 14_850


def test_rerunning_the_day_a_row_left_keeps_it_on_its_new_day(source):
    """The order moved from 2025-05-01 to 2025-05-03 in the source; re-running only its old
    day brings its row along to the new day instead of dropping it until that day runs."""
    assert materialize(WO).success
    move(source, "WO-000001", datetime(2025, 5, 3, 9))
    result = materialize(WO, partition_key="2025-05-01")
    assert result.success
    for table in ("bronze.work_orders", "silver.work_orders"):
        found = once(table, "work_order_id", "WO-000001")
        assert found["start_time"].iloc[0] == pd.Timestamp("2025-05-03 09:00")
    assert rows("bronze.work_orders") == 15_000 and rows("silver.work_orders") == 14_850
    # and its new day run afterwards changes nothing more
    assert materialize(WO, partition_key="2025-05-03").success
    once("bronze.work_orders", "work_order_id", "WO-000001")
    assert rows("bronze.work_orders") == 15_000 and rows("silver.work_orders") == 14_850


def test_moved_order_is_once_after_the_sensors_runs(own_source):
    from asgard_assets.definitions import defs

    engine = sa.create_engine(own_source)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(WO, instance=instance).success
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert materialize(
        "bronze/machine_logs bronze/quality_checks bronze/materials", instance=instance
    ).success
    move(engine, "WO-000001", datetime(2025, 5, 3, 9))
    (request,) = evaluate_new_rows()
    assert request.partition_key == "2025-05-03"
    assert keys(request) == ["bronze/work_orders", "silver/work_orders"]
    # bronze alone (a person's run): the automation rebuilds that silver day
    assert materialize("bronze/work_orders", partition_key="2025-05-03", instance=instance).success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = result.get_requested_partitions(dg.AssetKey(["silver", "work_orders"]))
    assert requested == {"2025-05-03"}
    assert materialize("silver/work_orders", partition_key="2025-05-03", instance=instance).success
    for table in ("bronze.work_orders", "silver.work_orders"):
        once(table, "work_order_id", "WO-000001")
    assert rows("bronze.work_orders") == 15_000 and rows("silver.work_orders") == 14_850
    engine.dispose()


OUTSIDE = {
    "WO-PENDING-1": None,  # not started yet
    "WO-OLD-1": datetime(2024, 6, 1, 8),  # before the first partition
    "WO-FUTURE-1": datetime(2099, 1, 1, 8),  # past the last one
}


def add_outside_rows(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(
            orders(engine).insert(),
            [
                {
                    "work_order_id": key,
                    "product_id": "PROD-001",
                    "operator_id": "EMP-001",
                    "machine_id": "MCH-01",
                    "status": "pending",
                    "quantity": 5,
                    "start_time": start,
                    "end_time": None,
                    "updated_at": LATER,
                }
                for key, start in OUTSIDE.items()
            ],
        )


def test_rows_outside_the_partitions_are_kept_and_reported(source):
    add_outside_rows(source)
    result = materialize(WO)
    assert result.success
    assert rows("bronze.work_orders") == source_rows(source, orders(source)) == 15_003
    assert rows("silver.work_orders") == 14_853
    silver = stable("silver.work_orders").set_index("work_order_id")
    assert silver.loc["WO-PENDING-1", "quality_flag"] == "VALID"
    assert pd.isna(silver.loc["WO-PENDING-1", "start_time"])
    assert silver.loc[list(OUTSIDE), "status"].eq("pending").all()
    outside = checks(result, "bronze")["work_orders.rows_outside_partitions"]
    assert not outside.passed and outside.severity == dg.AssetCheckSeverity.WARN
    assert outside.metadata["count"].value == 3
    assert set(outside.metadata["sample_keys"].value) == set(OUTSIDE)
    # a one-day run replaces the remainder too: still once each
    assert materialize(WO, partition_key="2025-05-01").success
    assert rows("bronze.work_orders") == 15_003 and rows("silver.work_orders") == 14_853


def test_rows_outside_are_judged_again_when_the_partitions_span_moved(own_source, monkeypatch):
    """A step with nothing to do reports the checks its snapshot was published with, but
    not a count of rows outside the partitions judged against another span of them (the
    bounds set otherwise since, or a live source's last day moved on)."""
    first = materialize("bronze/work_orders")
    assert checks(first, "bronze")["work_orders.rows_outside_partitions"].passed
    # a count recorded before the span was recorded with it is judged again too
    table = resource("lakehouse").table("bronze.work_orders")
    record = json.loads(table.properties[judged.PROPERTY])
    for check in record["checks"]:
        check["metadata"].pop("partitions_span", None)
    with table.transaction() as txn:
        txn.set_properties({judged.PROPERTY: json.dumps(record)})
    again = materialize("bronze/work_orders", partition_key="2025-05-01")
    outside = checks(again, "bronze")["work_orders.rows_outside_partitions"]
    assert outside.metadata["partitions_span"].value == "[2025-01-01, 2025-07-01)"
    monkeypatch.setattr(  # ASGARD_PARTITION_START=2025-02-01 from now on
        partitions,
        "daily",
        lambda: dg.DailyPartitionsDefinition("2025-02-01", end_date="2025-07-01", timezone="UTC"),
    )
    with sa.create_engine(own_source).connect() as conn:
        january = conn.execute(
            sa.text("SELECT count(*) FROM work_orders WHERE start_time < '2025-02-01'")
        ).scalar()
    assert january > 0

    result = materialize("bronze/work_orders", partition_key="2025-05-01")

    (mat,) = result.asset_materializations_for_node("bronze__work_orders")
    assert "skipped" in mat.metadata  # the source's day is unchanged: nothing written
    outside = checks(result, "bronze")["work_orders.rows_outside_partitions"]
    assert not outside.passed
    assert outside.metadata["count"].value == january
    assert outside.metadata["partitions_span"].value == "[2025-02-01, 2025-07-01)"


def test_sensor_brings_rows_outside_the_partitions(own_source):
    assert materialize("bronze/work_orders").success
    add_outside_rows(sa.create_engine(own_source))
    requests = evaluate_new_rows()
    (request,) = [r for r in requests if keys(r) == ["bronze/work_orders", "silver/work_orders"]]
    assert materialize("bronze/work_orders", partition_key=request.partition_key).success
    assert rows("bronze.work_orders") == 15_003


def broken_sql(tmp_path, monkeypatch, *changes: tuple[str, str]):
    """The silver SQL files with rules of work_orders.sql changed."""
    folder = tmp_path / "sql"
    shutil.copytree(silver_module.SQL_DIR, folder)
    path = folder / "work_orders.sql"
    text = path.read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    monkeypatch.setattr(silver_module, "SQL_DIR", folder)


DOUBLED = (
    (
        "FROM bronze.work_orders",
        "FROM (SELECT * FROM bronze.work_orders UNION ALL "
        "SELECT * FROM bronze.work_orders) AS doubled",
    ),
    ("WHERE version_rank = 1", ""),
)
NULL_KEYS = (("WHERE work_order_id IS NOT NULL AND work_order_id <> ''", ""),)


@pytest.mark.parametrize(
    ("changes", "check", "named"),
    [
        (
            DOUBLED,
            "work_order_id_unique",
            "14850 work_order_ids occur more than once (first 10: WO-000001, WO-000002, WO-000003",
        ),
        (NULL_KEYS, "work_order_id_not_null", "2 rows with a NULL or blank work_order_id"),
    ],
    ids=["duplicates", "null-keys"],
)
def test_failed_blocking_check_keeps_the_snapshot(
    own_source, tmp_path, monkeypatch, changes, check, named
):
    assert materialize(WO).success
    before = resource("lakehouse").snapshot_id("silver.work_orders")
    broken_sql(tmp_path, monkeypatch, *changes)
    result = materialize("silver/work_orders", raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert f"silver.work_orders not published, blocking check failed ({check}: {named}" in message
    assert resource("lakehouse").snapshot_id("silver.work_orders") == before
    assert rows("silver.work_orders") == 14_850


def test_key_checks_work_for_integer_keys(home):
    """Keys are compared as text, so an integer key is judged like a string one."""
    lakehouse = resource("lakehouse")
    data = pa.table({"id": pa.array([1, 2, 2, None], pa.int64()), "v": ["a", "b", "c", "d"]})
    seen = {}

    def audit(staged):
        seen["stats"] = key_stats(staged, "id")
        return [dg.AssetCheckResult(asset_key=dg.AssetKey("t"), check_name="ok", passed=True)]

    lakehouse.write("silver.ints", data.to_reader(), audit=audit)
    stats = seen["stats"]
    assert (stats.rows, stats.null_keys, stats.duplicate_keys, stats.duplicate_sample) == (
        4,
        1,
        1,
        ["2"],
    )
    assert lakehouse.describe("silver.ints").total_rows == 4

    def failing(staged):
        return [
            dg.AssetCheckResult(
                asset_key=dg.AssetKey("t"),
                check_name="id_unique",
                passed=False,
                description="1 ids occur more than once",
            )
        ]

    before = lakehouse.snapshot_id("silver.ints")
    with pytest.raises(dg.Failure, match="id_unique: 1 ids occur more than once"):
        lakehouse.write("silver.ints", data.to_reader(), mode="append", audit=failing)
    assert lakehouse.snapshot_id("silver.ints") == before


@pytest.mark.parametrize("first_build", [True, False], ids=["first-build", "rebuild"])
def test_sql_failing_while_it_runs_is_named_and_commits_nothing(
    own_source, tmp_path, monkeypatch, first_build
):
    """A rule that fails on the data (not when parsed or bound) fails the step naming the
    SQL file and DuckDB's message, on a first build (streamed: no table is left behind)
    and on a rebuild (the table stays at its snapshot)."""
    assert materialize(WO if not first_build else "bronze/work_orders").success
    before = resource("lakehouse").snapshot_id("silver.work_orders")
    assert (before is None) == first_build
    # an invalid regular expression built from each row's value: DuckDB finds it running
    broken_sql(
        tmp_path,
        monkeypatch,
        (
            "UPPER(TRIM(CAST(machine_id AS STRING))) AS machine_id",
            "REGEXP_EXTRACT(machine_id, CONCAT('(', machine_id), 0) AS machine_id",
        ),
    )
    result = materialize("silver/work_orders", raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "work_orders.sql failed in DuckDB: Invalid Input Error: missing ): (" in message
    assert resource("lakehouse").snapshot_id("silver.work_orders") == before
    assert resource("lakehouse").exists("silver.work_orders") != first_build


def test_a_reversed_day_range_is_refused_by_name_and_writes_nothing(own_source):
    """`--partition-range 2025-03-03...2025-03-01` (first day after the last): Dagster runs
    it; its window would hold no row and the run would succeed having done nothing."""
    reversed_days = {
        "dagster/asset_partition_range_start": "2025-03-03",
        "dagster/asset_partition_range_end": "2025-03-01",
    }
    result = materialize(WO, tags=reversed_days, raise_on_error=False)
    assert not result.success
    assert (
        "the partition range 2025-03-03...2025-03-01 is reversed (its first day is after its "
        "last): did you mean 2025-03-01...2025-03-03?" in failure_message(result)
    )
    lakehouse = resource("lakehouse")
    assert lakehouse.snapshot_id("bronze.work_orders") is None
    assert lakehouse.snapshot_id("silver.work_orders") is None

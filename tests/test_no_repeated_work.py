"""No repeated work: a step whose inputs did not change notices it and does nothing else."""

import json
import sqlite3

import pyarrow as pa
from conftest import journey_assets, materialize

from asgard_assets.built_from import PROPERTY
from asgard_assets.partitions import range_tags
from asgard_assets.resources import resource

GOLD = "gold.operator_features"
GOLD_STEP = "bronze/work_orders silver/work_orders gold/operator_features"


def _gold_output(result):
    mats = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path == ["gold", "operator_features"]
    ]
    assert len(mats) == 1
    return mats[0].step_materialization_data.materialization


def _dbt_tests(result) -> list:
    return [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.step_key == "gold_dbt_assets"
    ]


def test_gold_skips_dbt_when_silver_is_unchanged_and_rebuilds_when_it_changed(home):
    assets = journey_assets()
    first = materialize(GOLD_STEP, assets=assets)
    assert first.success
    tested = {e.check_name: e.passed for e in _dbt_tests(first)}
    assert len(tested) == 10 and all(tested.values())
    lakehouse = resource("lakehouse")
    built = lakehouse.snapshot_id(GOLD)

    again = materialize("gold/operator_features", assets=assets)
    assert again.success
    mat = _gold_output(again)
    assert "skipped" in mat.metadata
    assert mat.tags["dagster/data_version"] == str(built)
    assert lakehouse.snapshot_id(GOLD) == built  # dbt did not write
    # dbt's tests did not run again: their results from the build of this snapshot are
    # reported, as bronze's and silver's skipped steps report theirs
    reported = _dbt_tests(again)
    assert {e.check_name: e.passed for e in reported} == tested
    assert {e.metadata["judged_on_snapshot"].value for e in reported} == {str(built)}

    # dbt run again on the same silver (the record of what gold was built from lost): the
    # same rows, so nothing is committed; gold's snapshot, its data version, stays, and the
    # feature view and the model downstream see no change
    with lakehouse.table(GOLD).transaction() as txn:
        txn.set_properties({PROPERTY: json.dumps({"snapshot_id": 0, "inputs": "lost"})})
    same = materialize("gold/operator_features", assets=assets)
    mat = _gold_output(same)
    # dbt ran, and the step says it changed nothing (`asgard demo` prints `same`)
    assert mat.metadata["skipped"].value == (
        f"dbt built gold/operator_features with the same rows as snapshot {built}: "
        "nothing committed"
    )
    assert lakehouse.snapshot_id(GOLD) == built
    assert mat.tags["dagster/data_version"] == str(built)

    # a new silver snapshot (one changed day rebuilt): dbt runs again, gold gets a new snapshot
    with sqlite3.connect(home / "demo_factory.sqlite") as source:
        source.execute(
            "UPDATE work_orders SET quantity = quantity + 1, updated_at = '2025-07-02 00:00:00' "
            "WHERE work_order_id = (SELECT min(work_order_id) FROM work_orders "
            "WHERE start_time >= '2025-03-01' AND start_time < '2025-03-02')"
        )
    day = "bronze/work_orders silver/work_orders"
    assert materialize(day, assets=assets, partition_key="2025-03-01").success
    rebuilt = materialize("gold/operator_features", assets=assets)
    mat = _gold_output(rebuilt)
    assert "skipped" not in mat.metadata
    assert lakehouse.snapshot_id(GOLD) != built
    assert mat.tags["dagster/data_version"] == str(lakehouse.snapshot_id(GOLD))
    # dbt's parse state is kept in this home for the next build; no invocation folders left
    assert (home / "dbt" / "partial_parse.msgpack").stat().st_size > 0
    assert not list((home / "dbt").glob("target-*"))


def _snapshots(lakehouse) -> dict[str, int]:
    catalog = lakehouse.catalog()
    return {
        ".".join(ident): lakehouse.snapshot_id(".".join(ident))
        for ns in ("bronze", "silver", "gold")
        for ident in catalog.list_tables(ns)
    }


def test_an_unchanged_rerun_writes_nothing_and_one_changed_day_only_that_day(own_source):
    """Bronze, silver and gold notice that nothing changed; a change on one day reloads the
    partitioned tables only through that day's window, and what depends on them."""
    import sqlalchemy as sa

    selection = (
        "bronze/work_orders silver/work_orders bronze/materials silver/materials "
        "gold/operator_features"
    )
    assets = journey_assets()
    assert materialize(selection, assets=assets).success
    lakehouse = resource("lakehouse")
    first = _snapshots(lakehouse)

    again = materialize(selection, assets=assets)
    assert again.success
    assert _snapshots(lakehouse) == first  # not one new snapshot
    skipped = {
        m.asset_key.to_user_string()
        for m in again.get_asset_materialization_events()
        if "skipped" in m.step_materialization_data.materialization.metadata
    }
    assert {"bronze/work_orders", "silver/work_orders", "gold/operator_features"} <= skipped
    # every check still has its result on the skipped steps: the verdicts the snapshot was
    # published with, not judged again
    checks = {
        (
            e.asset_check_evaluation_data.asset_key.to_user_string(),
            e.asset_check_evaluation_data.check_name,
        ): e.asset_check_evaluation_data
        for e in again.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    unique = checks[("silver/work_orders", "work_order_id_unique")]
    assert unique.passed
    assert unique.metadata["judged_on_snapshot"].value == str(first["silver.work_orders"])
    assert unique.metadata["count"].value == 0
    rows = checks[("bronze/work_orders", "row_count_positive")]
    assert rows.metadata["judged_on_snapshot"].value == str(first["bronze.work_orders"])
    assert rows.metadata["rows"].value == 15_000

    # a few days inside the range just built, nothing changed: silver's rows there are what
    # the whole range wrote from this bronze snapshot (no rebuild, so gold keeps its snapshot)
    days = materialize(
        "bronze/work_orders silver/work_orders gold/operator_features",
        assets=assets,
        tags=range_tags(["2025-03-01", "2025-03-03"]),
    )
    assert days.success
    assert _snapshots(lakehouse) == first
    silver = days.asset_materializations_for_node("silver__work_orders")
    assert len(silver) == 3 and all("skipped" in m.metadata for m in silver)

    engine = sa.create_engine(own_source)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE work_orders SET status = 'cancelled', updated_at = '2025-07-02 00:00:00' "
                "WHERE work_order_id = 'WO-000001'"
            )
        )
    engine.dispose()
    day = materialize(
        "bronze/work_orders silver/work_orders gold/operator_features",
        assets=assets,
        partition_key=_day_of(lakehouse, "WO-000001"),
    )
    assert day.success
    now = _snapshots(lakehouse)
    changed = {t for t in now if now[t] != first[t]}
    assert changed == {"bronze.work_orders", "silver.work_orders", "gold.operator_features"}


def _day_of(lakehouse, work_order_id: str) -> str:
    (day,) = lakehouse.query(
        f"SELECT CAST(start_time AS DATE) FROM bronze.work_orders "
        f"WHERE work_order_id = '{work_order_id}'",
        "bronze.work_orders",
    ).fetchone()
    return day.isoformat()


def test_a_build_covers_the_same_inputs_over_the_days_inside_its_window_only():
    """What silver's skip trusts: the same code and bronze snapshot, over the recorded window
    or days inside it with the same partitions (so the same remainder); nothing else."""
    from datetime import datetime

    from asgard_assets.built_from import covers, inputs
    from asgard_assets.partitions import Window

    class Snapshots:  # the one thing inputs() asks a lakehouse
        def __init__(self, snapshot: int):
            self.snapshot = snapshot

        def snapshot_id(self, identifier: str) -> int:
            return self.snapshot

    def window(start: int, end: int, last: int = 7) -> Window:
        day = lambda d: datetime(2025, 7, d)  # noqa: E731
        return Window("start_time", day(start), day(end), day(1), day(last))

    def built(start=1, end=7, snapshot=1, code="a", last=7) -> str:
        return inputs(Snapshots(snapshot), code, ["bronze.work_orders"], window(start, end, last))

    whole = built()
    assert covers(whole, whole)
    assert covers(whole, built(3, 5)) and covers(whole, built(1, 2)) and covers(whole, built(6, 7))
    assert not covers(built(3, 5), whole)  # more days than were built
    assert not covers(built(1, 4), built(3, 6))  # overlapping only
    assert not covers(whole, built(3, 5, snapshot=2))  # bronze moved
    assert not covers(whole, built(3, 5, code="b"))  # the SQL changed
    assert not covers(built(1, 7, last=8), built(3, 5))  # another remainder
    assert not covers(None, whole)
    old = '{"code": "a", "sources": {"bronze.work_orders": 1}, "window": "start_time in [...)"}'
    assert not covers(old, built(3, 5))  # a record from before windows were spans
    unpartitioned = inputs(Snapshots(1), "a", ["bronze.materials"])
    assert covers(unpartitioned, unpartitioned) and not covers(unpartitioned, whole)


def test_a_rebuild_is_the_same_only_with_the_same_columns_types_and_rows():
    from asgard_assets.gold.dbt_iceberg_plugin import same_rows

    new = pa.table({"k": ["a", "b", None], "v": pa.array([1, 2, None], pa.int32())})
    # read back from Iceberg: other row order, large strings
    back = pa.table({"k": pa.array([None, "b", "a"], pa.large_string()), "v": [None, 2, 1]})
    assert same_rows(back.cast(pa.schema([("k", pa.large_string()), ("v", pa.int32())])), new)
    assert not same_rows(new.cast(pa.schema([("k", pa.string()), ("v", pa.int64())])), new)
    assert not same_rows(new.select(["v", "k"]), new)  # columns reordered
    assert not same_rows(new.slice(0, 2), new)
    changed = pa.table({"k": ["a", "b", None], "v": pa.array([1, 3, None], pa.int32())})
    assert not same_rows(changed, new)
    lists = pa.table({"k": [[1], [2]]})  # cannot be sorted: written, not compared
    assert not same_rows(lists, lists)


def test_a_row_that_does_not_fit_does_not_make_its_window_load_again(own_source):
    """A source row whose start time is not a date (SQLite) goes to the quarantine, never
    to bronze, and falls outside every day: a day run again with nothing changed still
    finds bronze up to date, and the quarantine holds the row once."""
    with sqlite3.connect(own_source.removeprefix("sqlite:///")) as conn:
        changed = conn.execute(
            "UPDATE work_orders SET start_time = 'not a date' WHERE work_order_id = 'WO-000001'"
        )
        assert changed.rowcount == 1
    lakehouse = resource("lakehouse")
    # a row on no day is loaded with the last day (the demo's: 2025-06-30)
    assert materialize("bronze/work_orders", partition_key="2025-06-30").success
    first = lakehouse.snapshot_id("bronze.work_orders")
    quarantine = "bronze.work_orders__quarantine"
    assert lakehouse.query(f"SELECT work_order_id FROM {quarantine}", quarantine).fetchall() == [
        ("WO-000001",)
    ]
    for day in ("2025-06-30", "2025-06-30"):
        again = materialize("bronze/work_orders", partition_key=day)
        (mat,) = again.asset_materializations_for_node("bronze__work_orders")
        assert "skipped" in mat.metadata, day
    assert lakehouse.snapshot_id("bronze.work_orders") == first
    assert lakehouse.query(f"SELECT count(*) FROM {quarantine}", quarantine).fetchone() == (1,)

    # a second row that does not fit is a change: the day loads, the new row is quarantined
    with sqlite3.connect(own_source.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE work_orders SET start_time = '?' WHERE work_order_id = 'WO-000002'")
    again = materialize("bronze/work_orders", partition_key="2025-06-30")
    (mat,) = again.asset_materializations_for_node("bronze__work_orders")
    assert "skipped" not in mat.metadata
    held = lakehouse.query(f"SELECT work_order_id FROM {quarantine} ORDER BY 1", quarantine)
    assert held.fetchall() == [("WO-000001",), ("WO-000002",)]

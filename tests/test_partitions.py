"""Daily partitions of work orders and machine logs: day overwrites, late corrections,
backfills from the CLI, and the schedule, sensor and automation that drive them."""

import os
import subprocess
import sys
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import ROOT, materialize
from test_ingestion import metadata, rows, stable

from asgard_assets import demo_data
from asgard_assets.orchestration import sensors as s
from asgard_assets.partitions import range_tags, stale_partitions
from asgard_assets.resources import resource

WO = "bronze/work_orders silver/work_orders"
DAY = "2025-05-01"  # WO-000001 starts on this day
LATER = datetime(2026, 1, 1)


@pytest.fixture
def source(own_source) -> sa.Engine:
    """An engine on the private copy of the demo database."""
    engine = sa.create_engine(own_source)
    yield engine
    engine.dispose()


def on_day(df: pd.DataFrame, day: str, column: str = "start_time") -> pd.Series:
    return df[column].dt.strftime("%Y-%m-%d") == day


def source_count(engine: sa.Engine, day: str) -> int:
    orders = demo_data.TABLES["work_orders"]
    start = datetime.fromisoformat(day)
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(orders)
            .where(orders.c.start_time >= start, orders.c.start_time < start + timedelta(days=1))
        ).scalar()


def correct_day(engine: sa.Engine):
    """A late correction on DAY: one order cancelled, one order added."""
    orders = demo_data.TABLES["work_orders"]
    with engine.begin() as conn:
        conn.execute(
            orders.update()
            .where(orders.c.work_order_id == "WO-000001")
            .values(status="cancelled", updated_at=LATER)
        )
        conn.execute(
            orders.insert(),
            {
                "work_order_id": "WO-LATE-1",
                "product_id": "PROD-001",
                "operator_id": "EMP-001",
                "machine_id": "MCH-01",
                "status": "pending",
                "quantity": 10,
                "start_time": datetime.fromisoformat(DAY).replace(hour=12),
                "end_time": None,
                "updated_at": LATER,
            },
        )


def test_rerunning_a_day_replaces_it(source):
    assert materialize().success
    before = {t: stable(t) for t in ("bronze.work_orders", "silver.work_orders")}
    # unchanged source: the day is not reloaded (see test_no_repeated_work); forced here
    force = {"ops": {"bronze__work_orders": {"config": {"full_refresh": True}}}}
    result = materialize(WO, partition_key=DAY, run_config=force)
    assert result.success
    meta = metadata(result, "bronze__work_orders")
    assert meta["load_mode"] == "partition_overwrite"
    assert meta["rows_written"] == meta["dagster/partition_row_count"] == source_count(source, DAY)
    assert meta["partition_window"] == "start_time in [2025-05-01, 2025-05-02)"
    assert rows("bronze.work_orders") == 15_000 and rows("silver.work_orders") == 14_850
    for table, df in before.items():
        pd.testing.assert_frame_equal(stable(table), df)


def test_late_correction_is_fixed_by_rerunning_its_day(source):
    assert materialize().success
    before = stable("silver.work_orders")
    correct_day(source)
    assert materialize(WO, partition_key=DAY).success
    assert rows("bronze.work_orders") == 15_001
    after = stable("silver.work_orders")
    assert len(after) == 14_851
    by_id = after.set_index("work_order_id")
    assert by_id.loc["WO-000001", "status"] == "cancelled"
    assert by_id.loc["WO-LATE-1", "quality_flag"] == "VALID"
    # every other day is untouched
    pd.testing.assert_frame_equal(
        after[~on_day(after, DAY)].reset_index(drop=True),
        before[~on_day(before, DAY)].reset_index(drop=True),
    )


def test_backfill_of_three_days_equals_one_run(source, tmp_path, monkeypatch):
    days = ["2025-03-01", "2025-03-02", "2025-03-03"]
    for day in days:
        assert materialize(WO, partition_key=day).success
    by_day = {t: stable(t) for t in ("bronze.work_orders", "silver.work_orders")}
    monkeypatch.setenv("ASGARD_HOME", str(tmp_path / "one_run"))
    assert materialize(WO, tags=range_tags(days)).success
    for table, df in by_day.items():
        pd.testing.assert_frame_equal(stable(table), df)
    assert len(by_day["bronze.work_orders"]) == sum(source_count(source, d) for d in days)


def test_cli_backfills_a_partition_range(source, home, tmp_path):
    """`dagster asset materialize --partition-range` runs the range as one run."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    os.makedirs(env["DAGSTER_HOME"])
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "dagster"),
        *("asset", "materialize", "-m", "asgard_assets.definitions"),
        *("--select", "bronze/work_orders,silver/work_orders"),
        *("--partition-range", "2025-03-01...2025-03-03"),
    ]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = sum(source_count(source, d) for d in ("2025-03-01", "2025-03-02", "2025-03-03"))
    assert rows("bronze.work_orders") == expected
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey(["silver", "work_orders"])) == {
            "2025-03-01",
            "2025-03-02",
            "2025-03-03",
        }


def test_daily_schedule_requests_yesterdays_partition():
    from asgard_assets.definitions import defs

    daily_ingest = defs.resolve_schedule_def("daily_ingest")  # partitioned through its assets
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2025, 3, 1, 2, 0))
    (request,) = daily_ingest.evaluate_tick(context).run_requests
    assert request.partition_key == "2025-02-28"
    # the demo's partitions end with its data (2025-06-30): later ticks re-run that last
    # day, which replaces it with the same rows
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 1, 2, 0))
    (request,) = daily_ingest.evaluate_tick(context).run_requests
    assert request.partition_key == "2025-06-30"
    assert daily_ingest.job_name == "ingest" and daily_ingest.cron_schedule == "0 2 * * *"


def evaluate_new_rows() -> list[dg.RunRequest] | str:
    from asgard_assets.definitions import defs

    context = dg.build_sensor_context(
        resources={"ingestion": resource("ingestion"), "lakehouse": resource("lakehouse")},
        definitions=defs,  # to resolve partitioned run requests
    )
    result = s.new_source_rows.evaluate_tick(context)
    return result.run_requests or result.skip_message


def keys(request: dg.RunRequest) -> list[str]:
    return [k.to_user_string() for k in request.asset_selection]


def test_new_source_rows_sensor_requests_the_changed_days(source):
    first = evaluate_new_rows()  # nothing loaded yet
    by_keys = {tuple(keys(r)): r for r in first}
    assert set(by_keys) == {  # each table's bronze, then its silver in the same run
        ("bronze/quality_checks", "bronze/materials", "silver/quality_checks", "silver/materials"),
        ("bronze/work_orders", "silver/work_orders"),
        ("bronze/machine_logs", "silver/machine_logs"),
    }
    whole = by_keys[("bronze/work_orders", "silver/work_orders")]
    assert whole.partition_key is None
    assert whole.tags.items() >= range_tags(["2025-01-01", "2025-06-30"]).items()
    assert materialize(
        "bronze/work_orders bronze/machine_logs bronze/quality_checks bronze/materials"
    ).success
    assert "up to date" in evaluate_new_rows()

    correct_day(source)
    (request,) = evaluate_new_rows()
    assert request.partition_key == DAY and keys(request) == WO.split()
    assert request.run_key == f"work_orders@{DAY}:{LATER.isoformat()}"
    assert materialize("bronze/work_orders", partition_key=DAY).success
    assert "up to date" in evaluate_new_rows()


def test_a_day_added_after_the_definitions_loaded_asks_for_a_reload(home):
    """`asgard add-day` while `asgard ui` runs: the sensor's partitions end a day early, the
    run's would not, so the new rows would fall between; the tick says to reload instead."""
    from asgard_assets.partitions import daily
    from asgard_assets.settings import demo_source_path

    daily()  # the partitions of the definitions loaded before the day is added
    assert stale_partitions() is None
    demo_data.ensure_sqlite(demo_source_path())
    demo_data.add_day(demo_source_path())
    message = evaluate_new_rows()
    assert message.startswith("the demo database's days now end before 2025-07-02, these ")
    assert "before 2025-07-01: reload the definitions" in message


def test_automation_rebuilds_only_the_changed_silver_partition(source):
    from asgard_assets.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    assert materialize(WO, instance=instance).success
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    # a bronze day reloaded (by the sensor, the schedule or a person)
    assert materialize("bronze/work_orders", partition_key=DAY, instance=instance).success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = result.get_requested_partitions(dg.AssetKey(["silver", "work_orders"]))
    assert requested == {DAY}
    assert not result.get_requested_partitions(dg.AssetKey(["silver", "machine_logs"]))


def test_after_the_sensor_s_run_the_automation_asks_for_gold_only(source):
    """The sensor's run takes the day through bronze and silver: the automation's next tick
    asks for no silver partition again, and for gold."""
    from asgard_assets.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    tables = "machine_logs quality_checks materials".split()
    everything = [f"{layer}/{t}" for layer in ("bronze", "silver") for t in tables]
    assert materialize(" ".join([WO, *everything]), instance=instance).success
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # gold: missing
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert settled.total_requested == 0
    correct_day(source)
    (request,) = evaluate_new_rows()
    assert materialize(" ".join(keys(request)), partition_key=DAY, instance=instance).success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    silver = [dg.AssetKey(["silver", t]) for t in ["work_orders", *tables]]
    assert not any(result.get_requested_partitions(k) for k in silver)
    assert result.get_requested_partitions(dg.AssetKey(["gold", "operator_features"]))


def volume_check(result, table: str = "work_orders") -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "daily_row_count_anomaly" and e.asset_key.path[-1] == table
    ]
    return evaluation


def test_a_day_with_far_fewer_rows_warns(source):
    assert volume_check(materialize()).passed  # 181 ordinary days
    orders = demo_data.TABLES["work_orders"]
    start = datetime.fromisoformat(DAY)
    on_the_day = sa.and_(
        orders.c.start_time >= start, orders.c.start_time < start + timedelta(days=1)
    )
    with source.begin() as conn:  # the day's extract arrived with 10 rows only
        ids = conn.execute(
            sa.select(orders.c.work_order_id).where(on_the_day, orders.c.work_order_id.is_not(None))
        ).scalars()
        keep = list(ids)[:10]
        conn.execute(
            orders.delete().where(
                on_the_day,
                sa.or_(orders.c.work_order_id.is_(None), orders.c.work_order_id.not_in(keep)),
            )
        )
    evaluation = volume_check(materialize(WO, partition_key=DAY))
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    anomaly = evaluation.metadata["anomalies"].value[DAY]
    assert anomaly["rows"] == 10 and anomaly["usual"] > 60
    assert volume_check(materialize(WO, partition_key="2025-05-02")).passed

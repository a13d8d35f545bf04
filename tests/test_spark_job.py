"""The silver job script in real Spark (pyspark local mode) against the DuckDB path.

The SparkApplication runs ``asgard_assets/silver/spark_job.py``; here the same script reads
the bronze tables' current-snapshot Parquet files (the Iceberg runtime jar cannot be
downloaded here) and must give the DuckDB path's rows, column for column, except
``processed_at`` (the time each engine ran).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from asgard_assets import demo_data
from asgard_assets.contracts.sources import LOADED_AT, SOURCE_TABLES, SOURCES
from asgard_assets.partitions import PARTITION_COLUMNS
from asgard_assets.resources import resource
from asgard_assets.resources.source_streams import LOAD_ID
from asgard_assets.resources.spark import DuckDbSparkSql
from asgard_assets.silver import spark_job
from asgard_assets.silver.assets import sql_path

DEMO_END = demo_data.START + timedelta(days=demo_data.DAYS)


@pytest.fixture(scope="module")
def spark():
    session = spark_job.local_session()
    yield session
    session.stop()


def comparable(table: pa.Table, key: str) -> list[dict]:
    """Rows sorted by key, without ``processed_at``."""
    return table.drop_columns(["processed_at"]).sort_by(key).to_pylist()


def window_args(table: str, start: datetime, end: datetime) -> list[str] | None:
    if table not in PARTITION_COLUMNS:
        return None
    return [PARTITION_COLUMNS[table], f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}"]


def assert_same_as_duckdb(spark_rows: pa.Table, duck_rows: pa.Table, key: str) -> None:
    assert spark_rows.schema.names == duck_rows.schema.names
    for name in duck_rows.schema.names:
        assert spark_rows.schema.field(name).type == duck_rows.schema.field(name).type, name
    assert spark_rows.num_rows == duck_rows.num_rows
    assert comparable(spark_rows, key) == comparable(duck_rows, key)


@pytest.mark.parametrize("table", SOURCE_TABLES)
def test_spark_gives_the_duckdb_rows_on_the_demo_data(spark, demo_home, table):
    lakehouse = resource("lakehouse", "local")
    files = lakehouse.current_files(f"bronze.{table}")
    window = window_args(table, demo_data.START, DEMO_END)  # the fixture's range run
    got = spark_job.run_local(sql_path(table), {f"bronze.{table}": files}, window, spark)
    expected = lakehouse.table(f"silver.{table}").scan().to_arrow()
    assert got.num_rows > 0
    assert_same_as_duckdb(got, expected, SOURCES[table].key)


def _bronze(rows: list[dict], types: dict[str, pa.DataType]) -> pa.Table:
    loaded = datetime(2025, 3, 5, 12, 0, 0)
    schema = pa.schema([*types.items(), (LOADED_AT, pa.timestamp("us")), (LOAD_ID, pa.string())])
    full = [{LOADED_AT: loaded, LOAD_ID: "load-1", **r} for r in rows]
    return pa.Table.from_pylist(full, schema=schema)


T0 = datetime(2025, 3, 1, 8, 0, 0)
us = timedelta(microseconds=1)
# integer ids (a source with numeric keys), padding, case, blanks, duplicates, bad quantities,
# microsecond timestamps, end before start, a row outside the window
MESSY_WORK_ORDERS = _bronze(
    [
        dict(work_order_id=101, product_id=" p-1 ", operator_id=" emp-1", machine_id="m1",
             status=" COMPLETED ", quantity=10, start_time=T0, end_time=T0 + timedelta(hours=2, microseconds=500_000),
             updated_at=T0),
        dict(work_order_id=101, product_id="P-1", operator_id="EMP-1", machine_id="M1",
             status="completed", quantity=12, start_time=T0, end_time=T0 + timedelta(hours=3) - us,
             updated_at=T0 + timedelta(hours=5)),
        dict(work_order_id=102, product_id="p-2", operator_id="  ", machine_id="m2",
             status="Completed", quantity=0, start_time=T0 + 999_999 * us, end_time=None,
             updated_at=T0),
        dict(work_order_id=103, product_id="p-3", operator_id=None, machine_id=" m3",
             status="in_progress", quantity=-4, start_time=T0, end_time=T0 - timedelta(minutes=1),
             updated_at=T0),
        dict(work_order_id=None, product_id="p-4", operator_id="emp-2", machine_id="m4",
             status="completed", quantity=3, start_time=T0, end_time=T0, updated_at=T0),
        dict(work_order_id=104, product_id="p-5", operator_id="emp-2", machine_id="m5",
             status="completed", quantity=None, start_time=T0 + timedelta(days=9),
             end_time=T0 + timedelta(days=9, seconds=1, microseconds=1), updated_at=T0),
    ],
    {
        "work_order_id": pa.int64(), "product_id": pa.string(), "operator_id": pa.string(),
        "machine_id": pa.string(), "status": pa.string(), "quantity": pa.int64(),
        "start_time": pa.timestamp("us"), "end_time": pa.timestamp("us"),
        "updated_at": pa.timestamp("us"),
    },
)  # fmt: skip
MESSY_MACHINE_LOGS = _bronze(
    [
        dict(log_id=7, machine_id=" m1 ", operator_id="", event_type=" RUN ",
             temperature_c=250.0, vibration_mm_s=1.5, event_time=T0, updated_at=T0),
        dict(log_id=7, machine_id="M1", operator_id="emp-1", event_type="run",
             temperature_c=70.25, vibration_mm_s=-0.1, event_time=T0, updated_at=T0 + us),
        dict(log_id=8, machine_id="m2", operator_id=None, event_type="idle",
             temperature_c=None, vibration_mm_s=None, event_time=T0 + us, updated_at=T0),
        dict(log_id=9, machine_id="m2", operator_id="emp-3 ", event_type="Stop",
             temperature_c=-40.0, vibration_mm_s=0.0, event_time=T0 + timedelta(days=3),
             updated_at=T0),
    ],
    {
        "log_id": pa.int64(), "machine_id": pa.string(), "operator_id": pa.string(),
        "event_type": pa.string(), "temperature_c": pa.float64(), "vibration_mm_s": pa.float64(),
        "event_time": pa.timestamp("us"), "updated_at": pa.timestamp("us"),
    },
)  # fmt: skip


@pytest.mark.parametrize(
    "table, bronze", [("work_orders", MESSY_WORK_ORDERS), ("machine_logs", MESSY_MACHINE_LOGS)]
)
def test_spark_gives_the_duckdb_rows_on_messy_data(spark, home, table, bronze):
    lakehouse = resource("lakehouse", "local")
    source = f"bronze.{table}"
    lakehouse.write(source, pa.RecordBatchReader.from_batches(bronze.schema, bronze.to_batches()))
    DuckDbSparkSql().build(sql_path(table), f"silver.{table}", [source], lakehouse)
    expected = lakehouse.table(f"silver.{table}").scan().to_arrow()
    files = lakehouse.current_files(source)
    got = spark_job.run_local(sql_path(table), {source: files}, None, spark)
    assert got.num_rows == expected.num_rows > 0
    assert_same_as_duckdb(got, expected, SOURCES[table].key)

    # a window's run reads the window's rows only (no key of this data spans two days)
    start, end = datetime(2025, 3, 1), datetime(2025, 3, 2)
    column = PARTITION_COLUMNS[table]
    in_window = expected.filter((pc.field(column) >= start) & (pc.field(column) < end))
    windowed = spark_job.run_local(
        sql_path(table), {source: files}, window_args(table, start, end), spark
    )
    assert 0 < windowed.num_rows < expected.num_rows
    assert_same_as_duckdb(windowed, in_window, SOURCES[table].key)


def test_files_mode_of_the_command_line(spark, home, tmp_path):
    """The script's own entry point, as ``python spark_job.py --input-files ...`` runs it."""
    bronze = tmp_path / "bronze.parquet"
    pq.write_table(MESSY_MACHINE_LOGS, bronze)
    out = tmp_path / "out"
    code = spark_job.main(
        [
            "--sql", str(sql_path("machine_logs")),
            "--input-files", json.dumps({"bronze.machine_logs": [str(bronze)]}),
            "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    rows = spark.read.parquet(str(out)).orderBy("log_id").collect()
    assert [(r.log_id, r.operator_id, r.quality_flag) for r in rows] == [
        ("7", "EMP-1", "INVALID"),  # the later version of log 7; negative vibration
        ("8", "UNASSIGNED", "INVALID"),  # no temperature
        ("9", "EMP-3", "VALID"),  # -40 °C is in range
    ]


def test_input_references_are_bound_and_the_rest_of_the_text_kept():
    sql = "-- c\nSELECT a FROM bronze.t JOIN `Bronze`.`U` USING (a) WHERE a <> 'bronze.t'"
    assert spark_job.bind_inputs(sql, ["bronze.t", "bronze.u"]) == (
        "-- c\nSELECT a FROM bronze__t JOIN bronze__u USING (a) WHERE a <> 'bronze.t'"
    )


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT FROM WHERE (", "does not parse"),
        ("SELECT 1 FROM bronze.t; SELECT 2 FROM bronze.t", "exactly one SELECT"),
        ("SELECT 1 FROM bronze.other", "does not read its input(s) bronze.t"),
    ],
)
def test_bad_sql_is_named(sql, message):
    with pytest.raises(spark_job.JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spark_job.bind_inputs(sql, ["bronze.t"], "x.sql")


def test_catalog_credentials_come_from_the_environment(spark):
    env = {"ASGARD_CATALOG_TOKEN": "s3cr3t", "UNRELATED": "x"}
    assert spark_job.apply_catalog_secrets(spark, "probe", env) == ["token"]
    assert spark.conf.get("spark.sql.catalog.probe.token") == "s3cr3t"

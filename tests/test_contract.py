"""The data contract: any source that meets it loads (integer or text keys, exact
timestamps); one that breaks it fails before any write, naming table and column; values
that do not fit their type are quarantined, not a panic."""

from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import FOUNDATION, create_source_table, materialize

from asgard_assets.bronze.contract_checks import bronze_contract_checks, silver_columns
from asgard_assets.contracts.sources import LOADED_AT, SOURCES, contract_markdown
from asgard_assets.resources import resource

ASSETS = [*FOUNDATION, *bronze_contract_checks]
DAY = datetime(2025, 1, 2, 8)


def lakehouse():
    return resource("lakehouse")


def frame(identifier: str):
    return lakehouse().table(identifier).scan().to_pandas()


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def failure(result) -> str:
    events = result.get_step_failure_events()
    assert events, "the step should have failed"
    return " ".join(e.step_failure_data.error.to_string() for e in events)


def retries(result) -> int:
    return sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def order(i: int, **kw) -> dict:
    row = {
        "work_order_id": f"WO-{i}",
        "product_id": "PROD-1",
        "operator_id": f"EMP-{i % 2}",
        "machine_id": "MCH-1",
        "status": "completed",
        "quantity": 10 * i,
        "start_time": DAY + timedelta(hours=i),
        "end_time": DAY + timedelta(hours=i + 1, microseconds=250_001 * i),
        "updated_at": DAY + timedelta(hours=i + 2),
    }
    return {**row, **kw}


def material(i: int, **kw) -> dict:
    row = {
        "material_id": f"MAT-{i}",
        "material_name": f"part {i}",
        "category": "steel",
        "unit": "kg",
        "quantity_on_hand": i,
        "unit_cost": 1.5 * i,
        "supplier": "Supplier 1",
        "updated_at": DAY + timedelta(minutes=i),
    }
    return {**row, **kw}


@pytest.fixture
def sqlite_source(home, tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    monkeypatch.setenv("ASGARD_SOURCE_URL", url)
    return url


@pytest.mark.postgres
def test_integer_keys_load_and_pass_their_checks(home, postgres_url, monkeypatch):
    """A Postgres source whose machine_logs.log_id is an integer: bronze keeps it an
    integer, silver makes it text, every check passes."""
    columns = {
        c.name: (sa.Integer() if c.name == "log_id" else c.type)
        for c in resource_table("machine_logs").columns
    }
    rows = [
        {
            "log_id": i,
            "machine_id": " mch-1 ",
            "operator_id": "emp-1",
            "event_type": "START",
            "temperature_c": 60.0,
            "vibration_mm_s": 1.0,
            "event_time": DAY + timedelta(minutes=i),
            "updated_at": DAY + timedelta(minutes=i, seconds=v),
        }
        for i, v in [(1, 0), (2, 0), (2, 30), (3, 0)]  # log 2 re-sent later
    ]
    create_source_table(postgres_url, "machine_logs", rows, columns)
    monkeypatch.setenv("ASGARD_SOURCE_URL", postgres_url)
    result = materialize("bronze/machine_logs silver/machine_logs", assets=ASSETS)
    assert result.success
    assert str(lakehouse().table("bronze.machine_logs").schema().find_type("log_id")) == "int"
    silver = frame("silver.machine_logs").set_index("log_id")
    assert sorted(silver.index) == ["1", "2", "3"]
    assert silver.loc["2", "updated_at"] == DAY + timedelta(minutes=2, seconds=30)
    assert silver.loc["1", "machine_id"] == "MCH-1"
    failed = [name for name, e in checks(result).items() if not e.passed]
    assert failed == []


def resource_table(table: str) -> sa.Table:
    from asgard_assets import demo_data

    return demo_data.TABLES[table]


def test_duration_is_exact_to_the_microsecond(sqlite_source):
    rows = [order(i) for i in range(1, 5)]
    create_source_table(sqlite_source, "work_orders", rows)
    assert materialize("bronze/work_orders silver/work_orders", assets=ASSETS).success
    silver = frame("silver.work_orders").set_index("work_order_id")
    for row in rows:
        exact = (row["end_time"] - row["start_time"]) / timedelta(hours=1)
        assert silver.loc[row["work_order_id"], "duration_hours"] == pytest.approx(
            exact, rel=0, abs=1e-12
        )
    # 1 h + 0.250001 s: whole seconds would say 1.0
    assert silver.loc["WO-1", "duration_hours"] > 1 + 0.25 / 3600


BROKEN = {
    "dropped operator_id": ({"operator_id": None}, "column operator_id (string) is missing"),
    "renamed quantity": ({"quantity": "qty"}, "column quantity (integer) is missing"),
    "text start_time": (
        {"start_time": ("start_time", sa.String(32))},
        "column start_time is VARCHAR(32), the contract says timestamp",
    ),
}


@pytest.mark.parametrize("change", BROKEN, ids=list(BROKEN))
def test_source_breaking_the_contract_fails_before_any_write(sqlite_source, change):
    """A column silver reads is dropped, renamed or mistyped after bronze was loaded: the
    run fails naming table and column, bronze stays at its snapshot, nothing is retried."""
    create_source_table(sqlite_source, "work_orders", [order(1)])
    assert materialize("bronze/work_orders", assets=ASSETS).success
    before = lakehouse().snapshot_id("bronze.work_orders")
    edit, expected = BROKEN[change]
    columns = {}
    for c in resource_table("work_orders").columns:
        new = edit.get(c.name, c.name)
        if new is None:
            continue
        name, sql_type = new if isinstance(new, tuple) else (new, c.type)
        columns[name] = sql_type
    row = {
        (edit.get(k) if isinstance(edit.get(k), str) else k): v
        for k, v in order(2).items()
        if k in columns or isinstance(edit.get(k), str)
    }
    create_source_table(sqlite_source, "work_orders", [row], columns)
    result = materialize("bronze/work_orders", assets=ASSETS, raise_on_error=False)
    message = failure(result)
    assert "source table work_orders does not meet the data contract" in message
    assert expected in message
    assert retries(result) == 0  # bad input: not retried
    assert lakehouse().snapshot_id("bronze.work_orders") == before


def test_a_column_retyped_in_place_fails_though_no_row_changed(sqlite_source):
    """The window's rows are the same (count, latest updated_at): the run would skip them,
    but the source no longer meets the contract, and says so."""
    create_source_table(sqlite_source, "work_orders", [order(1)])
    assert materialize("bronze/work_orders", assets=ASSETS).success
    before = lakehouse().snapshot_id("bronze.work_orders")
    columns = {c.name: c.type for c in resource_table("work_orders").columns}
    create_source_table(
        sqlite_source, "work_orders", [order(1)], {**columns, "start_time": sa.String(32)}
    )
    result = materialize("bronze/work_orders", assets=ASSETS, raise_on_error=False)
    assert "column start_time is VARCHAR(32), the contract says timestamp" in failure(result)
    assert lakehouse().snapshot_id("bronze.work_orders") == before


def test_added_column_evolves_bronze_and_silver_columns_check(sqlite_source):
    create_source_table(sqlite_source, "materials", [material(1)])
    assert materialize("bronze/materials", assets=ASSETS).success
    columns = {c.name: c.type for c in resource_table("materials").columns}
    create_source_table(
        sqlite_source,
        "materials",
        [material(1, grade=None), material(2, updated_at=DAY + timedelta(days=1), grade="A")],
        {**columns, "grade": sa.String(8)},
    )
    result = materialize("bronze/materials silver/materials", assets=ASSETS)
    assert result.success
    bronze = frame("bronze.materials").set_index("material_id")
    assert bronze.loc["MAT-2", "grade"] == "A" and len(bronze) == 2
    assert checks(result)["silver_columns_present"].passed


def test_bronze_missing_a_silver_column_fails_its_check(sqlite_source):
    """Bronze written by another loader without a column silver reads: the blocking check
    fails and silver does not run."""
    create_source_table(sqlite_source, "materials", [material(1)])
    assert materialize("bronze/materials", assets=ASSETS).success
    table = lakehouse().table("bronze.materials")
    with table.update_schema() as update:
        update.delete_column("supplier")
    result = materialize("bronze/materials silver/materials", assets=ASSETS, raise_on_error=False)
    check = checks(result)["silver_columns_present"]
    assert not check.passed
    assert check.metadata["missing_columns"].value == ["supplier"]
    assert check.description == (
        "materials.sql reads column(s) bronze.materials does not have: supplier (renamed or "
        "dropped in the source, or mistyped in the SQL)"
    )
    assert not result.asset_materializations_for_node("silver__materials")


def test_values_that_do_not_fit_are_quarantined_with_their_key(sqlite_source):
    """SQLite stores any value in any column; connectorx used to panic on the first one
    that did not fit. Now the row goes to bronze.materials__quarantine and a check counts it."""
    rows = [material(i) for i in range(1, 6)]
    rows[1]["quantity_on_hand"] = "lots"
    rows[3]["updated_at"] = "yesterday"
    create_source_table(sqlite_source, "materials", [])
    engine = sa.create_engine(sqlite_source)
    with engine.begin() as conn:  # untyped inserts: SQLite keeps the text as text
        for r in rows:
            values = {k: (v if isinstance(v, str | int | float) else str(v)) for k, v in r.items()}
            conn.execute(
                sa.text(
                    f"INSERT INTO materials ({', '.join(values)}) "
                    f"VALUES ({', '.join(':' + k for k in values)})"
                ),
                values,
            )
    engine.dispose()
    result = materialize("bronze/materials silver/materials", assets=ASSETS)
    assert result.success
    assert sorted(frame("bronze.materials")["material_id"]) == ["MAT-1", "MAT-3", "MAT-5"]
    quarantine = frame("bronze.materials__quarantine").set_index("material_id")
    assert quarantine.loc["MAT-2", "quantity_on_hand"] == "lots"
    assert quarantine.loc["MAT-2", "_asgard_reason"] == "quantity_on_hand"
    assert quarantine.loc["MAT-4", "_asgard_reason"] == "updated_at"
    check = checks(result)["values_fit_types"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["quarantined"].value == 2
    assert check.metadata["keys"].value == ["MAT-2", "MAT-4"]
    assert check.description.startswith(
        "2 source rows did not fit their column types (keys ['MAT-2', 'MAT-4']): kept as text "
        "in bronze.materials__quarantine"
    )
    # loaded again (MAT-2 is newer than the cursor: every read finds it): the check still
    # names both, and the quarantine does not hold them twice
    for _ in range(2):
        result = materialize("bronze/materials", assets=ASSETS)
        check = checks(result)["values_fit_types"]
        assert check.metadata["keys"].value == ["MAT-2", "MAT-4"]
    assert sorted(frame("bronze.materials__quarantine")["material_id"]) == ["MAT-2", "MAT-4"]


def test_registry_names_what_silver_reads_and_the_docs_show_it():
    for table, spec in SOURCES.items():
        assert silver_columns(table) == {*spec.column_names, LOADED_AT}, table
    from conftest import ROOT

    doc = (ROOT / "docs" / "data-contract.md").read_text()
    assert contract_markdown() in doc  # regenerate: python -m asgard_assets.contracts.sources
    assert "docs/data-contract.md" in (ROOT / "README.md").read_text()


def test_silver_sql_gives_the_same_rows_in_spark_and_duckdb():
    """The silver SQL is Spark SQL; DuckDB runs sqlglot's transpilation of it. On integer
    keys and microsecond timestamps both engines must agree (Spark itself, local mode)."""
    import duckdb
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from asgard_assets.resources.spark import transpile
    from asgard_assets.silver.assets import sql_path

    rows = [order(i, work_order_id=i if i != 3 else 2) for i in range(1, 5)]
    for r in rows:
        r["_asgard_loaded_at"] = datetime(2025, 2, 1)
    rows[0]["operator_id"] = "  "
    rows[1]["quantity"] = -5
    bronze = pa.Table.from_pylist(rows)
    columns = ["work_order_id", "operator_id", "quantity", "duration_hours", "quality_flag"]

    con = duckdb.connect()
    con.execute("CREATE SCHEMA bronze")
    con.register("bronze_rows", bronze)
    con.execute("CREATE VIEW bronze.work_orders AS SELECT * FROM bronze_rows")
    local = con.sql(transpile(sql_path("work_orders"))).df()[columns]

    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        spark.createDataFrame(bronze.to_pandas()).createOrReplaceTempView("work_orders")
        sql = sql_path("work_orders").read_text().replace("bronze.work_orders", "work_orders")
        remote = spark.sql(sql).toPandas()[columns]
    finally:
        spark.stop()

    def norm(df):
        return (
            df.sort_values("work_order_id")
            .reset_index(drop=True)
            .astype({"quantity": "int64", "duration_hours": "float64"})
        )

    pd.testing.assert_frame_equal(norm(local), norm(remote), rtol=1e-12)
    assert list(norm(local)["work_order_id"]) == ["1", "2", "4"]
    assert norm(local)["operator_id"][0] == "UNASSIGNED"


@pytest.mark.postgres
def test_widened_and_added_columns_evolve_bronze(home, postgres_url, monkeypatch):
    """INTEGER widened to BIGINT and a new column in a Postgres source: bronze evolves."""
    monkeypatch.setenv("ASGARD_SOURCE_URL", postgres_url)
    create_source_table(postgres_url, "materials", [material(1)])
    assert materialize("bronze/materials", assets=ASSETS).success
    assert str(lakehouse().table("bronze.materials").schema().find_type("quantity_on_hand")) == (
        "int"
    )
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "ALTER TABLE inventory.materials ALTER COLUMN quantity_on_hand TYPE bigint; "
                "ALTER TABLE inventory.materials ADD COLUMN grade text"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO inventory.materials (material_id, quantity_on_hand, unit_cost, "
                "grade, updated_at) VALUES ('MAT-2', 1099511627776, 2.0, 'A', '2025-02-01')"
            )
        )
    engine.dispose()
    result = materialize("bronze/materials silver/materials", assets=ASSETS)
    assert result.success
    table = lakehouse().table("bronze.materials")
    assert str(table.schema().find_type("quantity_on_hand")) == "long"
    bronze = table.scan().to_pandas().set_index("material_id")
    assert bronze.loc["MAT-2", "quantity_on_hand"] == 2**40
    assert bronze.loc["MAT-2", "grade"] == "A"
    assert len(bronze) == 2

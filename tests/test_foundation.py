"""Bronze and silver on the demo data: the figures, the contract rules, the catalog."""

import os
import subprocess
import sys

import duckdb
import pandas as pd

from asgard_assets import demo_data
from asgard_assets.resources import resource

SILVER_COLUMNS = [
    "work_order_id",
    "product_id",
    "operator_id",
    "machine_id",
    "status",
    "quantity",
    "start_time",
    "end_time",
    "duration_hours",
    "quality_flag",
    "updated_at",
]


def read(identifier: str) -> pd.DataFrame:
    return resource("lakehouse").table(identifier).scan().to_pandas()


def test_demo_figures(demo_home):
    lakehouse = resource("lakehouse")
    counts = {t: len(read(f"bronze.{t}")) for t in demo_data.EXPECTED_ROWS}
    assert counts == {
        "work_orders": 15_000,
        "machine_logs": 25_000,
        "quality_checks": 3_500,
        "materials": 2_323,
    }
    assert sum(counts.values()) == 45_823
    assert len(read("silver.work_orders")) == 14_850
    # the demo is tuned for gold: 142 operators with >= 5 VALID orders
    n_ops = lakehouse.query(
        "SELECT count(*) FROM (SELECT operator_id FROM silver.work_orders "
        "WHERE quality_flag = 'VALID' AND operator_id <> 'UNASSIGNED' "
        "GROUP BY 1 HAVING count(*) >= 5)",
        "silver.work_orders",
    ).fetchone()[0]
    assert n_ops == 142


def test_bronze_is_the_source_unchanged_plus_load_columns(demo_home):
    bronze = read("bronze.work_orders")
    source = demo_data.work_orders().to_pandas()
    assert list(bronze.columns) == [*source.columns, "_asgard_loaded_at", "_asgard_load_id"]
    assert bronze["_asgard_load_id"].nunique() == 1
    key = ["start_time", "quantity", "work_order_id"]
    left = bronze[source.columns].sort_values(key, na_position="first").reset_index(drop=True)
    right = source.sort_values(key, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


def expected_silver(bronze: pd.DataFrame) -> pd.DataFrame:
    """The data contract, computed independently of the SQL with pandas."""
    df = bronze.copy()

    def norm(s, case):
        s = s.astype("string").str.strip()
        return s.str.upper() if case == "upper" else s.str.lower()

    for col in ("work_order_id", "product_id", "machine_id"):
        df[col] = norm(df[col], "upper")
    df = df[df["work_order_id"].notna() & (df["work_order_id"] != "")]
    df = df.sort_values("updated_at").groupby("work_order_id", as_index=False).tail(1)
    df["status"] = norm(df["status"], "lower")
    op = norm(df["operator_id"], "upper")
    df["operator_id"] = op.where(op.notna() & (op != ""), "UNASSIGNED")
    qty = df["quantity"]
    df["quantity"] = qty.where(qty.notna() & (qty > 0), 0).astype(int)
    df["duration_hours"] = (df["end_time"] - df["start_time"]).dt.total_seconds() / 3600
    invalid = (
        qty.isna()
        | (qty <= 0)
        | ((df["status"] == "completed") & df["end_time"].isna())
        | (df["end_time"] < df["start_time"])
    )
    df["quality_flag"] = invalid.map({True: "INVALID", False: "VALID"})
    return df[SILVER_COLUMNS].sort_values("work_order_id").reset_index(drop=True)


def test_silver_work_orders_follow_the_contract_row_by_row(demo_home):
    silver = read("silver.work_orders")
    assert silver["work_order_id"].is_unique
    assert set(silver["rules_version"]) == {"work_orders/v2"}
    assert silver["processed_at"].notna().all()
    actual = silver[SILVER_COLUMNS].sort_values("work_order_id").reset_index(drop=True)
    expected = expected_silver(read("bronze.work_orders"))
    assert len(actual) == len(expected) == 14_850
    for col in SILVER_COLUMNS:
        a, e = actual[col], expected[col]
        if col == "duration_hours":
            assert ((a - e).abs().fillna(0) < 1e-9).all() and (a.isna() == e.isna()).all()
        else:
            assert (a.astype(str) == e.astype(str)).all(), f"{col} differs"
    # the defects of the demo data are all there, and flagged
    flags = actual["quality_flag"].value_counts()
    assert 0 < flags["INVALID"] < flags["VALID"]
    assert (actual["operator_id"] == "UNASSIGNED").sum() > 0


def test_other_silver_tables_have_clean_unique_keys(demo_home):
    for table, key in [
        ("machine_logs", "log_id"),
        ("quality_checks", "check_id"),
        ("materials", "material_id"),
    ]:
        df = read(f"silver.{table}")
        assert df[key].is_unique and df[key].notna().all(), table
        assert (df[key] == df[key].str.strip().str.upper()).all(), table
    logs = read("silver.machine_logs")
    # 1% of the logs were re-sent under the same id: silver keeps one of each
    assert len(logs) == read("bronze.machine_logs")["log_id"].str.strip().str.upper().nunique()
    assert set(read("silver.quality_checks")["result"]) == {"pass", "fail"}


def test_any_pyiceberg_user_opens_the_catalog(demo_home):
    """A separate Python process with only PYICEBERG_HOME set reads every table."""
    assert (demo_home / ".pyiceberg.yaml").exists()
    script = (
        "from pyiceberg.catalog import load_catalog\n"
        "c = load_catalog('asgard')\n"
        "print(sorted(ns[0] for ns in c.list_namespaces()))\n"
        "print(c.load_table('silver.work_orders').scan().to_arrow().num_rows)\n"
    )
    env = {**os.environ, "PYICEBERG_HOME": str(demo_home)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    namespaces, rows = out.stdout.splitlines()
    assert namespaces == "['bronze', 'gold', 'silver']"
    assert rows == "14850"


def test_reads_use_the_current_snapshot_only(home):
    """Overwriting leaves the old snapshot's files in the folder; reads must not see them."""
    from conftest import materialize

    assert materialize("bronze/materials").success
    assert materialize(
        "bronze/materials",
        run_config={"ops": {"bronze__materials": {"config": {"full_refresh": True}}}},
    ).success
    lakehouse = resource("lakehouse")
    files_on_disk = list((home / "warehouse").rglob("bronze/materials/data/*.parquet"))
    assert len(files_on_disk) == 2
    assert len(lakehouse.current_files("bronze.materials")) == 1
    assert (
        lakehouse.query("SELECT count(*) FROM bronze.materials", "bronze.materials").fetchone()[0]
        == 2_323
    )
    assert os.path.exists(lakehouse.current_files("bronze.materials")[0])
    # the previous snapshot stays readable by time travel
    table = lakehouse.table("bronze.materials")
    first = table.snapshots()[0].snapshot_id
    assert table.scan(snapshot_id=first).to_arrow().num_rows == 2_323
    assert duckdb.sql("SELECT 1").fetchall() == [(1,)]

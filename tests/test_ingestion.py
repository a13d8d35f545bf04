"""Ingestion from real databases, incremental loads, idempotent re-runs, and bad input."""

import shutil
from datetime import datetime

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import materialize

from asgard_assets import demo_data
from asgard_assets.resources import resource
from asgard_assets.settings import demo_source_path

FULL_REFRESH = {"ops": {"bronze__quality_checks": {"config": {"full_refresh": True}}}}


def lakehouse():
    return resource("lakehouse")


def rows(identifier: str) -> int:
    return lakehouse().table(identifier).scan().count()


def stable(
    identifier: str, drop=("processed_at", "_asgard_loaded_at", "_asgard_load_id")
) -> pd.DataFrame:
    df = lakehouse().table(identifier).scan().to_pandas().drop(columns=list(drop), errors="ignore")
    return df.sort_values(list(df.columns[:3]), na_position="first").reset_index(drop=True)


def metadata(result, node: str) -> dict:
    mat = result.asset_materializations_for_node(node)[0]
    return {k: v.value for k, v in mat.metadata.items()}


def failure_message(result) -> str:
    events = result.get_step_failure_events()
    assert events, "the step should have failed"
    return " ".join(e.step_failure_data.error.to_string() for e in events)


@pytest.mark.postgres
def test_ingests_from_postgres(home, postgres_url, monkeypatch):
    assert demo_data.load(postgres_url) == demo_data.EXPECTED_ROWS
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT count(*) FROM production.work_orders")).scalar() == 15_000
        )
        assert conn.execute(sa.text("SELECT count(*) FROM inventory.materials")).scalar() == 2_323
    engine.dispose()
    monkeypatch.setenv("ASGARD_SOURCE_URL", postgres_url)
    result = materialize()
    assert result.success
    for table, n in demo_data.EXPECTED_ROWS.items():
        assert rows(f"bronze.{table}") == n
    assert rows("silver.work_orders") == 14_850
    assert "postgresql" in metadata(result, "bronze__work_orders")["source"]
    assert len(resource("ingestion").days("work_orders")) == demo_data.DAYS
    assert not (home / demo_source_path().name).exists()  # the demo database was not used


@pytest.mark.mysql
def test_ingests_from_mariadb(home, mysql_url, monkeypatch):
    assert demo_data.load(mysql_url) == demo_data.EXPECTED_ROWS
    monkeypatch.setenv("ASGARD_SOURCE_URL", mysql_url)
    result = materialize()
    assert result.success
    for table, n in demo_data.EXPECTED_ROWS.items():
        assert rows(f"bronze.{table}") == n
    assert rows("silver.work_orders") == 14_850
    assert "mysql" in metadata(result, "bronze__work_orders")["source"]
    assert len(resource("ingestion").days("machine_logs")) == demo_data.DAYS


QC = "bronze/quality_checks silver/quality_checks"


def test_incremental_load_picks_up_only_new_and_changed_rows(own_source):
    """Unpartitioned tables load the rows past the updated_at cursor."""
    assert materialize(QC).success
    engine = sa.create_engine(own_source)
    later = datetime(2026, 1, 1)
    with engine.begin() as conn:
        # typed statements: SQLAlchemy renders timestamps as the table stores them (a raw
        # sqlite3 binding depends on whatever datetime adapter some library registered)
        checks = demo_data.TABLES["quality_checks"]
        conn.execute(
            checks.update()
            .where(checks.c.check_id.in_(["QC-00001", "QC-00002"]))
            .values(result="fail", defects_found=3, updated_at=later)
        )
        conn.execute(
            checks.insert(),
            [
                {
                    "check_id": f"qc-new-{i}",
                    "work_order_id": "WO-000001",
                    "inspector_id": "QA-01",
                    "result": "pass",
                    "defects_found": 0,
                    "check_time": later,
                    "updated_at": later,
                }
                for i in range(3)
            ],
        )
    engine.dispose()

    result = materialize(QC)
    assert result.success
    meta = metadata(result, "bronze__quality_checks")
    assert meta["load_mode"] == "incremental"
    assert meta["rows_written"] == 5
    assert rows("bronze.quality_checks") == 3_505
    silver = stable("silver.quality_checks").set_index("check_id")
    assert len(silver) == 3_503
    assert silver.loc["QC-00001", "result"] == "fail"
    assert silver.loc["QC-NEW-0", "result"] == "pass"


def test_rematerialization_gives_identical_tables(own_source):
    assert materialize().success
    tables = ["bronze.work_orders", "silver.work_orders", "bronze.quality_checks"]
    before = {t: stable(t) for t in tables}
    again = materialize()
    assert again.success
    # partitioned: the source's days are already there, nothing is reloaded;
    # unpartitioned: nothing past the cursor
    assert "skipped" in metadata(again, "bronze__work_orders")
    assert metadata(again, "bronze__quality_checks")["rows_written"] == 0
    refreshed = materialize(QC, run_config=FULL_REFRESH)
    assert metadata(refreshed, "bronze__quality_checks")["load_mode"] == "full_refresh"
    assert rows("bronze.quality_checks") == 3_500  # replaced, not appended
    for t in tables:
        pd.testing.assert_frame_equal(stable(t), before[t])


def snapshots() -> dict[str, int]:
    lh = lakehouse()
    return {
        f"{ns}.{t}": lh.snapshot_id(f"{ns}.{t}")
        for ns in ("bronze", "silver")
        for t in demo_data.TABLES
    }


def test_unreachable_source_fails_clearly_and_loses_nothing(own_source, monkeypatch):
    assert materialize().success
    before = snapshots()
    monkeypatch.setenv(
        "ASGARD_SOURCE_URL", "postgresql+psycopg2://asgard:s3cret@127.0.0.1:1/factory"
    )
    result = materialize("bronze/work_orders", raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert (
        "cannot reach source database postgresql+psycopg2://asgard:***@127.0.0.1:1/factory"
        in message
    )
    assert "s3cret" not in message
    assert snapshots() == before
    # the new-rows sensor asks the same source: the same clear message
    with pytest.raises(dg.Failure, match=r"cannot reach source database .*:\*\*\*@127\.0\.0\.1:1"):
        resource("ingestion").source_cursor("work_orders")


def test_missing_source_table_fails_clearly_and_loses_nothing(own_source):
    assert materialize().success
    before = snapshots()
    engine = sa.create_engine(own_source)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE materials"))
    engine.dispose()
    result = materialize("bronze/materials", raise_on_error=False)
    assert "source table materials does not exist" in failure_message(result)
    assert snapshots() == before
    assert rows("bronze.materials") == 2_323


@pytest.mark.parametrize(
    "broken, expected",
    [
        ("SELECT work_order_id, FROM WHERE bronze.work_orders", "work_orders.sql"),
        ("SELECT no_such_column FROM bronze.work_orders", "no_such_column"),
    ],
)
def test_bad_silver_sql_fails_clearly_and_loses_nothing(
    own_source, tmp_path, monkeypatch, broken, expected
):
    from asgard_assets.silver import assets as silver

    assert materialize().success
    before = snapshots()
    sql_dir = tmp_path / "sql"
    shutil.copytree(silver.SQL_DIR, sql_dir)
    (sql_dir / "work_orders.sql").write_text(broken)
    monkeypatch.setattr(silver, "SQL_DIR", sql_dir)
    result = materialize("silver/work_orders", raise_on_error=False)
    message = failure_message(result)
    assert "work_orders.sql" in message and expected in message
    assert snapshots() == before
    assert rows("silver.work_orders") == 14_850


@pytest.mark.postgres
def test_iceberg_catalog_on_postgres(home, postgres_url, monkeypatch):
    """ASGARD_CATALOG_URI puts the Iceberg SQL catalog in Postgres; data stays in the warehouse."""
    monkeypatch.setenv("ASGARD_CATALOG_URI", postgres_url)
    assert materialize("bronze/materials silver/materials").success
    assert rows("silver.materials") == 2_323
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        names = (
            conn.execute(
                sa.text(
                    "SELECT table_namespace || '.' || table_name FROM iceberg_tables ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert names == ["bronze.materials", "silver.materials"]
    assert not (home / "catalog.db").exists()

"""The definitions as a whole: every asset, dependency and check, and the profile switch."""

import dagster as dg
import pytest
import sqlalchemy as sa

from asgard_assets import cli
from asgard_assets.resources import MissingSettings, profile_settings, resources_for
from asgard_assets.resources.ingestion import EmbeddedIngestion
from asgard_assets.resources.lakehouse import IcebergLakehouse
from asgard_assets.settings import profile

TABLES = ["machine_logs", "materials", "quality_checks", "work_orders"]


@pytest.fixture
def defs():
    from asgard_assets.definitions import defs

    return defs


def test_asset_keys_and_lineage(defs):
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    expected = {f"{layer}/{t}" for layer in ("bronze", "silver") for t in TABLES}
    assert expected <= keys
    for t in TABLES:
        assert graph.get(dg.AssetKey(["silver", t])).parent_keys == {dg.AssetKey(["bronze", t])}
        assert graph.get(dg.AssetKey(["bronze", t])).group_name == "bronze"


def test_every_table_has_its_checks(defs):
    graph = defs.resolve_asset_graph()
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    keys = {
        "work_orders": "work_order_id",
        "machine_logs": "log_id",
        "quality_checks": "check_id",
        "materials": "material_id",
    }
    for layer in ("bronze", "silver"):
        for t, key in keys.items():
            for name in ("row_count_positive", f"{key}_not_null", f"{key}_unique"):
                assert (f"{layer}/{t}", name) in checks


def test_profile_switch_picks_resources(monkeypatch):
    monkeypatch.delenv("ASGARD_PROFILE", raising=False)
    assert profile() == "local"
    assert isinstance(resources_for()["lakehouse"], IcebergLakehouse)
    monkeypatch.setenv("ASGARD_PROFILE", "k8s")
    with pytest.raises(MissingSettings):  # the k8s settings are checked when built
        resources_for()
    for name in profile_settings("k8s"):
        monkeypatch.setenv(name, "x")
    assert isinstance(resources_for()["lakehouse"], IcebergLakehouse)
    assert set(resources_for("k8s")) == set(resources_for("local"))
    monkeypatch.setenv("ASGARD_PROFILE", "cloud")
    with pytest.raises(ValueError, match="ASGARD_PROFILE='cloud'"):
        profile()


def test_source_url_is_a_secret_env_var(monkeypatch):
    """The source URL carries a password: it is an EnvVar, never a literal in config."""
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql://u:secret@db/x")
    ingestion = resources_for("local")["ingestion"]
    assert isinstance(ingestion, EmbeddedIngestion)
    field = ingestion._get_non_default_public_field_values()["source_url"]  # noqa: SLF001
    assert isinstance(field, dg.EnvVar) and field.env_var_name == "ASGARD_SOURCE_URL"


def test_cli_loads_the_demo_into_any_url(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'factory.sqlite'}"
    assert cli.main(["load-demo", url]) == 0
    assert "45,823 rows" in capsys.readouterr().out
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM work_orders")).scalar() == 15_000
        assert conn.execute(sa.text("SELECT count(*) FROM materials")).scalar() == 2_323
    engine.dispose()


def test_partitions_code_versions_and_automation(defs):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.code_version, f"{key.to_user_string()} has no code version"
        daily = key.path[-1] in ("work_orders", "machine_logs") and key.path[0] != "gold"
        assert (node.partitions_def is not None) == daily, key.to_user_string()
        if key.path[0] in ("silver", "gold"):
            assert node.automation_condition is not None, key.to_user_string()
    bronze = graph.get(dg.AssetKey(["bronze", "work_orders"]))
    assert bronze.backfill_policy == dg.BackfillPolicy.single_run()
    assert bronze.partitions_def.get_first_partition_key() == "2025-01-01"


def test_gold_links_its_dbt_docs(journey_home, defs):
    from asgard_assets.gold.assets import dbt_project, docs_page

    spec = defs.resolve_assets_def(dg.AssetKey(["gold", "operator_features"])).specs_by_key[
        dg.AssetKey(["gold", "operator_features"])
    ]
    link = spec.metadata["dbt_docs"].value
    assert link.endswith("#!/model/model.asgard.operator_features")
    page = docs_page(dbt_project)
    assert link.startswith(str(page)) and page.exists()  # written by the journey's dbt step
    assert "operator_features" in page.read_text()


def test_gold_metadata_has_no_unserializable_project(defs):
    """The UI showed "[DbtProject] (unserializable)" among gold's metadata."""
    from dagster_dbt import DbtProject

    node = defs.resolve_asset_graph().get(dg.AssetKey(["gold", "operator_features"]))
    assert not [k for k, v in node.metadata.items() if isinstance(v, DbtProject)]
    assert "dbt_docs" in node.metadata  # the translator's own entries are still there


def test_loading_the_definitions_imports_no_engine_a_step_needs(tmp_path):
    """Every process that loads the code location (a run, the webserver, the daemon) pays
    its imports: dbt's runner, Feast, MLflow, scikit-learn, Kubernetes and Spark load in the
    step that uses them (a re-run that skips gold never imports dbt's runner)."""
    from conftest import imported_after

    heavy = ("feast", "mlflow", "sklearn", "kubernetes", "matplotlib", "pyspark", "onnxruntime")
    selected = f"m == 'dbt.cli.main' or m.split('.')[0] in {heavy!r}"
    assert imported_after("import asgard_assets.definitions", tmp_path, selected) == []


def test_loading_the_definitions_sets_the_collector_and_exits_clean(tmp_path):
    """The definitions freeze what they loaded out of the garbage collector's reach and
    collect less often; at exit it is collectable again: DuckDB's bindings would report
    each of their objects still alive then as leaked, on every run's stderr."""
    import subprocess
    import sys

    from conftest import clean_env

    code = (
        "import gc; import asgard_assets.definitions; import duckdb; "
        "duckdb.connect().sql('SELECT 1').fetchall(); "
        "print(gc.get_freeze_count() > 0, gc.get_threshold()[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean_env(), "ASGARD_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "10000"]
    assert "leaked" not in done.stderr, done.stderr[-3000:]

"""Every resource of both profiles is a complete implementation of its interface: building
one fails on any abstract method left, and each profile provides every interface."""

import inspect

import dagster as dg
import pytest

from asgard_assets.resources import RESOURCES, profile_settings
from asgard_assets.resources.deployer import Deployer
from asgard_assets.resources.image_builder import ImageBuilder
from asgard_assets.resources.ingestion_interface import Ingestion
from asgard_assets.resources.lakehouse import Lakehouse
from asgard_assets.resources.spark import SparkSqlEngine

INTERFACES = {
    "lakehouse": Lakehouse,
    "ingestion": Ingestion,
    "spark": SparkSqlEngine,
    "deployer": Deployer,
    "image_builder": ImageBuilder,
}


def test_the_interfaces_cannot_be_half_implemented():
    for interface in INTERFACES.values():
        assert inspect.isabstract(interface), interface.__name__

    class HalfDeployer(Deployer):
        def current(self, model: str):
            return None

    with pytest.raises(TypeError, match="abstract method"):
        HalfDeployer()


@pytest.mark.parametrize("profile", sorted(RESOURCES))
def test_every_resource_of_the_profile_is_complete(profile, monkeypatch):
    for name in profile_settings(profile):
        monkeypatch.setenv(name, "http://127.0.0.1:9" if "URL" in name else "x")
    assert set(INTERFACES) <= set(RESOURCES[profile])
    for key, make in RESOURCES[profile].items():
        made = make()  # an abstract method left raises TypeError here
        assert isinstance(made, dg.ConfigurableResource), key
        assert not inspect.isabstract(type(made)), f"{profile}/{key}: {type(made).__name__}"
        if key in INTERFACES:
            assert isinstance(made, INTERFACES[key]), f"{profile}/{key}"


def test_building_one_resource_imports_only_its_module(tmp_path):
    """The dbt plugin (inside every dbt build) builds the lakehouse alone: no other resource
    module, nor Feast, MLflow, Kubernetes or dagster-dbt, is imported for it."""
    from conftest import imported_after

    out = imported_after(
        "from asgard_assets.resources import resource; resource('lakehouse')",
        tmp_path,
        "m.startswith('asgard_assets.resources.') "
        "or m.split('.')[0] in ('feast', 'mlflow', 'kubernetes', 'dagster_dbt')",
    )
    # the lakehouse's own modules (its writer, reads, write-audit-publish, failed-write undo,
    # write pins, write results, file inventory and DuckDB bounds), nothing of any other
    # resource
    lakehouse_modules = [
        "data_files",
        "duckdb_bounds",
        "failed_writes",
        "lakehouse",
        "table_files",
        "table_reads",
        "write_audit",
        "write_pins",
        "write_results",
    ]
    assert out == [f"asgard_assets.resources.{m}" for m in lakehouse_modules]


def test_the_profile_chooses_golds_dbt_target_and_says_so(monkeypatch, caplog):
    from asgard_assets.resources import resource

    monkeypatch.setenv("ASGARD_DBT_TARGET", "trino")
    with caplog.at_level("WARNING", logger="asgard"):
        dbt = resource("dbt", "local")
    assert dbt.target == "duckdb"
    assert (
        "ASGARD_DBT_TARGET=trino is not used by the gold asset: ASGARD_PROFILE=local "
        in caplog.text
    )
    caplog.clear()
    monkeypatch.setenv("ASGARD_DBT_TARGET", "duckdb")
    assert resource("dbt", "local").target == "duckdb"
    assert caplog.text == ""

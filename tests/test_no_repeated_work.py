"""No repeated work: a step whose inputs did not change notices it and does nothing else."""

from conftest import journey_assets, materialize

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


def test_gold_skips_dbt_when_silver_is_unchanged_and_rebuilds_when_it_changed(home):
    assets = journey_assets()
    assert materialize(GOLD_STEP, assets=assets).success
    lakehouse = resource("lakehouse")
    built = lakehouse.snapshot_id(GOLD)

    again = materialize("gold/operator_features", assets=assets)
    assert again.success
    mat = _gold_output(again)
    assert "skipped" in mat.metadata
    assert mat.tags["dagster/data_version"] == str(built)
    assert lakehouse.snapshot_id(GOLD) == built  # dbt did not write
    dbt_tests = [
        e
        for e in again.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.step_key == "gold_dbt_assets"
    ]
    assert not dbt_tests

    # a new silver snapshot: dbt runs again and gold gets a new snapshot
    assert materialize("silver/work_orders", assets=assets).success
    rebuilt = materialize("gold/operator_features", assets=assets)
    mat = _gold_output(rebuilt)
    assert "skipped" not in mat.metadata
    assert lakehouse.snapshot_id(GOLD) != built
    assert mat.tags["dagster/data_version"] == str(lakehouse.snapshot_id(GOLD))

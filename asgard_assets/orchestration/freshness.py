"""Freshness: silver and gold are stale when not updated for a day and a bit (the daily
schedule plus slack); a sensor evaluates the checks."""

from datetime import timedelta

import dagster as dg

from ..contracts.sources import SOURCE_TABLES

freshness_checks = dg.build_last_update_freshness_checks(
    assets=[
        *(dg.AssetKey(["silver", t]) for t in SOURCE_TABLES),
        dg.AssetKey(["gold", "operator_features"]),
    ],
    lower_bound_delta=timedelta(hours=26),
)
freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=freshness_checks, name="freshness_checks_sensor"
)

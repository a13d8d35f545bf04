"""Freshness: silver and gold are stale when not updated for a day and a bit (the daily
schedule plus slack); a sensor evaluates the checks.

Dagster 1.13 marks these builders superseded by ``FreshnessPolicy``, whose evaluation is
not an asset check (no check result in the UI, no check a sensor can react to); the
checks stay, and their SupersessionWarning is silenced here, where they are built."""

import warnings
from datetime import timedelta

import dagster as dg

from ..contracts.sources import SOURCE_TABLES

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
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

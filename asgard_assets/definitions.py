"""The table of contents: assets, checks, jobs, schedules, sensors, and the resources of
the active profile (ASGARD_PROFILE)."""

import atexit
import gc

import dagster as dg

from .bronze.assets import bronze_assets
from .bronze.checks import bronze_checks
from .bronze.contract_checks import bronze_contract_checks
from .deployments.assets import operator_efficiency_service
from .features.assets import operator_efficiency
from .gold.assets import gold_dbt_assets
from .maintenance.assets import iceberg_tables, maintenance_job, maintenance_schedule
from .models.assets import operator_efficiency_predictor
from .models.checks import feature_drift, quality_gate
from .orchestration.freshness import freshness_checks, freshness_sensor
from .orchestration.jobs import jobs
from .orchestration.schedules import schedules
from .orchestration.sensors import sensors
from .partitions import single_run_backfills
from .resources import resources_for
from .silver.assets import silver_assets

defs = dg.Definitions(
    assets=[
        *bronze_assets,
        *silver_assets,
        gold_dbt_assets,
        operator_efficiency,
        operator_efficiency_predictor,
        operator_efficiency_service,
        iceberg_tables,
    ],
    asset_checks=[
        *bronze_checks,
        *bronze_contract_checks,
        quality_gate,
        feature_drift,
        *freshness_checks,
    ],
    jobs=[*jobs, maintenance_job],
    schedules=[*schedules, maintenance_schedule],
    sensors=[*sensors, freshness_sensor],
    resources=resources_for(),
    # One process: the journey's steps are small, and a process per step costs seconds each.
    executor=dg.in_process_executor,
)

# every asset backfills a range of days in one run, so the CLI's `--select '*'
# --partition-range FIRST...LAST` runs the whole graph (partitions.single_run_backfills)
defs = single_run_backfills(defs)

# What is loaded by now (Dagster, the definitions, dagster-dbt) lives as long as the process:
# out of the garbage collector's reach, so the full collections that a step's imports set off
# (dbt, MLflow, scikit-learn: millions of objects) do not walk it again; and the youngest
# generation collected every 10,000 allocations instead of 700. GC time in the one-new-day
# bench: 2.5 s -> 1.3 s (bench/incremental.py); peak RSS at 100x unchanged (bench/scale.py)
gc.freeze()
# back in reach at exit, so the final collection frees them as before (DuckDB's bindings
# report every object of theirs still alive then as a leak)
atexit.register(gc.unfreeze)
gc.set_threshold(10_000, 10, 10)

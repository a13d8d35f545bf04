"""Jobs: the journey in four selectable parts, from the UI (Jobs) or the CLI
(`dagster job execute -m asgard_assets.definitions -j ingest`)."""

import dagster as dg

# daily-partitioned through its assets (work orders, machine logs)
ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("bronze", "silver"),
    description=(
        "Source tables into bronze and on into silver: the run's days of work orders and "
        "machine logs, rows past the cursor of the others."
    ),
)
transform_job = dg.define_asset_job(
    "transform",
    selection=dg.AssetSelection.groups("silver", "gold"),
    description="Bronze to silver (Spark SQL) to gold (dbt).",
)
train_and_deploy_job = dg.define_asset_job(
    "train_and_deploy",
    selection=dg.AssetSelection.groups("features", "models", "deployments"),
    description="Refresh the feature view, train, gate, and deploy the champion.",
)
deploy_job = dg.define_asset_job(
    "deploy",
    selection=dg.AssetSelection.groups("deployments"),
    description="Serve the current champion version.",
)
journey_job = dg.define_asset_job(
    "journey",
    selection=dg.AssetSelection.all(),
    description="The whole journey, source to /predict.",
)

jobs = [ingest_job, transform_job, train_and_deploy_job, deploy_job, journey_job]

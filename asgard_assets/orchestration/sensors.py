"""Sensors: new source rows -> ingest -> transform -> retrain -> deploy, and failures
recorded where an operator looks.

With the sensors on, a new or changed row in the source reaches a retrained, redeployed
model without anyone clicking; the quality gate still decides whether it is deployed.
"""

import json
from datetime import UTC, datetime

import dagster as dg

from ..models.training import MODEL_NAME
from ..resources.deployer import Deployer
from ..resources.ingestion import Ingestion, bronze_cursor
from ..resources.lakehouse import Lakehouse
from ..resources.mlflow_tracking import MlflowTracking
from ..settings import SOURCE_TABLES, asgard_home
from .jobs import deploy_job, ingest_job, train_and_deploy_job, transform_job


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=60,
    description="Source rows newer than bronze's updated_at cursor start an ingest.",
)
def new_source_rows(
    context: dg.SensorEvaluationContext, ingestion: Ingestion, lakehouse: Lakehouse
):
    stale = []
    for table in SOURCE_TABLES:
        source = ingestion.source_cursor(table)
        loaded = bronze_cursor(lakehouse, f"bronze.{table}")
        if source is not None and (loaded is None or source > loaded):
            stale.append((table, source))
    if not stale:
        return dg.SkipReason("bronze is up to date with the source")
    return dg.RunRequest(
        run_key="|".join(f"{t}@{ts.isoformat()}" for t, ts in stale),
        asset_selection=[dg.AssetKey(["bronze", t]) for t, _ in stale],
        tags={"asgard/trigger": "new_source_rows"},
    )


@dg.multi_asset_sensor(
    monitored_assets=[dg.AssetKey(["bronze", t]) for t in SOURCE_TABLES],
    job=transform_job,
    minimum_interval_seconds=30,
    description="Bronze loads that brought rows start the transform (silver and gold).",
)
def bronze_loaded(context: dg.MultiAssetSensorEvaluationContext):
    records = context.latest_materialization_records_by_key()
    new = [r for r in records.values() if r and _rows_written(r) > 0]
    context.advance_all_cursors()
    if not new:
        return dg.SkipReason("no bronze load brought new rows")
    return dg.RunRequest(
        run_key=",".join(sorted(r.run_id for r in new)), tags={"asgard/trigger": "bronze_loaded"}
    )


def _rows_written(record) -> int:
    meta = record.asset_materialization.metadata if record.asset_materialization else {}
    value = meta.get("rows_written")
    return int(value.value) if value is not None else 0


@dg.asset_sensor(
    asset_key=dg.AssetKey(["gold", "operator_features"]),
    job=train_and_deploy_job,
    minimum_interval_seconds=30,
    description="A new gold snapshot retrains the model (and deploys it if it passes the gate).",
)
def gold_changed(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    return dg.RunRequest(run_key=asset_event.run_id, tags={"asgard/trigger": "gold_changed"})


@dg.sensor(
    job=deploy_job,
    minimum_interval_seconds=60,
    description="A champion version that is not the one serving gets deployed.",
)
def champion_changed(
    context: dg.SensorEvaluationContext, mlflow_tracking: MlflowTracking, deployer: Deployer
):
    champion = mlflow_tracking.champion(MODEL_NAME)
    if champion is None:
        return dg.SkipReason("no version has passed the quality gate yet")
    current = deployer.current(MODEL_NAME)
    if current is not None and current.version == str(champion.version):
        return dg.SkipReason(f"version {champion.version} is already serving")
    return dg.RunRequest(
        run_key=f"champion-{champion.version}", tags={"asgard/trigger": "champion_changed"}
    )


@dg.run_failure_sensor(
    description="Records every failed run in $ASGARD_HOME/alerts/run_failures.jsonl."
)
def record_failures(context: dg.RunFailureSensorContext):
    alerts = asgard_home() / "alerts"
    alerts.mkdir(parents=True, exist_ok=True)
    record = {
        "at": datetime.now(UTC).isoformat(),
        "run_id": context.dagster_run.run_id,
        "job": context.dagster_run.job_name,
        "message": context.failure_event.message,
        "steps": [e.step_key for e in context.get_step_failure_events()],
    }
    with (alerts / "run_failures.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    context.log.error(f"run {record['run_id']} ({record['job']}) failed: {record['message']}")


sensors = [new_source_rows, bronze_loaded, gold_changed, champion_changed, record_failures]

"""Sensors: new source rows -> ingest (bronze, then silver) -> (automation: gold) ->
retrain -> deploy, and failures recorded where an operator looks.

With the sensors on, a new or changed row in the source reaches a retrained, redeployed
model without anyone clicking; the quality gate still decides whether it is deployed.
The sensor's run takes the changed days through bronze and silver; declarative automation
(``transform_automation``) rebuilds gold after it, and any silver partition whose bronze
partition changed by other means (a person, another job).
"""

import json
from datetime import UTC, datetime

import dagster as dg

from ..contracts.model import MODEL_NAME
from ..contracts.sources import SOURCE_TABLES
from ..partitions import daily, days_in, is_partitioned, range_tags, stale_partitions
from ..resources.bronze_state import bronze_cursor
from ..resources.deployer import Deployer
from ..resources.ingestion_interface import Ingestion
from ..resources.lakehouse import Lakehouse
from ..resources.mlflow_tracking import MlflowTracking
from ..settings import asgard_home
from .jobs import deploy_job, ingest_job, train_and_deploy_job

TRIGGER = "asgard/trigger"


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=60,
    description=(
        "Source rows newer than bronze's updated_at cursor start an ingest into bronze and "
        "silver: of the days they fall on for partitioned tables, of the rows past the cursor "
        "for the others."
    ),
)
def new_source_rows(
    context: dg.SensorEvaluationContext, ingestion: Ingestion, lakehouse: Lakehouse
):
    if stale := stale_partitions():
        # the run would see the new day, this tick would not: its rows would fall between
        return dg.SkipReason(stale)
    requests = []
    by_day: dict[str, dict[str, str]] = {}  # day -> {table changed on it: its source cursor}
    unpartitioned = []
    for table in SOURCE_TABLES:
        source = ingestion.source_cursor(table)
        loaded = bronze_cursor(lakehouse, f"bronze.{table}")
        if source is None or (loaded is not None and source <= loaded):
            continue
        key = f"{table}@{source.isoformat()}"
        if not is_partitioned(table):
            unpartitioned.append((table, key))
        elif loaded is None:  # never loaded: every day with rows, as one run
            days = days_in(ingestion.days(table))
            if days:
                requests.append(_request([table], f"{key}:all", tags=range_tags(days)))
        else:
            days = days_in(ingestion.days(table, updated_after=loaded))
            # rows outside every partition (not started yet, far dates) have no day: the
            # latest day's run replaces them too
            for day in days or [daily().get_last_partition_key()]:
                by_day.setdefault(day, {})[table] = source.isoformat()
                context.log.info(f"{table}: rows changed on {day}")
    if unpartitioned:
        tables, keys = zip(*unpartitioned, strict=True)
        requests.append(_request(list(tables), "|".join(keys)))
    for day, tables in sorted(by_day.items()):
        # the cursor in the key: a later change to the same day is a new run
        key = "|".join(f"{t}@{day}:{cursor}" for t, cursor in tables.items())
        requests.append(_request(list(tables), key, partition_key=day))
    if not requests:
        return dg.SkipReason("bronze is up to date with the source")
    return requests


def _request(tables: list[str], run_key: str, tags: dict | None = None, **kw) -> dg.RunRequest:
    # the tables' bronze and, in the same run, their silver: one run per day of new rows
    # instead of two (the automation, evaluated next, finds silver done and asks for gold)
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[dg.AssetKey([layer, t]) for layer in ("bronze", "silver") for t in tables],
        tags={TRIGGER: "new_source_rows", **(tags or {})},
        **kw,
    )


transform_automation = dg.AutomationConditionSensorDefinition(
    "transform_automation",
    target=dg.AssetSelection.groups("silver", "gold"),
    minimum_interval_seconds=30,
    description=(
        "Silver partitions follow their bronze partition (any day, late corrections too); "
        "gold follows silver once nothing upstream is missing or running."
    ),
)


@dg.asset_sensor(
    asset_key=dg.AssetKey(["gold", "operator_features"]),
    job=train_and_deploy_job,
    minimum_interval_seconds=30,
    description="A new gold snapshot retrains the model (and deploys it if it passes the gate).",
)
def gold_changed(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    return dg.RunRequest(run_key=asset_event.run_id, tags={TRIGGER: "gold_changed"})


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
    return dg.RunRequest(run_key=f"champion-{champion.version}", tags={TRIGGER: "champion_changed"})


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


sensors = [
    new_source_rows,
    transform_automation,
    gold_changed,
    champion_changed,
    record_failures,
]

"""What the demo journey built, printed at its end."""

from __future__ import annotations

import json

# what printing needs, imported with this module (on the demo's warm-up thread, while the
# run's last steps go): the Dagster instance's storage and the SQL catalog (~0.4 s)
import pyiceberg.catalog.sql  # noqa: F401

from .contracts.model import MODEL_NAME
from .orchestration import dagster_instance  # noqa: F401
from .resources import resource
from .resources.deployer import LocalDeployer
from .resources.lakehouse import Lakehouse


def check_results(instance, run_id: str) -> dict[str, list[str]]:
    """The run's asset checks by outcome: passed, warned, failed (``asset:check`` names)."""
    import dagster as dg

    outcomes: dict[str, list[str]] = {"passed": [], "warned": [], "failed": []}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        check = entry.dagster_event.event_specific_data
        name = f"{check.asset_key.to_user_string()}:{check.check_name}"
        if check.passed:
            outcomes["passed"].append(name)
        elif check.severity == dg.AssetCheckSeverity.WARN:
            outcomes["warned"].append(name)
        else:
            outcomes["failed"].append(name)
    return {k: sorted(v) for k, v in outcomes.items()}


def print_checks(instance, run_id: str) -> None:
    results = check_results(instance, run_id)
    print(
        f"\nAsset checks: {len(results['passed'])} passed, {len(results['warned'])} warned, "
        f"{len(results['failed'])} failed"
    )
    for outcome in ("warned", "failed", "passed"):
        if results[outcome]:
            print(f"  {outcome}: {', '.join(results[outcome])}")


def trained_metrics(instance, version: str) -> dict[str, float] | None:
    """The test metrics a model version was trained with, from the materialization that
    registered it (Dagster's own records: no MLflow import, ~2 s)."""
    from .models.checks import MODEL_KEY

    for record in instance.fetch_materializations(MODEL_KEY, limit=100).records:
        metadata = record.asset_materialization.metadata
        trained = metadata.get("model_version")
        if trained is not None and str(trained.value) == version and "accuracy" in metadata:
            return {k: metadata[k].value for k in ("accuracy", "f1", "roc_auc")}
    return None


def print_summary(run_id: str | None = None) -> None:
    """Tables, the served model, the service; then, with the run's id, its check results."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        _print_summary(instance, run_id)


def _print_summary(instance, run_id: str | None) -> None:
    lakehouse: Lakehouse = resource("lakehouse")
    catalog = lakehouse.catalog()
    print("\nIceberg tables (current snapshot):")
    for namespace in ("bronze", "silver", "gold"):
        for ident in sorted(catalog.list_tables(namespace)):
            result = lakehouse.describe(".".join(ident))
            print(
                f"  {result.identifier:<28} {result.total_rows:>8,} rows  snapshot {result.snapshot_id}"
            )

    # the deployment serves the champion: the deploy step deploys nothing else
    deployment = LocalDeployer().current(MODEL_NAME)
    if deployment is not None:
        metrics = trained_metrics(instance, deployment.version)
        scores = (
            f": accuracy {metrics['accuracy']:.3f}, f1 {metrics['f1']:.3f}, "
            f"roc_auc {metrics['roc_auc']:.3f}"
            if metrics
            else ""
        )
        print(
            f"\nModel {MODEL_NAME} v{deployment.version} (champion){scores}  "
            f"[MLflow store {resource('mlflow_tracking').uri()}]"
        )
        body = json.dumps({"operator_ids": ["EMP-001", "EMP-002"]})
        print(
            f"\nInference service: {deployment.url}  (pid {deployment.pid}, docs {deployment.url}/docs)"
        )
        print(
            f"  curl -s -X POST {deployment.url}/predict -H 'content-type: application/json' -d '{body}'"
        )
        print("  stop it with: .venv/bin/asgard stop")
    if run_id:
        print_checks(instance, run_id)

"""What the demo journey built, printed at its end."""

from __future__ import annotations

import json

from .resources import resource


def print_summary() -> None:
    lakehouse = resource("lakehouse")
    catalog = lakehouse.catalog()
    print("\nIceberg tables (current snapshot):")
    for namespace in ("bronze", "silver", "gold"):
        for ident in sorted(catalog.list_tables(namespace)):
            result = lakehouse.describe(".".join(ident))
            print(
                f"  {result.identifier:<28} {result.total_rows:>8,} rows  snapshot {result.snapshot_id}"
            )

    from .contracts.model import MODEL_NAME
    from .resources.deployer import LocalDeployer

    tracking = resource("mlflow_tracking")
    champion = tracking.champion(MODEL_NAME)
    if champion is not None:
        metrics = tracking.client().get_run(champion.run_id).data.metrics
        print(
            f"\nModel {MODEL_NAME} v{champion.version} (champion): accuracy {metrics['accuracy']:.3f}, "
            f"f1 {metrics['f1']:.3f}, roc_auc {metrics['roc_auc']:.3f}  [MLflow store {tracking.uri()}]"
        )
    deployment = LocalDeployer().current(MODEL_NAME)
    if deployment is not None:
        body = json.dumps({"operator_ids": ["EMP-001", "EMP-002"]})
        print(
            f"\nInference service: {deployment.url}  (pid {deployment.pid}, docs {deployment.url}/docs)"
        )
        print(
            f"  curl -s -X POST {deployment.url}/predict -H 'content-type: application/json' -d '{body}'"
        )

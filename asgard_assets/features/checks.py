"""Drift of the feature view against what the champion was trained on."""

import dagster as dg

from ..models.drift import PSI_WARN, psi_by_feature
from ..models.training import FEATURES, MODEL_NAME, matrix
from ..resources.feature_store import GOLD_TABLE, VIEW
from ..resources.lakehouse import Lakehouse
from ..resources.mlflow_tracking import MlflowTracking


@dg.asset_check(asset=dg.AssetKey(["features", VIEW]), name="feature_drift", blocking=False)
def feature_drift(lakehouse: Lakehouse, mlflow_tracking: MlflowTracking) -> dg.AssetCheckResult:
    """Population stability index per feature, current gold features against the champion's
    training distribution; warns when any feature is above 0.2."""
    import mlflow

    champion = mlflow_tracking.champion(MODEL_NAME)
    if champion is None:
        return dg.AssetCheckResult(
            passed=True, description="no champion yet: nothing to compare with"
        )
    mlflow_tracking.client()
    ref = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/reference_distribution.json")
    current = matrix(
        lakehouse.query(f"SELECT {', '.join(FEATURES)} FROM {GOLD_TABLE}", GOLD_TABLE).df()
    )
    scores = psi_by_feature(ref, current)
    drifted = {f: round(v, 3) for f, v in scores.items() if v > PSI_WARN}
    return dg.AssetCheckResult(
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "psi": dg.MetadataValue.json({f: round(v, 4) for f, v in scores.items()}),
            "champion_version": str(champion.version),
            "threshold": PSI_WARN,
        },
        description=f"drifted: {drifted}"
        if drifted
        else f"all features within PSI {PSI_WARN} of champion v{champion.version}",
    )

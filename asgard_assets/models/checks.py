"""Checks that judge with the model: the blocking quality gate on each new version, and the
drift of the feature view against what the champion was trained on."""

from dataclasses import dataclass

import dagster as dg

from ..contracts.model import FEATURES, GOLD_TABLE, MODEL_NAME, VIEW
from ..resources.lakehouse import Lakehouse
from ..resources.mlflow_tracking import CHAMPION, MlflowTracking
from .drift import PSI_WARN, psi_by_feature

MODEL_KEY = dg.AssetKey(["models", MODEL_NAME])


@dataclass(frozen=True)
class Gate:
    min_accuracy: float = 0.90
    min_f1: float = 0.80
    champion_tolerance: float = 0.02

    def evaluate(self, metrics: dict[str, float], champion: dict[str, float] | None) -> list[str]:
        """Reasons the candidate fails; empty when it passes."""
        reasons = []
        if metrics["accuracy"] < self.min_accuracy:
            reasons.append(f"accuracy {metrics['accuracy']:.3f} < {self.min_accuracy}")
        if metrics["f1"] < self.min_f1:
            reasons.append(f"f1 {metrics['f1']:.3f} < {self.min_f1}")
        if champion:
            for m in ("accuracy", "f1"):
                if metrics[m] < champion[m] - self.champion_tolerance:
                    reasons.append(
                        f"{m} {metrics[m]:.3f} worse than champion {champion[m]:.3f} by more than {self.champion_tolerance}"
                    )
        return reasons


class GateConfig(dg.Config):
    min_accuracy: float = Gate.min_accuracy
    min_f1: float = Gate.min_f1
    champion_tolerance: float = Gate.champion_tolerance


@dg.asset_check(asset=MODEL_KEY, name="quality_gate", blocking=True)
def quality_gate(
    context: dg.AssetCheckExecutionContext, config: GateConfig, mlflow_tracking: MlflowTracking
) -> dg.AssetCheckResult:
    """Accuracy and F1 over thresholds and not worse than the current champion by more than a
    tolerance. A passing version becomes `champion`; a failing one stays registered but is
    never deployed (this check blocks the deployment)."""
    event = context.instance.get_latest_materialization_event(MODEL_KEY)
    version = str(event.asset_materialization.metadata["model_version"].value)
    client = mlflow_tracking.client()
    candidate = client.get_run(client.get_model_version(MODEL_NAME, version).run_id).data.metrics
    champion = mlflow_tracking.champion(MODEL_NAME)
    champion_metrics = (
        client.get_run(champion.run_id).data.metrics
        if champion and str(champion.version) != version
        else None
    )
    gate = Gate(config.min_accuracy, config.min_f1, config.champion_tolerance)
    reasons = gate.evaluate(candidate, champion_metrics)
    passed = not reasons
    client.set_model_version_tag(
        MODEL_NAME, version, "quality_gate", "passed" if passed else "failed"
    )
    replaced = champion is not None and str(champion.version) != version
    if passed:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
        if replaced and int(version) < int(champion.version):
            context.log.warning(
                f"version {version} is {CHAMPION} again, replacing the newer version "
                f"{champion.version}: this run's gold snapshot and training config are version "
                f"{version}'s (materialize the model with version {champion.version}'s config "
                "to have it back)"
            )
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "model_version": version,
            "accuracy": candidate["accuracy"],
            "f1": candidate["f1"],
            "previous_champion": str(champion.version) if champion else "none",
            "champion_now": version if passed else (str(champion.version) if champion else "none"),
            "reasons": "; ".join(reasons) or "passed",
        },
        description=(
            f"version {version} refused: {'; '.join(reasons)} ({_stays(champion, version)})"
            if reasons
            else f"version {version} is {CHAMPION}"
            + (f", replacing version {champion.version}" if replaced else "")
        ),
    )


@dg.asset_check(asset=dg.AssetKey(["features", VIEW]), name="feature_drift", blocking=False)
def feature_drift(lakehouse: Lakehouse, mlflow_tracking: MlflowTracking) -> dg.AssetCheckResult:
    """Population stability index per feature, current gold features against the champion's
    training distribution; warns when any feature is above 0.2."""
    import mlflow

    from .training import matrix

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


def _stays(champion, version: str) -> str:
    """Who serves after ``version`` was refused."""
    if champion is None:
        return f"no {CHAMPION} yet"
    if str(champion.version) == version:
        return f"it keeps the {CHAMPION} alias it had"
    return f"version {champion.version} stays {CHAMPION}"

"""models/operator_efficiency_predictor: trained from the feature view, tracked and
registered in MLflow; the quality gate decides which version becomes ``champion``."""

import base64
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from ..metadata import code_version
from ..resources.feature_store import GOLD_TABLE, FeatureStoreResource
from ..resources.lakehouse import Lakehouse
from ..resources.mlflow_tracking import CHAMPION, MlflowTracking
from .drift import reference
from .training import FEATURES, MODEL_NAME, Gate, importance_plot, matrix, to_onnx, train

MODEL_KEY = dg.AssetKey(["models", MODEL_NAME])


class TrainConfig(dg.Config):
    n_estimators: int = 100
    shuffle_labels: bool = False
    """Train on permuted labels: a useless model, to see the quality gate stop it."""


def _requirements() -> list[str]:
    # explicit pins: MLflow would otherwise spend ~15 s inferring them
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("mlflow", "scikit-learn", "cloudpickle", "numpy", "pandas", "onnxruntime")
    ]


@dg.asset(
    key=MODEL_KEY,
    deps=[dg.AssetKey(["features", "operator_efficiency"])],
    group_name="models",
    kinds={"mlflow", "scikitlearn"},
    code_version=code_version("models/training.py"),
)
def operator_efficiency_predictor(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    feature_store: FeatureStoreResource,
    lakehouse: Lakehouse,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """RandomForest predicting `is_high_performer` from the operator features, trained on
    point-in-time features from the feature store (80/20 split, fixed seed), logged to
    MLflow with an ONNX serving form and registered as a new version."""
    import mlflow
    from mlflow.models import infer_signature

    ids = [
        r[0]
        for r in lakehouse.query(
            f"SELECT operator_id FROM {GOLD_TABLE} ORDER BY 1", GOLD_TABLE
        ).fetchall()
    ]
    asked = pd.DataFrame({"operator_id": ids, "event_timestamp": [datetime.now(UTC)] * len(ids)})
    hist = feature_store.historical(asked)
    if hist.missing:
        context.log.warning(f"{hist.missing} operators had no features at training time")
    trained = train(
        hist.frame, n_estimators=config.n_estimators, shuffle_labels=config.shuffle_labels
    )
    onnx_blob, onnx_diff = to_onnx(trained.model, trained.x_test)
    plot = importance_plot(trained.model)

    mlflow_tracking.client()
    with mlflow.start_run(
        experiment_id=mlflow_tracking.experiment_id(),
        run_name=f"{MODEL_NAME}-{context.run.run_id[:8]}",
    ) as run:
        mlflow.log_params(trained.params)
        mlflow.log_metrics({**trained.metrics, "onnx_max_abs_diff": onnx_diff})
        mlflow.set_tags(
            {
                "asgard.dagster_run_id": context.run.run_id,
                "asgard.gold_snapshot": str(lakehouse.describe(GOLD_TABLE).snapshot_id),
            }
        )
        example = matrix(trained.x_test.head(3))
        info = mlflow.sklearn.log_model(
            trained.model,
            name="model",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            signature=infer_signature(example, trained.model.predict(example)),
            input_example=example,
            pip_requirements=_requirements(),
        )
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model.onnx").write_bytes(onnx_blob)
            mlflow.log_artifact(str(Path(tmp) / "model.onnx"), artifact_path="onnx")
            (Path(tmp) / "feature_importance.png").write_bytes(plot)
            mlflow.log_artifact(str(Path(tmp) / "feature_importance.png"))
        # what the model was trained on, for the drift check on the feature view
        mlflow.log_dict(reference(matrix(hist.frame)), "reference_distribution.json")
    version = mlflow.register_model(info.model_uri, MODEL_NAME, tags={"run_id": run.info.run_id})
    mlflow_tracking.client().set_model_version_tag(
        MODEL_NAME, version.version, "onnx_artifact", f"runs:/{run.info.run_id}/onnx/model.onnx"
    )
    image = base64.b64encode(plot).decode()
    return dg.MaterializeResult(
        metadata={
            **{k: dg.MetadataValue.float(v) for k, v in trained.metrics.items()},
            "model_version": version.version,
            "mlflow_run_id": run.info.run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(run.info.run_id)),
            "training_rows": trained.n_train,
            "test_rows": len(trained.x_test),
            "features": dg.MetadataValue.json(FEATURES),
            "onnx_max_abs_diff": onnx_diff,
            "feature_importance": dg.MetadataValue.md(
                f"![feature importance](data:image/png;base64,{image})"
            ),
        }
    )


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
    if passed:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
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
        description="; ".join(reasons) or f"version {version} is {CHAMPION}",
    )

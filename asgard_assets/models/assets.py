"""models/operator_efficiency_predictor: trained from the feature service, tracked and
registered in MLflow; the quality gate (``checks.py``) decides which version becomes
``champion``."""

import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field, ValidationError

from ..contracts.model import ENTITY_KEY, FEATURES, GOLD_TABLE, LABEL, MODEL_NAME, TIMESTAMP
from ..metadata import code_version, skipped
from ..orchestration.retries import EXTERNAL_SYSTEM_RETRY
from ..resources.feature_store import FeatureStoreResource
from ..resources.lakehouse import Lakehouse
from ..resources.mlflow_tracking import MlflowTracking
from .checks import MODEL_KEY
from .drift import reference
from .estimators import Estimator, RandomForest

CODE_VERSION = code_version("models/training.py", "models/estimators.py", "contracts/model.py")
FINGERPRINT_TAG = "asgard.training_fingerprint"


class TrainConfig(dg.Config):
    estimator: Estimator = Field(default_factory=RandomForest, discriminator="kind")
    """One of random_forest, gradient_boosting, hist_gradient_boosting, logistic_regression,
    with its hyperparameters, e.g. {"gradient_boosting": {"learning_rate": 0.05}}."""
    shuffle_labels: bool = False
    """Train on permuted labels: a useless model, to see the quality gate stop it."""

    def __init__(self, **data):
        # pydantic judges the bounds when the step starts, where the retry policy (for
        # MLflow's blips) would try a bad value three times: it fails at once instead
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise dg.Failure(f"training config refused: {e}", allow_retries=False) from e


def _requirements() -> list[str]:
    # explicit pins: MLflow would otherwise spend ~15 s inferring them
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("mlflow", "scikit-learn", "cloudpickle", "numpy", "pandas", "onnxruntime")
    ]


def fingerprint(gold_snapshot: str, config: TrainConfig) -> str:
    """What a version is a function of: gold's snapshot, the training config, the code."""
    text = json.dumps([gold_snapshot, config.model_dump(), CODE_VERSION], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _existing_version(mlflow_tracking: MlflowTracking, fp: str):
    """The registered version already trained from exactly this, or None."""
    client = mlflow_tracking.client()
    runs = client.search_runs(
        [mlflow_tracking.experiment_id()],
        filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fp}'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        versions = client.search_model_versions(
            f"name = '{MODEL_NAME}' and run_id = '{run.info.run_id}'"
        )
        if versions:
            return versions[0]
    return None


@dg.asset(
    key=MODEL_KEY,
    deps=[dg.AssetKey(["features", "operator_efficiency"])],
    group_name="models",
    kinds={"mlflow", "scikitlearn"},
    code_version=CODE_VERSION,
    retry_policy=EXTERNAL_SYSTEM_RETRY,  # MLflow tracking and registry
)
def operator_efficiency_predictor(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    feature_store: FeatureStoreResource,
    lakehouse: Lakehouse,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """The estimator chosen in run config (random forest by default) predicting
    `is_high_performer`, trained on point-in-time features of the model's Feast feature
    service (80/20 split, fixed seed), logged to MLflow with an ONNX serving form and
    registered as a new version. When gold's snapshot, the config and the code are those of
    a registered version, that version is reported again and nothing is trained (its data
    version is the same)."""
    gold_snapshot = str(lakehouse.describe(GOLD_TABLE).snapshot_id)
    fp = fingerprint(gold_snapshot, config)
    existing = _existing_version(mlflow_tracking, fp)
    if existing is not None:
        reason = (
            f"version {existing.version} was trained from exactly this (gold snapshot "
            f"{gold_snapshot}, the same config and code)"
        )
        return dg.MaterializeResult(
            data_version=dg.DataVersion(fp),
            metadata={
                "model_version": str(existing.version),
                "mlflow_run_id": existing.run_id,
                "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(existing.run_id)),
                "estimator": config.estimator.kind,
                **skipped(context, reason),  # last: logged once the rest is known
            },
        )
    return _train_and_register(
        context, config, feature_store, lakehouse, mlflow_tracking, fp, gold_snapshot
    )


def _train_and_register(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    feature_store: FeatureStoreResource,
    lakehouse: Lakehouse,
    mlflow_tracking: MlflowTracking,
    fp: str,
    gold_snapshot: str,
) -> dg.MaterializeResult:
    import mlflow
    from mlflow.models import infer_signature

    from .training import importance_table, importances, matrix, to_onnx, train

    # each operator's label with the time its features were observed: the feature service
    # gives the features as of that time (point in time)
    labels = lakehouse.query(
        f"SELECT {ENTITY_KEY}, {TIMESTAMP} AS event_timestamp, {LABEL} FROM {GOLD_TABLE} ORDER BY 1",
        GOLD_TABLE,
    ).df()
    hist = feature_store.historical(labels)
    if hist.missing:
        context.log.warning(f"{hist.missing} operators had no features at training time")
    trained = train(hist.frame, config.estimator, shuffle_labels=config.shuffle_labels)
    onnx_blob, onnx_diff = to_onnx(trained.model, trained.x_test)
    importance = importances(trained)

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
                "asgard.gold_snapshot": gold_snapshot,
                "asgard.code_version": CODE_VERSION,
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
        mlflow.log_dict(importance, "feature_importance.json")
        # what the model was trained on, for the drift check on the feature view
        mlflow.log_dict(reference(matrix(hist.frame)), "reference_distribution.json")
    version = mlflow.register_model(info.model_uri, MODEL_NAME, tags={"run_id": run.info.run_id})
    client = mlflow_tracking.client()
    client.set_model_version_tag(
        MODEL_NAME, version.version, "onnx_artifact", f"runs:/{run.info.run_id}/onnx/model.onnx"
    )
    # last: only a fully registered version is found again by its fingerprint
    client.set_tag(run.info.run_id, FINGERPRINT_TAG, fp)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(fp),
        metadata={
            **{k: dg.MetadataValue.float(v) for k, v in trained.metrics.items()},
            "model_version": version.version,
            "estimator": config.estimator.kind,
            "hyperparameters": dg.MetadataValue.json(config.estimator.params()),
            "mlflow_run_id": run.info.run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(run.info.run_id)),
            "training_rows": trained.n_train,
            "test_rows": len(trained.x_test),
            "features": dg.MetadataValue.json(FEATURES),
            "onnx_max_abs_diff": onnx_diff,
            "feature_importance": dg.MetadataValue.md(importance_table(importance)),
        },
    )

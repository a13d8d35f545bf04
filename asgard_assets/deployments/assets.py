"""deployments/operator_efficiency_predictor: the champion version, serving /predict."""

import dagster as dg

from ..contracts.model import MODEL_NAME
from ..metadata import code_version, skipped
from ..models.assets import MODEL_KEY
from ..orchestration.retries import EXTERNAL_SYSTEM_RETRY
from ..resources.deployer import Deployer
from ..resources.image_builder import ImageBuilder
from ..resources.mlflow_tracking import MlflowTracking
from ..serving.model import ServedModel
from ..settings import deployments_dir
from .bundle import MODEL_DIR, BundleSpec, write_bundle


@dg.asset(
    key=["deployments", MODEL_NAME],
    deps=[MODEL_KEY],
    group_name="deployments",
    kinds={"fastapi", "kubernetes"},
    code_version=code_version(
        "serving/app.py",
        "serving/model.py",
        "serving/swap.py",
        "deployments/bundle.py",
        "resources/deployer.py",
    ),  # fmt: skip
    retry_policy=EXTERNAL_SYSTEM_RETRY,
)
def operator_efficiency_service(
    context: dg.AssetExecutionContext,
    mlflow_tracking: MlflowTracking,
    deployer: Deployer,
    image_builder: ImageBuilder,
) -> dg.MaterializeResult:
    """The inference service for the `champion` version (swapped into the running service
    locally, a Deployment + Service at scale), and the deploy bundle the k8s profile ships.
    Runs only after the model's quality gate passed."""
    champion = mlflow_tracking.champion(MODEL_NAME)
    if champion is None:
        raise dg.Failure(
            f"{MODEL_NAME} has no champion version: no version has passed the quality gate",
            allow_retries=False,
        )
    version = str(champion.version)
    spec = BundleSpec(MODEL_NAME, version, image=image_builder.image_for(MODEL_NAME, version))
    bundle = write_bundle(spec, deployments_dir() / MODEL_NAME / f"v{version}")
    # the version resolved here, where MLflow is loaded already: the service starts from it
    ServedModel.save(spec.model_uri, bundle / MODEL_DIR)
    image = image_builder.build(bundle, spec.image)
    deployment, changed = deployer.deploy(MODEL_NAME, version, bundle)
    context.log.info(f"version {version} serving at {deployment.url}/predict")
    return dg.MaterializeResult(
        metadata={
            "url": dg.MetadataValue.url(deployment.url),
            "predict": dg.MetadataValue.url(f"{deployment.url}/predict"),
            "docs": dg.MetadataValue.url(f"{deployment.url}/docs"),
            "model_version": version,
            "port": deployment.port or 0,
            "pid": deployment.pid or 0,
            "changed": changed,
            **({} if changed else skipped(context, f"version {version} is serving already")),
            "bundle": dg.MetadataValue.path(str(bundle)),
            "image": image,
        }
    )

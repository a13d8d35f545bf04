"""Resources by profile: ``ASGARD_PROFILE`` picks one set; assets only see resource names.

Each profile maps a resource name to a factory, so code outside Dagster can build just the
one it needs (the dbt plugin runs inside dbt and must not import dagster-dbt).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import dagster as dg

from ..settings import profile
from .deployer import KubernetesDeployer, LocalDeployer
from .feature_store import FeatureStoreResource
from .ingestion import AirbyteIngestion, EmbeddedIngestion
from .lakehouse import IcebergLakehouse
from .mlflow_tracking import MlflowTracking
from .spark import DuckDbSparkSql, SparkOperatorEngine

DBT_TARGETS = {"local": "duckdb", "k8s": "trino"}


def _env(name: str, default: str = ""):
    """An EnvVar when set (its value never reaches run config or the UI), else a default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def _dbt(target: str):
    from dagster_dbt import DbtCliResource

    from ..gold.project import DBT_DIR

    return DbtCliResource(project_dir=str(DBT_DIR), target=target)


def _lakehouse(catalog_uri, warehouse) -> IcebergLakehouse:
    """Same object storage settings in both profiles; only the defaults differ."""
    return IcebergLakehouse(
        catalog_uri=catalog_uri,
        warehouse=warehouse,
        s3_endpoint=_env("ASGARD_S3_ENDPOINT"),
        s3_access_key_id=_env("AWS_ACCESS_KEY_ID"),
        s3_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
        s3_region=_env("AWS_REGION"),
    )


LOCAL: dict[str, Callable[[], dg.ConfigurableResource]] = {
    "lakehouse": lambda: _lakehouse(_env("ASGARD_CATALOG_URI"), _env("ASGARD_WAREHOUSE")),
    "ingestion": lambda: EmbeddedIngestion(source_url=_env("ASGARD_SOURCE_URL")),
    "spark": DuckDbSparkSql,
    "dbt": lambda: _dbt(DBT_TARGETS["local"]),
    "feature_store": FeatureStoreResource,
    "mlflow_tracking": lambda: MlflowTracking(tracking_uri=_env("MLFLOW_TRACKING_URI")),
    "deployer": LocalDeployer,
}

K8S: dict[str, Callable[[], dg.ConfigurableResource]] = {
    # a cluster has no ASGARD_HOME defaults: catalog and warehouse are required
    "lakehouse": lambda: _lakehouse(dg.EnvVar("ASGARD_CATALOG_URI"), dg.EnvVar("ASGARD_WAREHOUSE")),
    "ingestion": lambda: AirbyteIngestion(
        api_url=dg.EnvVar("AIRBYTE_API_URL"), connection_id=dg.EnvVar("AIRBYTE_CONNECTION_ID")
    ),
    "spark": SparkOperatorEngine,
    "dbt": lambda: _dbt(DBT_TARGETS["k8s"]),
    "feature_store": lambda: FeatureStoreResource(yaml_file="feature_store.k8s.yaml"),
    "mlflow_tracking": lambda: MlflowTracking(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI")),
    "deployer": KubernetesDeployer,
}

RESOURCES = {"local": LOCAL, "k8s": K8S}


def resources_for(name: str | None = None) -> dict:
    return {key: make() for key, make in RESOURCES[name or profile()].items()}


def resource(name: str, profile_name: str | None = None):
    """One resource of the active profile with its EnvVars resolved, for code that runs
    outside a Dagster step (dbt plugin, Feast repo, CLI, tests)."""
    made = RESOURCES[profile_name or profile()][name]()
    # resolving builds an ephemeral Dagster instance (~1.6 s): only when there is an EnvVar
    if any(isinstance(v, dg.EnvVar) for v in made.__dict__.values()):
        return made.process_config_and_initialize()
    return made

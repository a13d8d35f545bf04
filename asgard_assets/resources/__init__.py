"""Resources by profile: ``ASGARD_PROFILE`` picks one set; assets only see resource names.

Each profile maps a resource name to a factory, so code outside Dagster can build just the
one it needs, importing only its module: the dbt plugin (inside every dbt build) needs only
the lakehouse, the inference service the model registry and the feature store; importing
every resource module cost each of them ~0.7 s.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Callable

import dagster as dg

from ..settings import DBT_TARGETS, dbt_target_unused, profile


def _env(name: str, default: str = ""):
    """An EnvVar when set (its value never reaches run config or the UI), else a default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def _choice(name: str, choices: tuple[str, ...]) -> str:
    """A setting naming one of ``choices`` (the first when unset): read as it is, not as an
    EnvVar (Dagster would hand a Literal field the EnvVar itself), and refused by name."""
    value = os.environ.get(name) or choices[0]
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    return value


def _pair(first: str, second: str) -> tuple[dg.EnvVar | None, dg.EnvVar | None]:
    """Two settings that go together: both EnvVars once either is set (so the settings check
    names the other when it is missing), else None (dagster-airbyte's "not configured")."""
    if os.environ.get(first) or os.environ.get(second):
        return dg.EnvVar(first), dg.EnvVar(second)
    return None, None


def _load(path: str):
    """``module:name`` of this package (a resource class or factory), imported when a
    factory runs."""
    module, name = path.split(":")
    return getattr(importlib.import_module(f".{module}", __package__), name)


def _dbt(profile_name: str):
    from ..gold.project import DBT_DIR, AsgardDbtCli

    if unused := dbt_target_unused(profile_name):
        logging.getLogger("asgard").warning(unused)
    return AsgardDbtCli(project_dir=str(DBT_DIR), target=DBT_TARGETS[profile_name])


def _airbyte():
    from dagster_airbyte import AirbyteWorkspace

    from .airbyte import REQUESTS, AirbyteIngestion

    warnings.filterwarnings("ignore", "Class `.*AirbyteWorkspace` is currently in beta")
    # either pair, or neither (an Airbyte without auth)
    client_id, client_secret = _pair("AIRBYTE_CLIENT_ID", "AIRBYTE_CLIENT_SECRET")
    username, password = _pair("AIRBYTE_USERNAME", "AIRBYTE_PASSWORD")
    workspace = AirbyteWorkspace(
        rest_api_base_url=dg.EnvVar("AIRBYTE_REST_API_URL"),
        configuration_api_base_url=dg.EnvVar("AIRBYTE_CONFIGURATION_API_URL"),
        workspace_id=dg.EnvVar("AIRBYTE_WORKSPACE_ID"),
        client_id=client_id,
        client_secret=client_secret,
        username=username,
        password=password,
        **REQUESTS,
    )
    return AirbyteIngestion(
        workspace=workspace,
        connection_id=dg.EnvVar("AIRBYTE_CONNECTION_ID"),
        # the sensor and `asgard demo` read the source's cursor and days themselves
        source_url=dg.EnvVar("ASGARD_SOURCE_URL"),
    )


def _lakehouse(catalog_uri, warehouse) -> dg.ConfigurableResource:
    """Same object storage settings in both profiles; only the defaults differ."""
    return _load("lakehouse:IcebergLakehouse")(
        catalog_uri=catalog_uri,
        warehouse=warehouse,
        s3_endpoint=_env("ASGARD_S3_ENDPOINT"),
        s3_access_key_id=_env("AWS_ACCESS_KEY_ID"),
        s3_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
        s3_region=_env("AWS_REGION"),
    )


LOCAL: dict[str, Callable[[], dg.ConfigurableResource]] = {
    "lakehouse": lambda: _lakehouse(_env("ASGARD_CATALOG_URI"), _env("ASGARD_WAREHOUSE")),
    "ingestion": lambda: _load("ingestion:EmbeddedIngestion")(source_url=_env("ASGARD_SOURCE_URL")),
    "spark": lambda: _load("spark:DuckDbSparkSql")(),
    "dbt": lambda: _dbt("local"),
    "feature_store": lambda: _load("feature_store:FeatureStoreResource")(),
    "mlflow_tracking": lambda: _load("mlflow_tracking:MlflowTracking")(
        tracking_uri=_env("MLFLOW_TRACKING_URI")
    ),
    "deployer": lambda: _load("deployer:LocalDeployer")(),
    "image_builder": lambda: _load("image_builder:LocalImageBuilder")(),
}

K8S: dict[str, Callable[[], dg.ConfigurableResource]] = {
    # a cluster has no ASGARD_HOME defaults: catalog and warehouse are required
    "lakehouse": lambda: _lakehouse(dg.EnvVar("ASGARD_CATALOG_URI"), dg.EnvVar("ASGARD_WAREHOUSE")),
    "ingestion": _airbyte,
    "spark": lambda: _load("spark_operator:spark_operator_from_env")(),
    "dbt": lambda: _dbt("k8s"),
    "feature_store": lambda: _load("feature_store:FeatureStoreResource")(
        yaml_file="feature_store.k8s.yaml"
    ),
    "mlflow_tracking": lambda: _load("mlflow_tracking:MlflowTracking")(
        tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI")
    ),
    "deployer": lambda: _load("kubernetes:KubernetesDeployer")(
        api_url=_env("ASGARD_K8S_API_URL"), namespace=_env("ASGARD_K8S_NAMESPACE", "asgard")
    ),
    "image_builder": lambda: _load("image_builder:KubernetesImageBuilder")(
        api_url=_env("ASGARD_K8S_API_URL"),
        namespace=_env("ASGARD_K8S_NAMESPACE", "asgard"),
        image_repository=dg.EnvVar("ASGARD_IMAGE_REPOSITORY"),
        context_uri=dg.EnvVar("ASGARD_BUILD_CONTEXT"),
        executor=_choice("ASGARD_IMAGE_BUILDER", ("kaniko", "buildkit")),
        s3_endpoint=_env("ASGARD_S3_ENDPOINT"),
        s3_region=_env("AWS_REGION", "us-east-1"),
        s3_access_key_id=_env("AWS_ACCESS_KEY_ID"),
        s3_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
    ),
}

RESOURCES = {"local": LOCAL, "k8s": K8S}

# environment variables a resource needs that are read by a configuration file, not by a
# resource field (its EnvVar fields are found by env_vars)
FILE_SETTINGS = {"k8s": {"feature_store": ("ASGARD_REDIS", "ASGARD_FEAST_REGISTRY")}}


class MissingSettings(ValueError):
    """Required environment variables of a profile are unset (all of them named at once)."""


def env_vars(made: dg.ConfigurableResource) -> set[str]:
    """The EnvVars a resource reads, those of the resources nested in it included."""
    names = set()
    for value in made.__dict__.values():
        if isinstance(value, dg.EnvVar):
            names.add(value.env_var_name)
        elif isinstance(value, dg.ConfigurableResource):
            names |= env_vars(value)
    return names


def settings_needed(resources: dict, profile_name: str) -> dict[str, set[str]]:
    """Resource name -> the environment variables it needs."""
    files = FILE_SETTINGS.get(profile_name, {})
    return {key: env_vars(r) | set(files.get(key, ())) for key, r in resources.items()}


def check_settings(resources: dict, profile_name: str) -> None:
    """Fail with every unset environment variable the resources need, at once, instead of
    Dagster failing on the first EnvVar it resolves."""
    missing: dict[str, list[str]] = {}
    for key, names in settings_needed(resources, profile_name).items():
        for var in names:
            if not os.environ.get(var):
                missing.setdefault(var, []).append(key)
    if missing:
        listed = ", ".join(f"{var} ({', '.join(keys)})" for var, keys in sorted(missing.items()))
        raise MissingSettings(
            f"ASGARD_PROFILE={profile_name} needs these environment variables, unset: {listed}"
        )


def _build(profile_name: str) -> dict:
    return {key: make() for key, make in RESOURCES[profile_name].items()}


def profile_settings(profile_name: str) -> set[str]:
    """Every environment variable a profile needs."""
    return set().union(*settings_needed(_build(profile_name), profile_name).values())


def resources_for(name: str | None = None) -> dict:
    name = name or profile()
    made = _build(name)
    check_settings(made, name)
    return made


def resource(name: str, profile_name: str | None = None):
    """One resource of the active profile with its EnvVars resolved, for code that runs
    outside a Dagster step (dbt plugin, Feast repo, CLI, tests)."""
    profile_name = profile_name or profile()
    made = RESOURCES[profile_name][name]()
    check_settings({name: made}, profile_name)
    # resolving builds an ephemeral Dagster instance (~1.6 s): only when there is an EnvVar
    if env_vars(made):
        # the context-manager form: a resource with nested resources (Airbyte) needs it;
        # none of Asgard's resources tears anything down on exit
        with made.process_config_and_initialize_cm() as initialized:
            return initialized
    return made

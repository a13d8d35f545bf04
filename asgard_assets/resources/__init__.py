"""Resources by profile: ``ASGARD_PROFILE`` picks one set; assets only see resource names."""

from __future__ import annotations

import os

import dagster as dg

from ..settings import profile
from .ingestion import AirbyteIngestion, EmbeddedIngestion
from .lakehouse import LocalLakehouse, RestLakehouse
from .spark import DuckDbSparkSql, SparkOperatorEngine


def _env(name: str, default: str = ""):
    """An EnvVar when set (its value never reaches run config or the UI), else a default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def local_resources() -> dict:
    return {
        "lakehouse": LocalLakehouse(
            catalog_uri=_env("ASGARD_CATALOG_URI"), warehouse=_env("ASGARD_WAREHOUSE")
        ),
        "ingestion": EmbeddedIngestion(source_url=_env("ASGARD_SOURCE_URL")),
        "spark": DuckDbSparkSql(),
    }


def k8s_resources() -> dict:
    return {
        "lakehouse": RestLakehouse(
            uri=dg.EnvVar("ASGARD_CATALOG_URI"),
            warehouse=dg.EnvVar("ASGARD_WAREHOUSE"),
            s3_endpoint=_env("ASGARD_S3_ENDPOINT"),
            s3_access_key_id=_env("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
        ),
        "ingestion": AirbyteIngestion(
            api_url=dg.EnvVar("AIRBYTE_API_URL"), connection_id=dg.EnvVar("AIRBYTE_CONNECTION_ID")
        ),
        "spark": SparkOperatorEngine(),
    }


RESOURCES = {"local": local_resources, "k8s": k8s_resources}


def resources_for(name: str | None = None) -> dict:
    return RESOURCES[name or profile()]()

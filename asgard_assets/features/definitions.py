"""Feast definitions, built from the model contract: entity ``operator``, feature view
``operator_efficiency`` over the Iceberg table gold.operator_features (read in place through
the Asgard catalog, no copy), and the feature service the model trains and serves from.

They live in the package, imported like any module: the feature store resource never
executes a file named by configuration. ``feature_repo/features.py`` re-exports them for the
``feast`` CLI.
"""

from __future__ import annotations

from datetime import timedelta

from . import feast_import  # noqa: F401  (first: Feast without typeguard's instrumentation)

# isort: split
from feast import Entity, FeatureService, FeatureView, Field, ValueType, types
from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

from ..contracts.model import (
    ENTITY_KEY,
    FEATURE_SERVICE,
    FEATURE_TYPES,
    FEATURES,
    GOLD_TABLE,
    LABEL,
    LABEL_TYPE,
    TIMESTAMP,
    VIEW,
)


def build(columns: list[str] | None = None) -> list[Entity | FeatureView | FeatureService]:
    """The objects ``feast apply`` registers. ``columns``: a subset of the view's columns
    (a smaller gold table in tests); the feature service keeps the model features among them."""
    from ..resources import resource
    from ..resources.lakehouse import SECRET_PROPERTIES

    every = {**FEATURE_TYPES, LABEL: LABEL_TYPE}
    columns = list(every) if columns is None else columns
    unknown = set(columns) - every.keys()
    if unknown:
        raise ValueError(f"not columns of {GOLD_TABLE}: {sorted(unknown)}")
    catalog = resource("lakehouse").catalog_properties()
    rest = catalog["type"] == "rest"
    # the S3 endpoint and region travel with the source into the Feast registry; the keys do
    # not: pyiceberg's S3 client finds them in the environment (AWS_*)
    extra = {k: v for k, v in catalog.items() if k.startswith("s3.") and k not in SECRET_PROPERTIES}

    operator = Entity(
        name="operator",
        join_keys=[ENTITY_KEY],
        value_type=ValueType.STRING,
        description="A factory operator (EMP-xxx).",
    )
    source = IcebergSource(
        name="gold_operator_features",
        catalog_type=catalog["type"],
        catalog_name="asgard",
        endpoint=catalog["uri"] if rest else None,
        catalog_properties=extra if rest else {"uri": catalog["uri"], **extra},
        warehouse=catalog["warehouse"],
        namespace=GOLD_TABLE.split(".")[0],
        table=GOLD_TABLE.split(".")[1],
        timestamp_field=TIMESTAMP,
        description="Iceberg table gold.operator_features built by dbt.",
    )
    view = FeatureView(
        name=VIEW,
        entities=[operator],
        ttl=timedelta(0),  # no expiry: an operator's latest profile stays valid until replaced
        schema=[Field(name=c, dtype=getattr(types, every[c])) for c in columns],
        source=source,
        online=True,
        description="Operator efficiency features and the is_high_performer label.",
    )
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[view[[f for f in FEATURES if f in columns]]],
        description="The model's inputs: what training reads and /predict looks up.",
    )
    return [operator, view, service]

"""Feast definitions: entity operator_id, feature view operator_efficiency over the Iceberg
table gold.operator_features (read in place through the Asgard catalog, no copy)."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, ValueType
from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
from feast.types import Float64, Int32, Int64

from asgard_assets.resources import resource
from asgard_assets.resources.feature_store import GOLD_TABLE
from asgard_assets.resources.lakehouse import SECRET_PROPERTIES

FEATURES = [
    Field(name="total_work_orders", dtype=Int64),
    Field(name="completed_orders", dtype=Int64),
    Field(name="total_units", dtype=Int64),
    Field(name="total_hours", dtype=Float64),
    Field(name="avg_duration_hours", dtype=Float64),
    Field(name="units_per_hour", dtype=Float64),
    Field(name="completion_rate", dtype=Float64),
    Field(name="products_handled", dtype=Int64),
    Field(name="data_quality_score", dtype=Float64),
    Field(name="is_high_performer", dtype=Int32),
]

_catalog = resource("lakehouse").catalog_properties()
_rest = _catalog["type"] == "rest"
# the S3 endpoint and region travel with the source into the Feast registry; the keys do
# not: pyiceberg's S3 client finds them in the environment (AWS_*)
_io = {k: v for k, v in _catalog.items() if k.startswith("s3.") and k not in SECRET_PROPERTIES}

operator = Entity(
    name="operator",
    join_keys=["operator_id"],
    value_type=ValueType.STRING,
    description="A factory operator (EMP-xxx).",
)

gold_operator_features = IcebergSource(
    name="gold_operator_features",
    catalog_type=_catalog["type"],
    catalog_name="asgard",
    endpoint=_catalog["uri"] if _rest else None,
    catalog_properties=_io if _rest else {"uri": _catalog["uri"], **_io},
    warehouse=_catalog["warehouse"],
    namespace=GOLD_TABLE.split(".")[0],
    table=GOLD_TABLE.split(".")[1],
    timestamp_field="feature_timestamp",
    description="Iceberg table gold.operator_features built by dbt.",
)

operator_efficiency = FeatureView(
    name="operator_efficiency",
    entities=[operator],
    ttl=timedelta(0),  # no expiry: an operator's latest profile stays valid until replaced
    schema=FEATURES,
    source=gold_operator_features,
    online=True,
    description="Operator efficiency features and the is_high_performer label.",
)

"""The model contract: what the operator-efficiency model is called, what it reads and
predicts, and where its features come from, declared once.

Training, the quality gate, the feature view, the Feast feature service, the inference
service and the deployment all read these names.
"""

from __future__ import annotations

MODEL_NAME = "operator_efficiency_predictor"
DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}@champion"
LABEL = "is_high_performer"
ENTITY_KEY = "operator_id"

GOLD_TABLE = "gold.operator_features"  # the Iceberg table the feature view serves
TIMESTAMP = "feature_timestamp"
VIEW = "operator_efficiency"  # the Feast feature view over GOLD_TABLE
FEATURE_SERVICE = MODEL_NAME  # the Feast feature service training and /predict both use

# feature name -> Feast dtype name, in the model's input order
FEATURE_TYPES: dict[str, str] = {
    "total_work_orders": "Int64",
    "completed_orders": "Int64",
    "total_units": "Int64",
    "total_hours": "Float64",
    "avg_duration_hours": "Float64",
    "units_per_hour": "Float64",
    "completion_rate": "Float64",
    "products_handled": "Int64",
    "data_quality_score": "Float64",
}
FEATURES: list[str] = list(FEATURE_TYPES)
LABEL_TYPE = "Int32"

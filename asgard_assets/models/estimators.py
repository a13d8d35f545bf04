"""The estimators run config may choose, each with its hyperparameters and their bounds.

In the launchpad or ``--config-json``:
``{"ops": {"models__operator_efficiency_predictor": {"config": {"estimator":
{"gradient_boosting": {"n_estimators": 200, "learning_rate": 0.05}}}}}}``. Dagster refuses
an unknown estimator or key ("Received unexpected config entry ..."); pydantic refuses a
value out of bounds ("estimator.gradient_boosting.learning_rate: Input should be ...").
Each one has an ONNX form (skl2onnx) checked against sklearn before it is logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from sklearn.base import ClassifierMixin

SEED = 42


class _Estimator(dg.Config):
    def params(self) -> dict:
        """The sklearn keyword arguments (logged as MLflow params)."""
        return self.model_dump(exclude={"kind"})

    def build(self) -> ClassifierMixin:
        raise NotImplementedError


class RandomForest(_Estimator):
    kind: Literal["random_forest"] = "random_forest"
    n_estimators: int = Field(default=100, ge=1, le=2000)
    max_depth: int | None = Field(default=None, ge=1, le=64)
    min_samples_leaf: int = Field(default=1, ge=1, le=1000)

    def build(self) -> ClassifierMixin:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**self.params(), random_state=SEED, n_jobs=1)


class GradientBoosting(_Estimator):
    kind: Literal["gradient_boosting"] = "gradient_boosting"
    n_estimators: int = Field(default=100, ge=1, le=2000)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_depth: int = Field(default=3, ge=1, le=16)
    min_samples_leaf: int = Field(default=1, ge=1, le=1000)

    def build(self) -> ClassifierMixin:
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(**self.params(), random_state=SEED)


class HistGradientBoosting(_Estimator):
    kind: Literal["hist_gradient_boosting"] = "hist_gradient_boosting"
    max_iter: int = Field(default=100, ge=1, le=2000)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_leaf_nodes: int = Field(default=31, ge=2, le=1024)
    min_samples_leaf: int = Field(default=20, ge=1, le=1000)

    def build(self) -> ClassifierMixin:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(**self.params(), random_state=SEED)


class LogisticRegression(_Estimator):
    """Scaled first: the features' ranges differ by four orders of magnitude, and unscaled
    lbfgs does not converge on them."""

    kind: Literal["logistic_regression"] = "logistic_regression"
    C: float = Field(default=1.0, gt=0, le=1e6)
    max_iter: int = Field(default=1000, ge=10, le=100_000)

    def build(self) -> ClassifierMixin:
        from sklearn.linear_model import LogisticRegression as Model
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline([("scale", StandardScaler()), ("model", Model(**self.params()))])


Estimator = RandomForest | GradientBoosting | HistGradientBoosting | LogisticRegression
ESTIMATORS: dict[str, type[Estimator]] = {
    e.model_fields["kind"].default: e
    for e in (RandomForest, GradientBoosting, HistGradientBoosting, LogisticRegression)
}

"""Training the operator-efficiency model: data, estimator, metrics, compiled serving form.

Serialization, chosen explicitly: the model is logged with MLflow's sklearn flavor as
cloudpickle (MLflow 3's default, skops, refuses sklearn's tree types unless each is
trusted), and beside it as ONNX (skl2onnx), verified against sklearn on the test set
before it is logged. The inference service runs the ONNX form: ~0.02 ms a row instead of
~5-8 ms for 100 trees in sklearn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..contracts.model import FEATURES, LABEL, MODEL_NAME
from .estimators import SEED, Estimator, RandomForest

if TYPE_CHECKING:  # sklearn is imported where a model is trained, not at definitions load
    from sklearn.base import ClassifierMixin

__all__ = ["FEATURES", "LABEL", "MODEL_NAME", "Trained", "matrix", "to_onnx", "train"]
ONNX_TOLERANCE = 1e-5


@dataclass
class Trained:
    model: ClassifierMixin
    metrics: dict[str, float]
    params: dict
    x_test: pd.DataFrame
    y_test: pd.Series
    n_train: int


def matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """Features as float64 (the model's signature): units_per_hour is null when an operator
    logged no hours; 0 is what that means for throughput."""
    return frame[FEATURES].astype("float64").fillna(0.0)


def train(
    frame: pd.DataFrame, estimator: Estimator | None = None, *, shuffle_labels: bool = False
) -> Trained:
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )
    from sklearn.model_selection import train_test_split

    estimator = estimator or RandomForest()
    data = frame.dropna(subset=[LABEL])
    x, y = matrix(data), data[LABEL].astype(int)
    if shuffle_labels:  # a deliberately useless model: the quality gate must stop it
        y = pd.Series(np.random.default_rng(SEED).permutation(y.to_numpy()), index=y.index)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y
    )
    model = estimator.build().fit(x_train, y_train)
    proba = model.predict_proba(x_test)[:, 1]
    pred = (proba >= 0.5).astype(int)
    metrics = {
        "accuracy": accuracy_score(y_test, pred),
        "precision": precision_score(y_test, pred, zero_division=0),
        "recall": recall_score(y_test, pred, zero_division=0),
        "f1": f1_score(y_test, pred, zero_division=0),
        "roc_auc": roc_auc_score(y_test, proba) if y_test.nunique() > 1 else float("nan"),
    }
    params = {
        "estimator": estimator.kind,
        **estimator.params(),
        "random_state": SEED,
        "test_size": 0.2,
        "split_seed": SEED,
        "shuffle_labels": shuffle_labels,
        "n_train": len(x_train),
        "n_test": len(x_test),
    }
    return Trained(
        model, {k: float(v) for k, v in metrics.items()}, params, x_test, y_test, len(x_train)
    )


def to_onnx(model: ClassifierMixin, x_check: pd.DataFrame) -> tuple[bytes, float]:
    """The model as ONNX (labels and class probabilities, no zipmap), and the largest
    probability difference from sklearn on x_check."""
    import onnxruntime as ort
    from skl2onnx import to_onnx as convert

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    # skl2onnx's boosted trees give float probabilities, so they take float input; the
    # service feeds each session the dtype it declares
    dtype = np.float32 if "GradientBoosting" in type(final).__name__ else np.float64
    onx = convert(
        model,
        x_check.to_numpy(dtype)[:1],
        options={id(final): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    blob = onx.SerializeToString()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    _, proba = session.run(None, {session.get_inputs()[0].name: x_check.to_numpy(dtype)})
    diff = float(np.abs(proba - model.predict_proba(x_check)).max())
    if diff > ONNX_TOLERANCE:
        raise ValueError(
            f"ONNX form disagrees with {type(final).__name__} by {diff:.2e} (> {ONNX_TOLERANCE})"
        )
    return blob, diff


def importances(trained: Trained) -> dict[str, float]:
    """Each feature's importance, largest first: impurity importance where the model has it,
    else permutation importance on the test set."""
    model = trained.model
    if hasattr(model, "feature_importances_"):
        values = np.asarray(model.feature_importances_)
    else:
        from sklearn.inspection import permutation_importance

        values = permutation_importance(
            model, trained.x_test, trained.y_test, n_repeats=5, random_state=SEED
        ).importances_mean
    return dict(sorted(zip(FEATURES, map(float, values), strict=True), key=lambda kv: -kv[1]))


def importance_table(importances: dict[str, float]) -> str:
    """The importances as a Markdown table with a bar each, for the Dagster UI (a table,
    not a plotted image: matplotlib's import alone took ~0.5 s of every retrain)."""
    top = max([*importances.values(), 0.0]) or 1.0
    rows = [
        f"| {name} | {value:.3f} | {'█' * round(20 * max(value, 0.0) / top)} |"
        for name, value in importances.items()
    ]
    return "\n".join(["| feature | importance | |", "|---|---:|---|", *rows])

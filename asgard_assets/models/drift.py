"""Feature drift: population stability index (PSI) of current features against the
distribution the champion was trained on.

The reference is the training set's deciles per feature (edges and shares), logged with the
model as ``reference_distribution.json``. PSI = sum((cur - ref) * ln(cur / ref)) over the
reference's bins; above 0.2 is the usual "significant shift".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PSI_WARN = 0.2
_EPS = 1e-4  # empty bins: a floor, so ln() stays finite


def reference(frame: pd.DataFrame, bins: int = 10) -> dict[str, dict]:
    out = {}
    for col in frame.columns:
        values = frame[col].dropna().to_numpy(dtype=float)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
        out[col] = {"edges": edges.tolist(), "shares": _shares(values, edges).tolist()}
    return out


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # inner edges only: values outside the training range fall in the first or last bin
    idx = np.searchsorted(edges[1:-1], values, side="right")
    counts = np.bincount(idx, minlength=max(len(edges) - 1, 1))
    return counts / max(len(values), 1)


def psi(ref: dict, values: pd.Series) -> float:
    edges = np.asarray(ref["edges"], dtype=float)
    expected = np.clip(np.asarray(ref["shares"], dtype=float), _EPS, None)
    actual = np.clip(_shares(values.dropna().to_numpy(dtype=float), edges), _EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_by_feature(reference_dist: dict[str, dict], frame: pd.DataFrame) -> dict[str, float]:
    return {col: psi(ref, frame[col]) for col, ref in reference_dist.items() if col in frame}

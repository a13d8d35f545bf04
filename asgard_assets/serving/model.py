"""The served model: a registered MLflow version, run in its ONNX form by onnxruntime.

``ASGARD_MODEL_URI`` names it (``models:/operator_efficiency_predictor@champion`` or
``models:/operator_efficiency_predictor/3``); the input contract is the version's MLflow
signature.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

DEFAULT_URI = "models:/operator_efficiency_predictor@champion"
MAX_BATCH = 10_000
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class InvalidInput(ValueError):
    """A request the model cannot take; the message says why."""


@dataclass
class ServedModel:
    name: str
    version: str
    run_id: str
    uri: str
    features: list[str]
    types: dict[str, str]
    session: object  # onnxruntime.InferenceSession

    @classmethod
    def load(cls, uri: str | None = None) -> ServedModel:
        import mlflow
        import onnxruntime as ort

        from ..resources import resource

        uri = uri or os.environ.get("ASGARD_MODEL_URI") or DEFAULT_URI
        match = _URI.match(uri)
        if not match:
            raise ValueError(
                f"ASGARD_MODEL_URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
            )
        client = resource("mlflow_tracking").client()
        name = match["name"]
        mv = (
            client.get_model_version_by_alias(name, match["alias"])
            if match["alias"]
            else client.get_model_version(name, match["version"])
        )
        signature = mlflow.models.get_model_info(f"models:/{name}/{mv.version}").signature
        inputs = signature.inputs.to_dict()
        onnx_path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path="onnx/model.onnx"
        )
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        return cls(
            name,
            str(mv.version),
            mv.run_id,
            uri,
            [c["name"] for c in inputs],
            {c["name"]: c["type"] for c in inputs},
            session,
        )

    def matrix_from_rows(self, rows: list[dict]) -> np.ndarray:
        _check_size(len(rows))
        wanted = set(self.features)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInput(f"instances[{i}] must be an object of feature values")
            missing, extra = wanted - row.keys(), row.keys() - wanted
            if missing or extra:
                raise InvalidInput(f"instances[{i}]: " + _diff(missing, extra))
        return self._matrix(
            [[row[f] for f in self.features] for row in rows],
            lambda i, j: f"instances[{i}].{self.features[j]}",
        )

    def matrix_from_columns(self, columns: dict[str, list]) -> np.ndarray:
        missing, extra = set(self.features) - columns.keys(), columns.keys() - set(self.features)
        if missing or extra:
            raise InvalidInput("inputs: " + _diff(missing, extra))
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if -1 in lengths:
            raise InvalidInput("inputs: every feature must be a list of values")
        if len(lengths) != 1:
            raise InvalidInput(f"inputs: feature lists have different lengths {sorted(lengths)}")
        n = lengths.pop()
        _check_size(n)
        return self._matrix(
            [[columns[f][i] for f in self.features] for i in range(n)],
            lambda i, j: f"inputs.{self.features[j]}[{i}]",
        )

    def _matrix(self, values: list[list], where) -> np.ndarray:
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                # bool is an int in Python, but never a feature value
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise InvalidInput(
                        f"{where(i, j)} must be a number ({self.types[self.features[j]]}), got {type(v).__name__}"
                    )
                if isinstance(v, float) and not math.isfinite(v):
                    raise InvalidInput(f"{where(i, j)} must be finite, got {v}")
                if abs(v) > 1e300:
                    raise InvalidInput(f"{where(i, j)} is out of range")
        return np.asarray(values, dtype=np.float64)

    def predict(self, x: np.ndarray) -> tuple[list[int], list[float]]:
        labels, proba = self.session.run(None, {self.session.get_inputs()[0].name: x})
        return [int(v) for v in labels], [float(p) for p in proba[:, 1]]


def _check_size(n: int) -> None:
    if n == 0:
        raise InvalidInput("the batch is empty")
    if n > MAX_BATCH:
        raise InvalidInput(f"the batch has {n} rows; at most {MAX_BATCH} per request")


def _diff(missing: set, extra: set) -> str:
    parts = []
    if missing:
        parts.append(f"missing features {sorted(missing)}")
    if extra:
        parts.append(f"unknown features {sorted(map(str, extra))}")
    return "; ".join(parts)

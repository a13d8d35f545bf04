"""The served model: a registered MLflow version, run in its ONNX form by onnxruntime.

``ASGARD_MODEL_URI`` names it (``models:/operator_efficiency_predictor@champion`` or
``models:/operator_efficiency_predictor/3``); the input contract is the version's MLflow
signature. The deploy step resolves the version once into the deploy bundle
(``ServedModel.save``) and the local service loads that copy (``ASGARD_MODEL_DIR``), without
importing MLflow at start. Input checks are vectorized: one pass over the values' types,
then numpy; only a bad request pays for the per-value search that names the offending value.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path

import numpy as np

from ..contracts.model import DEFAULT_MODEL_URI

MAX_BATCH = 10_000
MODEL_FILE, MODEL_META = "model.onnx", "served.json"  # a version's local copy (save)
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_NUMBERS = {int, float}  # exact types: bool is an int subclass, but never a feature value
_LIMIT = 1e300


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
    def load(cls, uri: str | None = None, folder: str | None = None) -> ServedModel:
        """The version ``uri`` (default ``ASGARD_MODEL_URI``) names, from its local copy in
        ``folder`` (default ``ASGARD_MODEL_DIR``; ``""`` for none) when there is one
        (``save``: no MLflow import at start, ~2 s), else from the MLflow registry."""
        uri = uri or os.environ.get("ASGARD_MODEL_URI")
        folder = os.environ.get("ASGARD_MODEL_DIR") if folder is None else folder
        if folder:
            meta = json.loads((Path(folder) / MODEL_META).read_text())
            if uri and uri not in (meta["uri"], f"models:/{meta['name']}/{meta['version']}"):
                raise ValueError(
                    f"ASGARD_MODEL_DIR {folder} holds {meta['uri']} (version "
                    f"{meta['version']}), not ASGARD_MODEL_URI {uri}"
                )
            return cls(**meta, session=_session(str(Path(folder) / MODEL_FILE)))
        # the session holds the model once made: the downloaded file goes with its folder
        with tempfile.TemporaryDirectory(prefix="asgard-model-") as tmp:
            meta, onnx_path = _from_registry(uri or DEFAULT_MODEL_URI, Path(tmp))
            return cls(**meta, session=_session(onnx_path))

    @staticmethod
    def save(uri: str, folder: Path) -> Path:
        """Resolve ``uri`` in the MLflow registry once, into ``folder``: the ONNX model and
        what the service needs of the version (its number, run, input contract)."""
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="asgard-model-") as tmp:
            meta, onnx_path = _from_registry(uri, Path(tmp))
            shutil.copyfile(onnx_path, folder / MODEL_FILE)
        (folder / MODEL_META).write_text(json.dumps(meta, indent=2))
        return folder

    def __post_init__(self) -> None:
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        # boosted trees take float32 (see models/training.to_onnx), the others float64
        self._dtype = np.float32 if inp.type == "tensor(float)" else np.float64
        self._wanted = set(self.features)
        # a row's values in model order, in C (itemgetter of one name gives no tuple)
        get = itemgetter(*self.features)
        self._values = get if len(self.features) > 1 else lambda row: (get(row),)

    def matrix_from_rows(self, rows: list[dict]) -> np.ndarray:
        _check_size(len(rows))
        features, wanted = self.features, self._wanted
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInput(f"instances[{i}] must be an object of feature values")
            if row.keys() != wanted:
                missing, extra = wanted - row.keys(), row.keys() - wanted
                raise InvalidInput(f"instances[{i}]: " + _diff(missing, extra))
        values = list(map(self._values, rows))
        return self._matrix(values, lambda i, j: (f"instances[{i}].{features[j]}", j))

    def matrix_from_columns(self, columns: dict[str, list]) -> np.ndarray:
        missing, extra = self._wanted - columns.keys(), columns.keys() - self._wanted
        if missing or extra:
            raise InvalidInput("inputs: " + _diff(missing, extra))
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if -1 in lengths:
            raise InvalidInput("inputs: every feature must be a list of values")
        if len(lengths) != 1:
            raise InvalidInput(f"inputs: feature lists have different lengths {sorted(lengths)}")
        _check_size(lengths.pop())
        cols = [columns[f] for f in self.features]
        x = self._matrix(cols, lambda j, i: (f"inputs.{self.features[j]}[{i}]", j))
        return np.ascontiguousarray(x.T)

    def matrix_from_known(self, rows: list[dict]) -> np.ndarray:
        """Rows from the online store (trusted types); a null is 0, as in training
        (``models/training.matrix``)."""
        x = np.array(list(map(self._values, rows)), dtype=np.float64)
        x[np.isnan(x)] = 0.0  # not np.nan_to_num: ~10x its cost on a few rows
        return x

    def _matrix(
        self, values: list[list], where: Callable[[int, int], tuple[str, int]]
    ) -> np.ndarray:
        """``where(i, j)``: the name of values[i][j] in the request, and its feature index."""
        if set(map(type, chain.from_iterable(values))) <= _NUMBERS:
            try:
                x = np.array(values, dtype=np.float64)
            except OverflowError:  # an int beyond float range
                x = None
            if x is not None and np.isfinite(x).all() and (np.abs(x) <= _LIMIT).all():
                return x
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if (problem := _problem(v)) is not None:
                    name, f = where(i, j)
                    raise InvalidInput(f"{name} ({self.types[self.features[f]]}) {problem}")
        raise InvalidInput("the values are not finite numbers in range")  # not reached

    def predict(self, x: np.ndarray) -> tuple[list[int], list[float]]:
        labels, proba = self.session.run(None, {self._input: x.astype(self._dtype, copy=False)})
        return labels.astype(int).tolist(), proba[:, 1].astype(float).tolist()


def _from_registry(uri: str, into: Path) -> tuple[dict, str]:
    """``uri``'s version in the MLflow registry: the service's fields and the local path
    of the version's ONNX artifact, downloaded into ``into`` (MLflow would otherwise make a
    temporary folder of its own per download and leave it behind)."""
    import mlflow

    from ..resources import resource

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
        run_id=mv.run_id, artifact_path="onnx/model.onnx", dst_path=str(into)
    )
    meta = {
        "name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "uri": uri,
        "features": [c["name"] for c in inputs],
        "types": {c["name"]: c["type"] for c in inputs},
    }
    return meta, onnx_path


def _session(onnx_path: str):
    import onnxruntime as ort

    # one thread per run, none spinning: requests run side by side (threads, workers),
    # and onnxruntime's default pool spins on every core between runs, taking the CPU
    # the event loop needs (1-row runs took ~2x as long, 100-row ~1.8x, on 2 cores)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


def _problem(v: object) -> str | None:
    """What is wrong with one feature value, or None."""
    if type(v) not in _NUMBERS:
        return f"must be a number, got {type(v).__name__}"
    if isinstance(v, float) and not math.isfinite(v):
        return f"must be finite, got {v}"
    if abs(v) > _LIMIT:
        return "is out of range"
    return None


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
        parts.append(f"unknown features {sorted(map(str, extra))[:10]}")
    return "; ".join(parts)

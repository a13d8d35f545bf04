"""The inference service: ``uvicorn asgard_assets.serving.app:app``.

GET /health, GET /metadata, POST /predict (rows by feature name, the seed's column form,
or operator ids looked up in the online store), GET /docs. Bad requests get a 4xx that
says what is wrong; the service keeps serving.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .model import MAX_BATCH, InvalidInput, ServedModel

STATE: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI):
    STATE["model"] = ServedModel.load()
    yield
    STATE.clear()


app = FastAPI(
    title="Asgard inference service",
    description="Predicts whether an operator is a high performer (is_high_performer).",
    lifespan=lifespan,
)


class PredictRequest(BaseModel):
    """Exactly one of: ``instances`` (rows by feature name), ``inputs`` (columns, the seed's
    form), ``operator_ids`` (features from the online store)."""

    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_BATCH)
    inputs: dict[str, list[Any]] | None = None
    operator_ids: list[str] | None = Field(default=None, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def exactly_one_form(self):
        given = [k for k in ("instances", "inputs", "operator_ids") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"send exactly one of instances, inputs, operator_ids (got {given or 'none'})"
            )
        return self


class Prediction(BaseModel):
    model: str
    version: str
    predictions: list[int]
    probabilities: list[float] = Field(description="probability of is_high_performer = 1")
    operator_ids: list[str] | None = None
    unknown_operator_ids: list[str] | None = None


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


def _model() -> ServedModel:
    return STATE["model"]


@app.get("/health")
async def health() -> dict:
    m = _model()
    return {"status": "ok", "model": m.name, "version": m.version, "uri": m.uri}


@app.get("/metadata")
async def metadata() -> dict:
    m = _model()
    return {
        "model": m.name,
        "version": m.version,
        "run_id": m.run_id,
        "uri": m.uri,
        "serving_form": "onnx",
        "features": [{"name": f, "type": m.types[f]} for f in m.features],
        "max_batch": MAX_BATCH,
    }


@app.post("/predict", response_model=Prediction)
async def predict(body: PredictRequest) -> Prediction:
    m = _model()
    ids = unknown = None
    try:
        if body.instances is not None:
            x = m.matrix_from_rows(body.instances)
        elif body.inputs is not None:
            x = m.matrix_from_columns(body.inputs)
        else:
            ids, unknown, rows = _online_rows(body.operator_ids)
            x = m.matrix_from_rows(rows)
    except InvalidInput as e:
        raise HTTPException(status_code=422, detail=str(e)) from e
    labels, proba = m.predict(x)
    return Prediction(
        model=m.name,
        version=m.version,
        predictions=labels,
        probabilities=proba,
        operator_ids=ids,
        unknown_operator_ids=unknown,
    )


def _online_rows(operator_ids: list[str]) -> tuple[list[str], list[str], list[dict]]:
    if not operator_ids:
        raise InvalidInput("operator_ids is empty")
    from ..models.training import FEATURES, matrix
    from ..resources import resource

    online = resource("feature_store").online(operator_ids)
    if not online.features:
        raise HTTPException(
            status_code=404, detail=f"no features in the online store for {online.unknown}"
        )
    import pandas as pd

    known = list(online.features)
    frame = matrix(pd.DataFrame([online.features[i] for i in known]))
    return known, online.unknown, frame[FEATURES].to_dict("records")

"""The inference service: ``uvicorn asgard_assets.serving.app:app``.

GET /health, GET /metadata, POST /predict (rows by feature name, the seed's column form,
or operator ids looked up in the online store), GET /docs. Bad requests get a 4xx that
says what is wrong; the service keeps serving.

Holding up under hostile or heavy traffic: bodies over ``ASGARD_MAX_BODY_BYTES`` get a 413
before they are read whole; unknown ids are echoed as a count and the first few; large
batches and online-store reads run in worker threads, so /health answers at once under
load; /docs serves Swagger UI from the package (no CDN).

Fast: /health and well-formed /predict bodies skip FastAPI's per-request machinery
(``FastPath``), their answers built by the same code as the routes'; an online lookup is
a check of the store's version and a dict read while the store is unchanged. The HTTP
plumbing that knows nothing of models (JSON responses, orjson bodies, the body limit) is in
``asgi.py``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from . import swap
from .asgi import (
    AsciiJSONResponse,
    BodyLimit,
    OrjsonRoute,
    json_body,
    json_media_type,
    replay_body,
    send_json,
)
from .model import MAX_BATCH, InvalidInput, ServedModel

MAX_BODY_BYTES = int(os.environ.get("ASGARD_MAX_BODY_BYTES", 4 * 1024 * 1024))
MAX_ECHO = 20  # unknown ids echoed back: the count, and this many of them
INLINE_ROWS = 256  # requests up to this many rows run on the event loop (~0.1-1 ms)
STATE: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI):
    from ..resources import resource

    STATE["model"] = ServedModel.load()
    swap.install(STATE)  # SIGHUP: a new version swapped in place (the local deployer)
    STATE["feature_store"] = resource("feature_store")
    # Feast's import and the feature service's resolution (~4 s) run beside the service,
    # not before it: rows by value are answered (and /health is ready) at once; lookups by
    # id wait for the warm-up in their worker thread (see _online_matrix)
    warming = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-warm-up")
    STATE["feature_store_warm"] = warming.submit(_warm_feature_store)
    warming.shutdown(wait=False)
    yield
    STATE.clear()


def _warm_feature_store() -> None:
    try:
        STATE["feature_store"].online([])
    except Exception as e:  # noqa: BLE001 - rows by value still work without a feature store
        STATE["feature_store_error"] = f"{type(e).__name__}: {e}"


class FastPath:
    """GET /health and POST /predict with a JSON body, answered without FastAPI's per-request
    machinery (routing, dependency solving, response plumbing: 2-3x the cost of a whole
    1-row prediction, measured in process). The body goes through the same
    ``PredictRequest`` and ``_answer`` as the route; a request they refuse goes on to
    FastAPI with its body replayed, so every error is the route's own answer. Inside
    ``BodyLimit``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "model" in STATE:
            path, method = scope["path"], scope["method"]
            if path == "/health" and method == "GET":
                return await send_json(send, orjson.dumps(_health()))
            if path == "/predict" and method == "POST" and json_body(scope):
                return await self._predict(scope, receive, send)
        await self.app(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except HTTPException as e:  # BodyLimit: the body grew past the limit as it came
            response = AsciiJSONResponse({"detail": e.detail}, status_code=e.status_code)
            return await response(scope, receive, send)
        body = b"".join(chunks)
        try:
            content = await _answer(PredictRequest.model_validate(orjson.loads(body)))
            payload = orjson.dumps(content)
        except Exception:  # noqa: BLE001 - refused: the route says why (it re-checks the body)
            return await self.app(scope, replay_body(body, receive), send)
        await send_json(send, payload)


app = FastAPI(
    title="Asgard inference service",
    description="Predicts whether an operator is a high performer (is_high_performer).",
    lifespan=lifespan,
    default_response_class=AsciiJSONResponse,
    docs_url=None,  # served below from the package's own Swagger UI files
    redoc_url=None,  # ReDoc would load from a CDN
)
app.router.route_class = OrjsonRoute  # before the routes below are declared
app.add_middleware(FastPath)
app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # the outer one: FastPath reads within
app.mount("/static/swagger-ui", StaticFiles(directory=swagger_ui_path), name="swagger-ui")


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("must be valid UTF-8 text (no lone surrogates)") from e
    return value


OperatorId = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_utf8)]


class PredictRequest(BaseModel):
    """Exactly one of: ``instances`` (rows by feature name), ``inputs`` (columns, the seed's
    form), ``operator_ids`` (features from the online store)."""

    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_BATCH)
    inputs: dict[str, list[Any]] | None = None
    operator_ids: list[OperatorId] | None = Field(default=None, max_length=MAX_BATCH)

    def form(self) -> str:
        given = [k for k in ("instances", "inputs", "operator_ids") if getattr(self, k) is not None]
        if len(given) != 1:
            raise InvalidInput(
                f"send exactly one of instances, inputs, operator_ids (got {given or 'none'})"
            )
        return given[0]


class Prediction(BaseModel):
    model: str
    version: str
    predictions: list[int]
    probabilities: list[float] = Field(description="probability of is_high_performer = 1")
    operator_ids: list[str] | None = None
    unknown_operator_ids: list[str] | None = Field(
        default=None, description=f"the first {MAX_ECHO} ids the online store does not know"
    )
    unknown_count: int | None = Field(default=None, description="how many ids were unknown")


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    sent = request.headers.get("content-type", "")
    if sent and not json_media_type(sent):
        # e.g. curl -d without -H: FastAPI reads a form body as bytes ("should be a dictionary")
        detail = f"send the body as JSON, with Content-Type: application/json (not {sent[:64]})"
        return AsciiJSONResponse(status_code=415, content={"detail": detail})
    errors = [
        {
            "loc": [str(p)[:64] for p in e.get("loc", [])],
            "msg": _message(e)[:300],
        }
        for e in exc.errors()[:MAX_ECHO]
    ]
    return AsciiJSONResponse(status_code=422, content={"detail": errors})


FORMS = "instances (rows by feature name), inputs (columns) or operator_ids"


def _message(error: dict) -> str:
    """Pydantic's message; for a body that is not JSON, with the parser's reason; for a
    body with an unknown field or none at all, with the forms /predict takes."""
    reason = (error.get("ctx") or {}).get("error")
    msg, kind, loc = str(error.get("msg", "")), error.get("type"), tuple(error.get("loc", ()))
    if kind == "json_invalid" and reason:
        return f"{msg}: {reason}"
    if kind == "extra_forbidden" and len(loc) == 2:  # ("body", field)
        return f"{msg}: the body takes one of {FORMS}"
    if kind == "missing" and loc == ("body",):
        return f"a JSON body is required, with one of {FORMS}"
    return msg


def _model() -> ServedModel:
    return STATE["model"]


@app.get("/health")
async def health() -> dict:
    # answered by FastPath; declared here for the OpenAPI schema and the docs
    return _health()


def _health() -> dict:
    # trivial, on the event loop: answered between predictions, never behind a store read
    m = _model()
    health = {"status": "ok", "model": m.name, "version": m.version, "uri": m.uri}
    health["pid"] = os.getpid()  # a deployer tells its own service from one that took the port
    if "reload_error" in STATE:  # the version asked for could not load; this one serves on
        health["reload_error"] = STATE["reload_error"]
    return health


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
        "max_body_bytes": MAX_BODY_BYTES,
    }


@app.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - docs",
        swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
    )


@app.post(
    "/predict",
    response_model=Prediction,
    responses={
        404: {"description": "none of the operator ids is in the online store"},
        413: {"description": "request body too large"},
        415: {"description": "the body is not sent as JSON (Content-Type: application/json)"},
        422: {"description": "the body does not fit the model's input contract"},
    },
)
async def predict(body: PredictRequest) -> AsciiJSONResponse:
    # FastPath answers well-formed JSON bodies; this route answers the rest (and says why)
    try:
        return AsciiJSONResponse(await _answer(body))
    except InvalidInput as e:
        raise HTTPException(status_code=422, detail=str(e)) from e


async def _answer(body: PredictRequest) -> dict:
    """The prediction's JSON content. Small requests whose features are at hand run right
    here: ~0.1 ms, less than a hop to a worker thread. Large batches and online-store reads
    run in a worker thread, so the event loop (and /health) never waits on them."""
    m = _model()
    form = body.form()
    online = None
    if form == "operator_ids" and len(body.operator_ids) <= INLINE_ROWS:
        online = STATE["feature_store"].online_cached(body.operator_ids)
        if online is None:
            return await run_in_threadpool(_predict, m, body, form, None)
    elif _rows(body, form) > INLINE_ROWS:
        return await run_in_threadpool(_predict, m, body, form, None)
    return _predict(m, body, form, online)


def _rows(body: PredictRequest, form: str) -> int:
    if form == "instances":
        return len(body.instances)
    if form == "inputs":
        return max((len(v) for v in body.inputs.values()), default=0)
    return len(body.operator_ids)


def _predict(m: ServedModel, body: PredictRequest, form: str, online) -> dict:
    extra: dict = {}
    if form == "instances":
        x = m.matrix_from_rows(body.instances)
    elif form == "inputs":
        x = m.matrix_from_columns(body.inputs)
    else:
        ids, x, unknown = _online_matrix(m, body.operator_ids, online)
        extra = {
            "operator_ids": ids,
            "unknown_operator_ids": unknown[:MAX_ECHO],
            "unknown_count": len(unknown),
        }
    labels, proba = m.predict(x)
    # built by hand: the response model documents it, validating our own output costs time
    return {
        "model": m.name,
        "version": m.version,
        "predictions": labels,
        "probabilities": proba,
        **extra,
    }


def _online_matrix(m: ServedModel, operator_ids: list[str], online=None):
    if not operator_ids:
        raise InvalidInput("operator_ids is empty")
    if online is None:  # in a worker thread: the first lookups may wait for the warm-up
        STATE["feature_store_warm"].result()
    if "feature_store_error" in STATE:
        raise HTTPException(503, f"the online store is unavailable: {STATE['feature_store_error']}")
    online = online or STATE["feature_store"].online(operator_ids)
    if not online.features:
        n = len(online.unknown)
        raise HTTPException(
            status_code=404,
            detail=f"no features in the online store for {n} id(s): {online.unknown[:MAX_ECHO]}"
            + (" ..." if n > MAX_ECHO else ""),
        )
    known = list(online.features)
    return known, m.matrix_from_known([online.features[i] for i in known]), online.unknown

"""The inference service's HTTP plumbing, none of it about models: JSON that stays valid
with any text in it, bodies parsed with orjson, a body-size limit enforced as the body
streams, and the raw ASGI pieces ``FastPath`` in ``app.py`` answers with."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate in an echoed key or id stays valid
    JSON instead of failing to encode as UTF-8 (a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson: a 100-row body parses in ~1/6 of the standard library's time; its
            # errors are JSONDecodeErrors, which FastAPI answers with a 422
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    """FastAPI's route, reading JSON bodies with orjson (FastAPI's documented way to
    customize the request: a Request subclass through the route class)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return route


class BodyLimit:
    """413 for a body over ``max_bytes``: by its Content-Length before reading, and by
    counting while it streams (chunked, or a lying Content-Length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await AsciiJSONResponse({"detail": self._detail()}, status_code=413)(scope, receive, send)


def json_body(scope: Scope) -> bool:
    """Content-Type application/json: the bodies FastAPI's route reads as JSON too."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def json_media_type(content_type: str) -> bool:
    """A Content-Type FastAPI reads the body of as JSON: application/json or
    application/<anything>+json."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def replay_body(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # a disconnect, as from the server
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_json(send: Send, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})

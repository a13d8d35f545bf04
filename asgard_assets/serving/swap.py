"""A new model version swapped into the running service, without a restart.

The local deployer writes the version to serve to the file ``ASGARD_RELOAD_FILE`` names
(``{"uri", "model_dir", "request"}``) and sends the service SIGHUP. The version loads on a
worker thread while the current one keeps answering, then replaces it in one assignment: the
URL stays, no request is refused. A version that fails to load leaves the current one
serving; /health reports it as ``reload_error`` (with the request's id), and the deploy
fails with it. A load is applied only if the file still names its request when it ends
(the deployer withdraws one it stopped waiting for). Only the service's own user can signal
it: there is no HTTP way in. The version's log lines go on in the log the process started
with (``deployments/logs/<model>-v<first version>.log``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from .model import ServedModel

RELOAD_FILE = "ASGARD_RELOAD_FILE"
log = logging.getLogger("uvicorn.error")


def install(state: dict[str, Any]) -> None:
    """From the service's lifespan: SIGHUP loads the version the reload file names into
    ``state["model"]``. Without ``ASGARD_RELOAD_FILE`` (a pod: a new version is a new
    image) SIGHUP keeps its default."""
    path = os.environ.get(RELOAD_FILE)
    if not path:
        return
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()  # one load at a time: the last request read wins
    running: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    async def reload() -> None:
        async with lock:
            wanted: dict[str, Any] = {}
            try:
                wanted = json.loads(Path(path).read_text())
                model = await asyncio.to_thread(
                    ServedModel.load, wanted["uri"], wanted.get("model_dir") or ""
                )
            except Exception as e:  # noqa: BLE001 - the current version keeps serving
                error = f"{type(e).__name__}: {e}"
                state["reload_error"] = {"request": wanted.get("request"), "error": error}
                log.error("reload of %s failed, keeping version %s: %s",
                          wanted.get("uri", path), state["model"].version, error)  # fmt: skip
                return
            if _requested(path) != wanted.get("request"):
                # withdrawn (the deployer gave up waiting) or superseded by a newer request
                log.info("reload of %s withdrawn, keeping version %s",
                         wanted["uri"], state["model"].version)  # fmt: skip
                return
            state["model"] = model
            state.pop("reload_error", None)
            log.info("now serving %s (version %s)", model.uri, model.version)

    def requested() -> None:
        task = loop.create_task(reload())
        running.add(task)
        task.add_done_callback(running.discard)

    loop.add_signal_handler(signal.SIGHUP, requested)


def _requested(path: str) -> str | None:
    """The request the reload file names now (None when it is gone)."""
    try:
        return json.loads(Path(path).read_text()).get("request")
    except (OSError, ValueError):
        return None

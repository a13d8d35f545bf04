"""The running inference service as its deployer left it: the state it records, whether a
pid is still that service, and its /health. No Dagster here: ``asgard demo`` checks the
service with these before deciding whether to start a run at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from ..settings import deployments_dir

SERVICE_MODULE = "asgard_assets.serving.app:app"


@dataclass(frozen=True)
class Deployment:
    model: str
    version: str
    url: str
    port: int | None = None
    pid: int | None = None
    started_at: str = ""
    process_start: int | None = None  # the pid's start time (clock ticks after boot)
    code: str | None = None  # service_identity() of the process: what it started from


def state_path(model: str) -> Path:
    """Where the local deployer records what serves ``model``."""
    return deployments_dir() / f"{model}.json"


def process_start(pid: int | None) -> int | None:
    """When ``pid`` started (clock ticks after boot, /proc/<pid>/stat field 22), or None
    if there is no such process."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_service(deployment: Deployment | None) -> bool:
    """True while the deployment's pid is still the service that was started: same start
    time, the service's command line, alive. A recycled pid is some other process."""
    if not deployment or not deployment.pid or deployment.process_start is None:
        return False
    if process_start(deployment.pid) != deployment.process_start:
        return False
    try:
        cmdline = Path(f"/proc/{deployment.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return SERVICE_MODULE.encode() in cmdline.split(b"\0")


def service_health(deployment: Deployment) -> dict | None:
    """The deployment's /health answer, or None when it does not answer, or when another
    process answers at its URL (another home's service, on a port it took)."""
    try:
        r = httpx.get(f"{deployment.url}/health", timeout=5)
        health = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return health if health is not None and health.get("pid") == deployment.pid else None


def serves(deployment: Deployment) -> bool:
    """The deployment's service answers /health with its version, with no failed reload
    since."""
    health = service_health(deployment)
    return (
        health is not None
        and health.get("version") == deployment.version
        and "reload_error" not in health
    )

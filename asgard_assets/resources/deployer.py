"""Model deployment, behind one resource.

``LocalDeployer`` runs the inference service on loopback, blue/green: the new version
starts on the other port, must answer /health with its version, and only then is the
previous one stopped. State (url, port, pid, version) is kept in
``<ASGARD_HOME>/deployments/<model>.json``. The k8s profile's ``KubernetesDeployer`` is in
``resources/kubernetes.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx

from ..settings import asgard_home

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Deployment:
    model: str
    version: str
    url: str
    port: int | None = None
    pid: int | None = None
    started_at: str = ""


class Deployer(dg.ConfigurableResource, ABC):
    @abstractmethod
    def deploy(self, model: str, version: str, bundle: Path) -> tuple[Deployment, bool]:
        """Serve ``version``; returns the deployment and whether anything changed."""

    @abstractmethod
    def current(self, model: str) -> Deployment | None:
        """What is serving ``model`` now, or None."""


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


class LocalDeployer(Deployer):
    host: str = "127.0.0.1"
    blue_port: int = 8701
    green_port: int = 8702
    health_timeout_s: float = 120.0

    def _state(self, model: str) -> Path:
        return asgard_home() / "deployments" / f"{model}.json"

    def current(self, model: str) -> Deployment | None:
        path = self._state(model)
        return Deployment(**json.loads(path.read_text())) if path.exists() else None

    def healthy(self, deployment: Deployment) -> bool:
        try:
            r = httpx.get(f"{deployment.url}/health", timeout=2)
            return r.status_code == 200 and r.json().get("version") == deployment.version
        except httpx.HTTPError:
            return False

    def deploy(self, model: str, version: str, bundle: Path) -> tuple[Deployment, bool]:
        previous = self.current(model)
        if (
            previous
            and previous.version == version
            and _alive(previous.pid)
            and self.healthy(previous)
        ):
            return previous, False
        port = next(
            (
                p
                for p in (self.blue_port, self.green_port)
                if (not previous or p != previous.port) and _port_free(self.host, p)
            ),
            None,
        ) or free_port(self.host)  # both taken (another Asgard home, say): any free port

        logs = asgard_home() / "deployments" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{model}-v{version}.log"
        env = {
            **os.environ,
            "ASGARD_MODEL_URI": f"models:/{model}/{version}",
            "ASGARD_HOME": str(asgard_home()),
        }
        # Feast's import points these at a temp folder of its own process, removed when that
        # process (this run) exits; the service must make its own, or Feast fails to import
        for var in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
            if os.path.basename(env.get(var, "").rstrip("/")).startswith("feast_metrics_"):
                del env[var]

        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "asgard_assets.serving.app:app",
            "--host",
            self.host,
            "--port",
            str(port),
            "--no-access-log",
        ]
        with open(log, "ab") as out:
            # its own session: the service outlives the run that started it
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        new = Deployment(
            model,
            version,
            f"http://{self.host}:{port}",
            port,
            proc.pid,
            datetime.now(UTC).isoformat(),
        )
        deadline = time.monotonic() + self.health_timeout_s
        while not self.healthy(new):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc.pid)
                tail = log.read_text()[-2000:]
                raise dg.Failure(
                    f"version {version} did not become healthy on port {port}; the previous deployment keeps serving. Log tail:\n{tail}"
                )
            time.sleep(0.25)
        if previous and previous.pid != new.pid:
            _stop(previous.pid)
        self._state(model).write_text(json.dumps(asdict(new), indent=2))
        return new, True

    def stop(self, model: str) -> None:
        current = self.current(model)
        if current:
            _stop(current.pid)
            self._state(model).unlink(missing_ok=True)


def _stop(pid: int | None, timeout: float = 10.0) -> None:
    if not _alive(pid):
        return
    os.killpg(os.getpgid(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        try:  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(os.getpgid(pid), signal.SIGKILL)

"""Model deployment, behind one resource.

``LocalDeployer`` runs the inference service on loopback. A new version is swapped into the
running service (SIGHUP, ``serving/swap.py``): same URL, no request refused, the old version
serving until the new one has loaded. A service started from other code (or not answering)
is replaced blue/green instead: the new process starts on the other port, must answer
/health with its version, and only then is the previous one stopped. State (url, port,
pid, the process's start time, version, the service's code) is kept in
``<ASGARD_HOME>/deployments/<model>.json``; deploys of one model hold a file lock, and a pid
is signalled only while it is still the service this deployer started (same start time,
same command). The service gets an allow-listed environment, never the source's URL. The k8s profile's
``KubernetesDeployer`` is in ``resources/kubernetes.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from ..deployments.bundle import MODEL_DIR
from ..deployments.service import (
    SERVICE_MODULE,
    Deployment,
    is_service,
    process_start,
    serves,
    service_health,
    state_path,
)
from ..settings import asgard_home, deployments_dir

ROOT = Path(__file__).resolve().parents[2]


class Deployer(dg.ConfigurableResource, ABC):
    @abstractmethod
    def deploy(self, model: str, version: str, bundle: Path) -> tuple[Deployment, bool]:
        """Serve ``version``; returns the deployment and whether anything changed."""

    @abstractmethod
    def current(self, model: str) -> Deployment | None:
        """What is serving ``model`` now, or None."""


# ports a start tries when each, free when chosen, is taken by the time the service binds it
PORT_ATTEMPTS = 5


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _wait_port_free(host: str, port: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while port and not _port_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)


# what the service reads; anything else (the source's URL, catalog credentials, cloud keys)
# stays with Dagster
SERVICE_ENV = {
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "VIRTUAL_ENV",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "ASGARD_HOME", "ASGARD_PROFILE", "ASGARD_MAX_BODY_BYTES",
    "ASGARD_REDIS", "ASGARD_FEAST_REGISTRY",  # the online store and registry of k8s
}  # fmt: skip
SERVICE_ENV_PREFIXES = ("MLFLOW_", "LC_")
# S3 keys only when MLflow reads the model's artifacts from S3 itself
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")


def service_env(environ: dict[str, str], **extra: str) -> dict[str, str]:
    """The inference service's environment: an allow-list of ``environ`` plus ``extra``."""
    env = {
        k: v for k, v in environ.items() if k in SERVICE_ENV or k.startswith(SERVICE_ENV_PREFIXES)
    }
    if environ.get("MLFLOW_S3_ENDPOINT_URL"):
        env.update({k: environ[k] for k in S3_ENV if k in environ})
    return {**env, **extra}


class LocalDeployer(Deployer):
    host: str = "127.0.0.1"
    blue_port: int = 8701
    green_port: int = 8702
    health_timeout_s: float = 120.0

    def _state(self, model: str) -> Path:
        return state_path(model)

    @contextmanager
    def _lock(self, model: str) -> Iterator[None]:
        """One deploy or stop of ``model`` at a time, across processes."""
        path = self._state(model).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def current(self, model: str) -> Deployment | None:
        path = self._state(model)
        return Deployment(**json.loads(path.read_text())) if path.exists() else None

    def healthy(self, deployment: Deployment) -> bool:
        return serves(deployment)

    def deploy(self, model: str, version: str, bundle: Path) -> tuple[Deployment, bool]:
        with self._lock(model):
            return self._deploy(model, version, bundle)

    def _deploy(self, model: str, version: str, bundle: Path) -> tuple[Deployment, bool]:
        previous = self.current(model)
        health = service_health(previous) if is_service(previous) else None
        identity = service_identity(os.environ)
        if health is not None and previous.code == identity:
            if health.get("version") == version == previous.version:
                return previous, False
            swapped = self._swap(previous, health, version, bundle)
            if swapped is not None:
                return swapped, True
        return self._start(previous, model, version, bundle, identity), True

    def _reload_file(self, model: str) -> Path:
        return self._state(model).with_suffix(".reload.json")

    def _swap(
        self, previous: Deployment, health: dict, version: str, bundle: Path
    ) -> Deployment | None:
        """``version`` loaded into the running service: same process, same URL. None when
        the process went away before it was asked (a new one is started instead)."""
        folder = bundle / MODEL_DIR
        wanted = {
            "uri": f"models:/{previous.model}/{version}",
            "model_dir": str(folder) if folder.is_dir() else "",
            "request": uuid.uuid4().hex,
        }
        reload_file = self._reload_file(previous.model)
        staged = reload_file.with_suffix(".tmp")
        staged.write_text(json.dumps(wanted))
        staged.replace(reload_file)  # whole, never half-written, when the service reads it
        if not is_service(previous):
            return None
        try:
            os.kill(previous.pid, signal.SIGHUP)
        except ProcessLookupError:
            return None
        serving, deadline = health.get("version"), time.monotonic() + self.health_timeout_s
        while (health := service_health(previous) or {}).get("version") != version:
            error = health.get("reload_error") or {}
            if error.get("request") == wanted["request"]:
                raise dg.Failure(
                    f"version {version} did not load in the service at {previous.url}: "
                    f"{error['error']}; version {serving} keeps serving"
                )
            if not is_service(previous) or time.monotonic() > deadline:
                # withdrawn: a load still under way is not applied once it ends
                reload_file.unlink(missing_ok=True)
                if (service_health(previous) or {}).get("version") == version:
                    break  # it was applied just before
                raise dg.Failure(
                    f"version {version} was not serving at {previous.url} within "
                    f"{self.health_timeout_s:.0f} s of the reload (last reload error: "
                    f"{error.get('error', 'none')}); version {serving} keeps serving"
                )
            time.sleep(0.05)
        new = replace(previous, version=version, started_at=datetime.now(UTC).isoformat())
        self._state(previous.model).write_text(json.dumps(asdict(new), indent=2))
        return new

    def _start(
        self, previous: Deployment | None, model: str, version: str, bundle: Path, code: str
    ) -> Deployment:
        """A new service process for ``version``, blue/green beside ``previous`` (on its
        port when it is gone: the URL a user has keeps answering)."""
        self._reload_file(model).unlink(missing_ok=True)  # a stray SIGHUP reloads nothing
        ports: tuple[int | None, ...] = (self.blue_port, self.green_port)
        if previous is not None and not is_service(previous):
            # gone: its URL is the one users have (its port may take a moment to close)
            _wait_port_free(self.host, previous.port, timeout=3.0)
            ports = (previous.port, *ports)
        elif previous is not None:
            ports = tuple(p for p in ports if p != previous.port)
        tried: set[int] = set()
        new = None
        while new is None:
            if len(tried) == PORT_ATTEMPTS:
                raise dg.Failure(
                    f"version {version} found each port it tried taken once it started: "
                    f"{sorted(tried)}; the previous deployment keeps serving"
                )
            port = next(
                (p for p in ports if p and p not in tried and _port_free(self.host, p)), None
            ) or free_port(self.host)  # all taken (another Asgard home, say): any free port
            tried.add(port)
            # None: another process bound the port between the check and the service's
            # start (another home deploying at the same moment): the next port
            new = self._spawn(model, version, bundle, code, port)
        self._state(model).write_text(json.dumps(asdict(new), indent=2))
        if previous and previous.pid != new.pid:
            _stop(previous)
        return new

    def _spawn(
        self, model: str, version: str, bundle: Path, code: str, port: int
    ) -> Deployment | None:
        """The service process for ``version`` on ``port``, once it answers /health as
        itself; None when it could not have the port (something else listens there now)."""
        logs = deployments_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{model}-v{version}.log"
        env = service_env(
            dict(os.environ),
            ASGARD_MODEL_URI=f"models:/{model}/{version}",
            ASGARD_HOME=str(asgard_home()),
            ASGARD_RELOAD_FILE=str(self._reload_file(model)),
        )
        env.pop("ASGARD_MODEL_DIR", None)  # only this version's copy, never one inherited
        # Feast's Prometheus files: in a folder of the deployer's (removed with the service),
        # since uvicorn re-raises SIGTERM after its shutdown and Feast's exit hook for the
        # /tmp folder it would make never runs
        metrics = _metrics_dir(model, port)
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROCESS_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        if (bundle / MODEL_DIR).is_dir():  # the version resolved already: no MLflow at start
            env["ASGARD_MODEL_DIR"] = str(bundle / MODEL_DIR)
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            SERVICE_MODULE,
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
            process_start(proc.pid),
            code,
        )
        deadline, started = time.monotonic() + self.health_timeout_s, False
        try:
            while not self.healthy(new):
                exited = proc.poll() is not None
                if exited and not _port_free(self.host, port):
                    return None
                if exited or time.monotonic() > deadline:
                    tail = log.read_text()[-2000:]
                    raise dg.Failure(
                        f"version {version} did not become healthy on port {port}; the previous deployment keeps serving. Log tail:\n{tail}"
                    )
                time.sleep(0.25)
            started = True
        finally:
            # not started (given up, failed, or the run interrupted: Ctrl-C, a kill of asgard
            # demo): no state file records this process, `asgard stop` could not find it
            if not started:
                _stop_child(proc)
                shutil.rmtree(metrics, ignore_errors=True)
        return new

    def stop(self, model: str) -> None:
        with self._lock(model):
            current = self.current(model)
            if current:
                _stop(current)
                self._state(model).unlink(missing_ok=True)
                self._reload_file(model).unlink(missing_ok=True)


# the settings a service reads once, at start (its model version it swaps in place)
STARTED_WITH = (
    "ASGARD_PROFILE", "ASGARD_MAX_BODY_BYTES", "ASGARD_REDIS", "ASGARD_FEAST_REGISTRY",
    "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL",
)  # fmt: skip


def service_identity(environ: Mapping[str, str]) -> str:
    """What a service process is started from: the package's code, the pinned requirements,
    the Feast repo and the settings it reads. A running service swaps in a new model version
    only while this is unchanged; otherwise a new process replaces it."""
    from ..metadata import PACKAGE, code_version

    files = [*sorted(PACKAGE.rglob("*.py")), ROOT / "requirements.lock"]
    files += sorted((ROOT / "feature_repo").iterdir())
    settings = {k: environ.get(k) for k in STARTED_WITH} | {"home": str(asgard_home())}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return f"{code_version(*files)}-{digest[:8]}"


def _stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Our own child, known by its Popen: its process group (it leads it) goes."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _metrics_dir(model: str, port: int | None) -> Path:
    return deployments_dir() / "metrics" / f"{model}-{port}"


def _stop(deployment: Deployment, timeout: float = 10.0) -> None:
    """Stop the deployment's service, and only it: each signal goes out only while the pid
    is still that service (a pid from an old state file may belong to anything by now).
    Its metrics folder goes with it (only when it was running: a service found gone may
    have left its port, and so its folder's name, to the one that replaced it)."""
    signalled = False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_service(deployment):
            break
        os.killpg(deployment.pid, sig)  # started with its own session: it leads its group
        signalled = True
        deadline = time.monotonic() + timeout
        while not _exited(deployment) and time.monotonic() < deadline:
            time.sleep(0.1)
    if signalled and _exited(deployment):
        shutil.rmtree(_metrics_dir(deployment.model, deployment.port), ignore_errors=True)


def _exited(deployment: Deployment) -> bool:
    """The deployment's process is gone (reaped here if it is our child), or a zombie whose
    parent is not us."""
    try:  # our child: collect its exit status, so it leaves no zombie
        os.waitpid(deployment.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    if process_start(deployment.pid) != deployment.process_start:
        return True
    try:
        state = Path(f"/proc/{deployment.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")

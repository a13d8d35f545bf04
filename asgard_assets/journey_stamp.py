"""What the last successful ``asgard demo`` ran on and what it left, so that a demo with
nothing to do says so without starting Dagster.

The journey is a function of its inputs: the source's rows (per table its columns, row
count and latest ``updated_at``: the comparison bronze makes itself, as the data contract's
cursor moves with every change), the code (the package, the dbt project, the Feast repo, the
pinned requirements), the settings and the days. After a successful run ``asgard demo``
records them beside what the run left: the embedded stores' files (the Iceberg catalog,
which every commit writes, MLflow's registry, Feast's registry and online store) and the
inference service's state. When all of it is unchanged, every step of a new run would find
nothing to do (each step checks that on its own when a run does start) and the demo ends
at once with that run's summary, instead of a Dagster process, its definitions and ~20 steps
noticing the same one by one.

Only files can be checked this way: with the catalog or MLflow elsewhere
(``ASGARD_CATALOG_URI``, ``MLFLOW_TRACKING_URI``) or the k8s profile, every demo runs.
Nothing here imports Dagster, MLflow or pyiceberg: the check costs a source query per table.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

from .contracts.model import MODEL_NAME
from .contracts.sources import SOURCE_TABLES, qualified_name, rows_changed_query, table_name
from .settings import asgard_home, deployments_dir, profile, source_url

STAMP = "last_journey.json"
ROOT = Path(__file__).resolve().parent.parent
CODE = ("asgard_assets", "dbt_project", "feature_repo")
CODE_FILES = ("requirements.lock", "pyproject.toml", "dagster.yaml", "workspace.yaml")
NOT_CODE = {"__pycache__", "target", "logs", "dbt_packages", "data"}
# the embedded stores, relative to ASGARD_HOME: every write to one changes its file
STORES = ("catalog.db", "mlflow/mlflow.db", "feast/registry.db", "feast/online_store.db")
STORES_ELSEWHERE = ("ASGARD_CATALOG_URI", "MLFLOW_TRACKING_URI")
# the environment a run reads: Asgard's settings, Dagster's, MLflow's, object storage's
SETTINGS = ("ASGARD_", "DAGSTER_", "MLFLOW_", "PYICEBERG_", "AWS_")


@dataclass(frozen=True)
class Stamp:
    run_id: str
    at: str  # when the run ended, ISO 8601 UTC
    inputs: dict
    left: dict
    summary: str

    def when(self) -> str:
        return f"{datetime.fromisoformat(self.at):%Y-%m-%d %H:%M} UTC"


def checkable() -> str | None:
    """Why this home's state cannot be checked from here, or None when it can."""
    if profile() != "local":
        return f"the {profile()} profile keeps its state in services"
    for name in STORES_ELSEWHERE:
        if os.environ.get(name):
            return f"{name} is set: that store is not a file in ASGARD_HOME"
    return None


def inputs(command: list[str]) -> dict:
    """What a run of ``command`` would run on, as of now (before the run: a row written
    while it runs is then a change for the next demo, never one it missed)."""
    return {
        "command": command,
        "code": code_digest(),
        "settings": settings_digest(os.environ),
        "source": source_fingerprint(),
    }


def code_digest() -> str:
    """The contents of every file the run's code is made of (not their times: a checkout
    of the same code is the same code)."""
    digest = hashlib.sha256()
    files = [ROOT / f for f in CODE_FILES if (ROOT / f).exists()]
    for top in CODE:
        files += (
            p
            for p in sorted((ROOT / top).rglob("*"))
            if p.is_file() and not NOT_CODE.intersection(p.relative_to(ROOT).parts)
        )
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def settings_digest(environ: os._Environ | dict) -> str:
    """The settings a run reads, hashed: a source URL's password is not written down."""
    settings = {k: v for k, v in environ.items() if k.startswith(SETTINGS)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def source_fingerprint() -> dict[str, list]:
    """Per source table: its columns and their types, its row count and latest
    ``updated_at`` (a type changed in place moves no row's ``updated_at``)."""
    import sqlalchemy as sa

    from .source_url import source_engine

    url = source_url() or f"sqlite:///{demo_source()}"
    engine = source_engine(url)
    try:
        with engine.connect() as conn:
            inspector, out = sa.inspect(conn), {}
            for table in SOURCE_TABLES:
                schema, name = qualified_name(table, conn.dialect.name)
                columns = [[c["name"], str(c["type"])] for c in inspector.get_columns(name, schema)]
                query = rows_changed_query(table_name(table, conn.dialect.name))
                count, latest = conn.execute(sa.text(query)).one()
                out[table] = [columns, count, str(latest)]
            return out
    finally:
        engine.dispose()


def demo_source() -> Path:
    """The demo database, generated now if it is not there yet: the fingerprint is of the
    rows the run will read."""
    from .settings import demo_source_path

    path = demo_source_path()
    if not path.exists():
        from .demo_data import ensure_sqlite

        ensure_sqlite(path)
    return path


def left() -> dict:
    """What a run left: each store file's size and modification time, and the inference
    service's state file as written by the deployer."""
    home, files = asgard_home(), {}
    for name in STORES:
        try:
            stat = (home / name).stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
        except FileNotFoundError:
            files[name] = None
    state = deployments_dir() / f"{MODEL_NAME}.json"
    service = json.loads(state.read_text()) if state.exists() else None
    return {"stores": files, "service": service}


def record(run_id: str, ran_on: dict, summary: str) -> None:
    """After a successful run: what it ran on (``inputs``, taken before it started), what
    it left, and its summary."""
    stamp = {
        "run_id": run_id,
        "at": datetime.now(UTC).isoformat(),
        "inputs": ran_on,
        "left": left(),
        "summary": summary,
    }
    path = asgard_home() / STAMP
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp, indent=1))
    os.replace(tmp, path)


def last() -> Stamp | None:
    path = asgard_home() / STAMP
    try:
        return Stamp(**json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def changed(stamp: Stamp, now: dict) -> str | None:
    """What differs from the stamped run (the first thing found), or None: nothing."""
    was = stamp.inputs
    if was.get("command") != now["command"]:
        return "the days to run"
    if was.get("code") != now["code"]:
        return "the code"
    if was.get("settings") != now["settings"]:
        return "the settings"
    tables = [t for t in SOURCE_TABLES if was.get("source", {}).get(t) != now["source"][t]]
    if tables:
        return f"the source ({', '.join(tables)})"
    state = left()
    stores = [s for s in STORES if stamp.left["stores"].get(s) != state["stores"][s]]
    if stores:
        return f"the stores ({', '.join(stores)})"
    if stamp.left["service"] is not None and state["service"] is None:
        return "the inference service was stopped"
    if stamp.left["service"] != state["service"]:
        return "the inference service was deployed again"
    if state["service"] is not None and not serving(state["service"]):
        return f"the inference service (not answering at {state['service']['url']})"
    return None


def serving(service: dict) -> bool:
    """The service answers /health at its URL with its model and version, and loaded no
    other version since."""
    try:
        with urllib.request.urlopen(f"{service['url']}/health", timeout=2) as response:
            health = json.load(response)
    except (OSError, ValueError):
        return False
    return (
        health.get("model") == service["model"]
        and health.get("version") == service["version"]
        and "reload_error" not in health
    )


class _Tee(StringIO):
    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.out.flush()


@contextmanager
def transcript() -> Iterator[StringIO]:
    """What is printed inside, printed and kept (the run's summary, for the stamp)."""
    tee, out = _Tee(sys.stdout), sys.stdout
    sys.stdout = tee
    try:
        yield tee
    finally:
        sys.stdout = out

"""What the last successful ``asgard demo`` ran on and what it left, so that a demo with
nothing to do says so without starting Dagster.

The journey is a function of its inputs: the source's rows (per table its columns, row
count, latest ``updated_at`` and bronze's cursor, the latest not in the future: every change
to a row moves its ``updated_at``, the data contract's cursor), the code (the package, the dbt
project, the Feast repo, the deploy templates, the pinned requirements), the settings and
the days. After a successful run ``asgard demo`` records them beside what the run left: the
embedded stores' files (the Iceberg catalog, which every commit writes, MLflow's registry,
Feast's registry and online store) and the inference service's state. When all of it is
unchanged, the service is still the process that was started and answers with its version,
and less than a day has passed (maintenance and the freshness checks are due daily), a new
run would write nothing (each step checks that on its own when a run does start): the demo
ends at once with that run's summary instead of a Dagster process, its definitions and ~20
steps noticing the same one by one.

Only files can be checked this way: with the catalog or MLflow elsewhere
(``ASGARD_CATALOG_URI``, ``MLFLOW_TRACKING_URI``) or the k8s profile, every demo runs.
Nothing here imports Dagster, MLflow or pyiceberg before a run: the check costs a source
query per table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from .contracts.model import MODEL_NAME
from .contracts.sources import (
    SOURCE_TABLES,
    cursor_query,
    qualified_name,
    rows_changed_query,
    table_name,
)
from .deployments.service import Deployment, is_service, serves, state_path
from .file_state import write_whole
from .instance import ROOT, dagster_home
from .settings import (
    CATALOG_DB,
    MLFLOW_DB,
    asgard_home,
    embedded_catalog_uri,
    embedded_mlflow_uri,
    profile,
    source_url,
)

STAMP = "last_journey.json"
# the home's own key for hashing settings' values (not in the stamp itself)
SETTINGS_KEY = ".settings-key"
CODE = ("asgard_assets", "dbt_project", "feature_repo", "deploy")
CODE_FILES = (
    "requirements.lock",
    "requirements.runtime.lock",
    "pyproject.toml",
    "dagster.yaml",
    "workspace.yaml",
)
NOT_CODE = {"__pycache__", "target", "logs", "dbt_packages", "data"}
# the embedded stores, relative to ASGARD_HOME: every write to one changes its file (or its
# write-ahead log, were one kept); a test holds each to a file the demo writes
STORES = (CATALOG_DB, MLFLOW_DB, "feast/registry.db", "feast/online_store.db")
# the environment a run reads: Asgard's settings, MLflow's and pyiceberg's own, the Dagster
# instance and the object storage keys the lakehouse is given (not a shell's session tokens)
SETTINGS_PREFIXES = ("ASGARD_", "MLFLOW_", "PYICEBERG_")
SETTINGS = ("DAGSTER_HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
# read by none of the run's steps (dbt typed by hand only): no reason to run again
NOT_SETTINGS = ("ASGARD_DBT_TARGET",)
DUE = timedelta(days=1)  # the daily maintenance, the freshness checks' day
# Dagster's SQLite run storage in its instance folder, unless dagster.yaml names another
RUNS_DB = Path("history") / "runs.db"
STORAGE_KEYS = {"storage", "run_storage", "event_log_storage", "schedule_storage"}


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
    embedded = {
        "ASGARD_CATALOG_URI": embedded_catalog_uri(),
        "MLFLOW_TRACKING_URI": embedded_mlflow_uri(),
    }
    for name, uri in embedded.items():
        if os.environ.get(name, uri) not in ("", uri):
            return f"{name} names a store that is not a file in ASGARD_HOME"
    config = dagster_home() / "dagster.yaml"
    if config.exists() and STORAGE_KEYS & set(yaml.safe_load(config.read_text()) or {}):
        return f"{config} names the Dagster instance's own storage"
    return None


def inputs(days: str) -> dict:
    """What a run over ``days`` would run on, as of now (before the run: a row written
    while it runs is then a change for the next demo, never one it missed). A source that
    cannot be read raises SQLAlchemy's error."""
    return {
        "days": days,
        "code": code_digests(),
        "settings": settings_digest(os.environ),
        "source": source_fingerprint(),
    }


def code_digests() -> dict[str, str]:
    """Each file the run's code is made of, by its contents (not its time: a checkout of the
    same code is the same code); editors' hidden and backup files are not code."""
    files = [ROOT / f for f in CODE_FILES if (ROOT / f).exists()]
    for top in CODE:
        files += (
            p
            for p in sorted((ROOT / top).rglob("*"))
            if p.is_file()
            and not p.name.startswith(".")
            and not p.name.endswith("~")
            and not NOT_CODE.intersection(p.relative_to(ROOT).parts)
        )
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in files
    }


def settings_digest(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings a run reads, by name (a change can say which), each value hashed with
    the home's own random key: a source URL's password is not written down, nor can it be
    found from the stamp alone by hashing guesses."""
    key = _settings_key()
    return {
        k: hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:16]
        for k, v in sorted(environ.items())
        if (k.startswith(SETTINGS_PREFIXES) or k in SETTINGS) and k not in NOT_SETTINGS
    }


def _settings_key() -> bytes:
    path = asgard_home() / SETTINGS_KEY
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def source_fingerprint() -> dict[str, list]:
    """Per source table: its columns and their types (a type changed in place moves no
    row's ``updated_at``), its row count, latest ``updated_at`` and bronze's cursor (with a
    row stamped in the future, the latest is that row's while other rows change)."""
    import sqlalchemy as sa

    from .source_url import demo_source_url, source_engine

    engine = source_engine(source_url() or demo_source_url())
    try:
        with engine.connect() as conn:
            inspector, out = sa.inspect(conn), {}
            for table in SOURCE_TABLES:
                schema, name = qualified_name(table, conn.dialect.name)
                columns = [[c["name"], str(c["type"])] for c in inspector.get_columns(name, schema)]
                where = table_name(table, conn.dialect.name)
                count, latest = conn.execute(sa.text(rows_changed_query(where))).one()
                query, now = cursor_query(where)
                cursor = conn.execute(sa.text(query), now).scalar()
                out[table] = [columns, count, str(latest), str(cursor)]
            return out
    finally:
        engine.dispose()


def left() -> dict:
    """What a run left: each store file's size and modification time, and the inference
    service's state as the deployer wrote it."""
    home, files = asgard_home(), {}
    for name in STORES:
        for path in (home / name, home / f"{name}-wal"):
            if path.exists():
                stat = path.stat()
                files[str(path.relative_to(home))] = [stat.st_size, stat.st_mtime_ns]
    state = state_path(MODEL_NAME)
    service = json.loads(state.read_text()) if state.exists() else None
    return {"stores": files, "service": service}


def record(run_id: str, ran_on: dict, summary: str) -> bool:
    """After a successful run: what it ran on (``inputs``, taken before it started), what
    it left, and its summary. Not recorded (False) when another run is going or a store
    was written after this run ended: what is there is then not this run's alone."""
    if not _last_writer(run_id):
        return False
    stamp = {
        "run_id": run_id,
        "at": datetime.now(UTC).isoformat(),
        "inputs": ran_on,
        "left": left(),
        "summary": summary,
    }
    write_whole(asgard_home() / STAMP, json.dumps(stamp, indent=1))
    return True


def _last_writer(run_id: str) -> bool:
    """The run has ended, no other run is going, and no store changed after its end."""
    import dagster as dg  # the run's summary has imported it already

    going = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    with dg.DagsterInstance.get() as instance:
        ended = instance.get_run_record_by_id(run_id).end_time
        others = instance.get_run_records(dg.RunsFilter(statuses=going), limit=1)
    if ended is None or others:
        return False
    home = asgard_home()
    return all((home / name).stat().st_mtime <= ended for name in left()["stores"])


def _named(was: dict, now: dict) -> str:
    """The names whose value differs (set, unset or changed): three, and how many more."""
    names = sorted(n for n in was.keys() | now.keys() if was.get(n) != now.get(n))
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{', '.join(names[:3])}{more}"


def run_kept(run_id: str) -> bool:
    """The Dagster instance still holds the run (the UI shows what it made), read from its
    SQLite run storage without importing Dagster. An instance stored elsewhere reads as not
    holding it, and the demo runs."""
    runs = dagster_home() / RUNS_DB
    if not runs.exists():
        return False
    try:
        with closing(sqlite3.connect(f"{runs.as_uri()}?mode=ro", uri=True)) as conn:
            found = conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    except sqlite3.Error:
        return False
    return found is not None


def forget() -> None:
    """Before a run: until one succeeds, no earlier run vouches for what is there."""
    (asgard_home() / STAMP).unlink(missing_ok=True)


def last() -> Stamp | None:
    """The stamp of the last successful demo, or None (none, or not one this code reads)."""
    try:
        stamp = Stamp(**json.loads((asgard_home() / STAMP).read_text()))
        datetime.fromisoformat(stamp.at)
    except (OSError, ValueError, TypeError):
        return None
    fields = {"days", "code", "settings", "source"}
    if not isinstance(stamp.inputs, dict) or set(stamp.inputs) != fields:
        return None
    if not isinstance(stamp.left, dict) or set(stamp.left) != {"stores", "service"}:
        return None
    return stamp


def changed(stamp: Stamp, now: dict) -> str | None:
    """What differs from the stamped run, or None: nothing. Every input that differs is
    named; the stores and the service (read only when the inputs are the same) the first."""
    was = stamp.inputs
    inputs = []
    if was["days"] != now["days"]:
        inputs.append(f"the days to run ({was['days']} then, {now['days']} now)")
    if was["code"] != now["code"]:
        inputs.append(f"the code ({_named(was['code'], now['code'])})")
    if was["settings"] != now["settings"]:
        if isinstance(was["settings"], dict):
            inputs.append(f"the settings ({_named(was['settings'], now['settings'])})")
        else:  # a stamp from before settings were kept by name
            inputs.append("the settings")
    tables = [t for t in SOURCE_TABLES if was["source"].get(t) != now["source"][t]]
    if tables:
        inputs.append(f"the source ({', '.join(tables)})")
    if inputs:
        return "; ".join(inputs)
    if not run_kept(stamp.run_id):
        return f"the Dagster instance ({dagster_home()}) does not hold that run"
    state = left()
    names = sorted(set(stamp.left["stores"]) | set(state["stores"]))
    stores = [s for s in names if stamp.left["stores"].get(s) != state["stores"].get(s)]
    if stores:
        return f"the stores ({', '.join(stores)})"
    if stamp.left["service"] is not None and state["service"] is None:
        return "the inference service was stopped"
    if stamp.left["service"] != state["service"]:
        return "the inference service was deployed again"
    deployment = Deployment(**state["service"]) if state["service"] else None
    if deployment is not None and not (is_service(deployment) and serves(deployment)):
        return f"the inference service (not answering at {state['service']['url']})"
    if datetime.now(UTC) - datetime.fromisoformat(stamp.at) > DUE:
        return "a day has passed (maintenance and the freshness checks are due)"
    return None

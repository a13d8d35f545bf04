"""A run's process started ahead of its run, with the libraries its steps use already imported.

Dagster's code server starts every run in a new interpreter (``multiprocessing`` spawn),
which imports Dagster, the definitions (dagster-dbt, pyiceberg, DuckDB: ~4 s here) and then
what the steps use (dbt's runner, MLflow, scikit-learn, Feast: 2-6 s more) before the first
step does any work. A day of new rows is three such runs. ``LocalRunLauncher`` keeps one
process waiting instead: it imports ``PRELOAD`` as soon as it starts, says so on the pipe
named by its argument, then reads one line from stdin, the command of ``dagster api
execute_run`` (what Dagster's container launchers run), and runs it in itself. The launcher
starts the next one once that run ends (or has run a while: ``run_launcher.QUIET_S``).

It imports the definitions ahead too (``asgard_assets.definitions``, the workspace's module:
~0.6 s of every run), and before running a command it checks they are still what a new
process would load: the files of the package, the dbt project and the Feast repository,
and `.env`, unchanged since it started, the demo database's days those of its partitions,
the source's first day read (not a stand-in for a source that was down). Otherwise it
replaces itself (``exec``, the same pid) with a new ``dagster api execute_run`` process,
Dagster's own run process: a run always executes the code as it is when the run starts. A
library upgraded while the UI runs is used by the processes started after the upgrade (the
one waiting then keeps the version it imported), by the daemon only after ``asgard ui`` again.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from pathlib import Path

from ..file_state import files_state

# what a run's process imports before or during its steps (measured: most of a day's runs)
PRELOAD = (
    "asgard_assets",  # the package's environment defaults, first (the libraries read them)
    "dagster",
    "dagster._cli",
    # what `dagster api execute_run` imports to run the job: ~0.17 s
    "dagster._utils.test.definitions",  # (reconstructing a job from its module does)
    "dagster._core.executor.in_process",
    "dagster._core.execution.plan.active",
    "dagster._core.storage.local_compute_log_manager",
    "watchdog.observers.polling",
    "tabulate",  # pandas' to_markdown: every table's preview (metadata.py)
    "pyiceberg.avro.decoder_fast",  # the first manifest read
    "dagster_dbt",
    "pyiceberg.table",
    "pyiceberg.catalog.sql",
    "duckdb",
    "pyarrow.parquet",
    "dbt.cli.main",
    "dbt.task.build",  # what the first `dbt build` in a process imports
    "dbt.adapters.duckdb",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.pyfunc",
    "mlflow.store.tracking.sqlalchemy_store",  # the embedded tracking store (~0.5 s)
    "mlflow.store.model_registry.sqlalchemy_store",
    "sklearn.ensemble",
    "asgard_assets.features.feast_import",  # Feast, as Asgard imports it
    "feast.infra.offline_stores.duckdb",  # what Feast's materialize imports on first use
    "ibis.backends.duckdb",
    "skl2onnx",
    "onnxruntime",
    "asgard_assets.definitions",  # workspace.yaml's module: the definitions, last
)
ROOT = Path(__file__).resolve().parents[2]
# what the definitions are built from besides the libraries (and the source's days)
CODE = (ROOT / "asgard_assets", ROOT / "dbt_project", ROOT / "feature_repo")
NOT_CODE = (ROOT / "dbt_project" / "target", ROOT / "dbt_project" / "logs")


def code_state() -> list:
    """The files of ``CODE``, and the working directory's `.env` (a new run process loads
    it before the definitions: `dagster api execute_run`)."""
    dotenv = Path.cwd() / ".env"
    env = [dotenv.stat().st_size, dotenv.stat().st_mtime_ns] if dotenv.exists() else None
    return [*(files_state(root, skip=NOT_CODE) for root in CODE), env]


def changed_since(state: list | None) -> str | None:
    """Why what was imported ahead is not what a new process would load, or None."""
    if state is None:
        return "the code could not be listed when this process started"
    try:
        if code_state() != state:
            return "the code or .env changed since this process imported it"
    except OSError as e:  # a new process will load whatever is there now
        return f"the code cannot be compared: {e!r}"
    if "asgard_assets.definitions" not in sys.modules:
        return None  # nothing of the definitions is loaded: the run imports them
    try:
        from asgard_assets.days import STAND_INS
        from asgard_assets.partitions import stale_partitions

        if STAND_INS:  # a new process reads the source's first day again
            return "the source could not be read when this process imported the definitions"
        return stale_partitions()
    except Exception as e:  # noqa: BLE001 - a new process will say what is wrong
        return f"its partitions cannot be checked: {e!r}"


def fill_caches() -> None:
    """What a process does the first time it opens the instance, builds gold or logs a
    model, and keeps: the instance's storage opened once (its modules imported, Dagster's
    init of a run's file done: ~20 ms of each run), dbt's per-process set-up
    (``gold.assets.warm_up``: a ``dbt ls``, ~0.5 s off the first build), MLflow's map of
    modules to the distributions that install them, for its requirement check (~0.4 s: it
    reads every installed distribution's metadata; private to MLflow), a training run's tags
    (git) and the embedded tracking and registry stores (~0.08 s). Each is tried on its own;
    what failed is raised at the end (the worker says so and goes on: the run does it then).
    The environment is left as it was (MLflow exports the tracking URI it is given, and a
    process that replaces itself passes its environment on)."""
    environment = dict(os.environ)
    failed = []
    for step in (_open_instance, _dbt, _mlflow):
        try:
            step()
        except Exception as e:  # noqa: BLE001 - reported below, after the others
            failed.append(f"{step.__name__.strip('_')}: {e!r}")
    os.environ.clear()
    os.environ.update(environment)
    if failed:
        raise RuntimeError("; ".join(failed))


def _open_instance() -> None:
    from dagster import DagsterInstance

    from .dagster_instance import KeptEngineEventLogStorage

    if os.environ.get("DAGSTER_HOME"):
        with DagsterInstance.get() as instance:
            storage = instance.event_log_storage
            if isinstance(storage, KeptEngineEventLogStorage):
                storage.prepare()


def _dbt() -> None:
    from ..gold.assets import dbt_project, warm_up
    from ..resources import resource

    warm_up(dbt_project, resource("dbt"))


def _mlflow() -> None:
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils import requirements_utils

    from ..contracts.model import MODEL_NAME
    from ..resources import resource
    from ..settings import MLFLOW_DB, asgard_home, embedded_mlflow_uri

    requirements_utils._init_modules_to_packages_map()
    resolve_tags()  # a training run's tags: MLflow looks the code's git commit up, once
    tracking = resource("mlflow_tracking")
    # MLflow keeps its stores per URI: the run's first call finds them open. Only the
    # embedded store that exists (a server may be slow to answer or down: the process would
    # not be ready meanwhile; a home without one gets it from its first training run)
    if tracking.uri() == embedded_mlflow_uri() and (asgard_home() / MLFLOW_DB).exists():
        tracking.champion(MODEL_NAME)


def main() -> None:
    # a run is interrupted by SIGTERM as by SIGINT (Dagster's run processes map it the same
    # way); while the worker waits, either ends it
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        state = code_state()  # before the imports: an edit made during them counts
    except OSError:
        state = None  # not comparable: the run gets a new process
    try:
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001
                # a library missing or broken here fails only the runs that use it, with
                # their own error, as in a process of Dagster's
                print(f"warm worker: importing {name} ahead failed: {e!r}", file=sys.stderr)
        try:
            fill_caches()
        except Exception as e:  # noqa: BLE001 - the run does it when it needs it
            print(f"warm worker: preparing ahead failed: {e!r}", file=sys.stderr)
        if len(sys.argv) > 1:  # the launcher's pipe: ready (a run goes elsewhere until then)
            try:
                os.write(int(sys.argv[1]), b"ready")
            except BrokenPipeError:  # the launcher was disposed of: stdin has ended too
                pass
            os.close(int(sys.argv[1]))
        line = sys.stdin.readline()
    except KeyboardInterrupt:
        sys.exit(130)
    if not line:  # the launcher's process ended before handing a run over
        return
    command = json.loads(line)  # the entry point ("dagster"), "api", "execute_run", args
    args = command[command.index("api") :]
    sys.stdin.close()
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # as in a run process of Dagster's
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    if why := changed_since(state):
        print(f"warm worker: {why}: the run starts in a new process", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "dagster", *args])
    from dagster._cli import main as dagster_main

    sys.argv = ["dagster", *args]
    dagster_main()


if __name__ == "__main__":
    main()

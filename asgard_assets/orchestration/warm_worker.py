"""A run's process started ahead of its run, with the libraries its steps use already imported.

Dagster's code server starts every run in a new interpreter (``multiprocessing`` spawn),
which imports Dagster, the definitions (dagster-dbt, pyiceberg, DuckDB: ~4 s here) and then
what the steps use (dbt's runner, MLflow, scikit-learn, Feast: 2-6 s more) before the first
step does any work. A day of new rows is four such runs. ``LocalRunLauncher`` keeps one
process waiting instead: it imports ``PRELOAD`` as soon as it starts, says so on the pipe
named by its argument, then reads one line from stdin, the command of ``dagster api
execute_run`` (what Dagster's container launchers run), and runs it in itself. The launcher
starts the next one as it hands a run over.

Only libraries are imported ahead (and two small modules of Asgard's that must come before
them: the package's environment defaults, Feast's import): the definitions (the workspace's
module, ``asgard_assets.definitions``, and all it imports) are imported by the run, so a run
executes the code as it is when the run starts, as in Dagster's own run processes. A library
upgraded while the UI runs is picked up by the next ``asgard ui``, as by the daemon itself.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys

# what a run's process imports before or during its steps (measured: most of a day's runs)
PRELOAD = (
    "asgard_assets",  # the package's environment defaults, first (the libraries read them)
    "dagster",
    "dagster._cli",
    "dagster_dbt",
    "pyiceberg.table",
    "pyiceberg.catalog.sql",
    "duckdb",
    "pyarrow.parquet",
    "dbt.cli.main",
    "mlflow",
    "mlflow.sklearn",
    "sklearn.ensemble",
    "asgard_assets.features.feast_import",  # Feast, as Asgard imports it
    "skl2onnx",
    "onnxruntime",
)


def main() -> None:
    # a run is interrupted by SIGTERM as by SIGINT (Dagster's run processes map it the same
    # way); while the worker waits, either ends it
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001
                # a library missing or broken here fails only the runs that use it, with
                # their own error, as in a process of Dagster's
                print(f"warm worker: importing {name} ahead failed: {e!r}", file=sys.stderr)
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
    sys.stdin.close()
    sys.stdin = open(os.devnull)  # as in a run process of Dagster's  # noqa: SIM115
    from dagster._cli import main as dagster_main

    sys.argv = ["dagster", *command[command.index("api") :]]
    dagster_main()


if __name__ == "__main__":
    main()

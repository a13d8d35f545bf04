"""Asgard: operational database to deployed model, every step a Dagster asset on Iceberg."""

import os
import sys
import warnings

# pyiceberg scans with a pool of cpu+4 threads, each holding a file's batches: on a small
# machine that costs memory and no speed. (Writes stream on a thread of their own,
# resources/data_files.py.) Users can override.
os.environ.setdefault("PYICEBERG_MAX_WORKERS", str(max(1, (os.cpu_count() or 2) // 2)))

# A run over a range of days (a single-run backfill) logs one "planned" event per asset
# instead of one per asset and day: on the default SQLite instance, 181 days cost ~16 s of
# planned events otherwise. Dagster's trade-off: partitions of a failed range run are not
# marked failed (they stay as they were).
os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
# ...and hands a step's materializations of those days (and a run's planned events) to the
# event log storage as one batch, which Asgard's SQLite storage writes in one transaction
# (orchestration/dagster_instance.py); Dagster's default of 0 stores them one by one.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")

# Usage telemetry off, as Dagster's is in dagster.yaml: MLflow 3 otherwise sends events from
# every process that trains, registers or serves (a thread of its own in each). Users can
# turn it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# dbt, feast and uvicorn are run as commands: use the ones installed beside this interpreter,
# whether or not the venv's bin is on PATH (`.venv/bin/dagster ...` does not put it there).
_bin = os.path.dirname(os.path.abspath(sys.executable))
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

# A day overwrite deletes the window's old rows first; a window with no rows yet (the first
# load, an empty day) is expected, not worth pyiceberg's warning on every write.
warnings.filterwarnings(
    "ignore", message="Delete operation did not match any records", module="pyiceberg"
)

# Iceberg snapshot ids are the assets' data versions (dg.Output(data_version=...) for the dbt
# models): a documented Dagster API, still marked beta; not a concern of Asgard's users.
warnings.filterwarnings("ignore", message="Parameter `data_version` of initializer `Output")

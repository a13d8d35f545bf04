"""Asgard: operational database to deployed model, every step a Dagster asset on Iceberg."""

import os
import sys

# pyiceberg writes with a pool of cpu+4 threads, each holding a micro-batch: on a small
# machine that costs memory and no speed (measured in bench/ingest.py). Users can override.
os.environ.setdefault("PYICEBERG_MAX_WORKERS", str(max(1, (os.cpu_count() or 2) // 2)))

# dbt, feast and uvicorn are run as commands: use the ones installed beside this interpreter,
# whether or not the venv's bin is on PATH (`.venv/bin/dagster ...` does not put it there).
_bin = os.path.dirname(os.path.abspath(sys.executable))
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

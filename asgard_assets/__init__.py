"""Asgard: operational database to deployed model, every step a Dagster asset on Iceberg."""

import os

# pyiceberg writes with a pool of cpu+4 threads, each holding a micro-batch: on a small
# machine that costs memory and no speed (measured in bench/ingest.py). Users can override.
os.environ.setdefault("PYICEBERG_MAX_WORKERS", str(max(1, (os.cpu_count() or 2) // 2)))

"""Every DuckDB connection of Asgard's (the silver engine, key checks, queries, dbt's):
bounded in memory, spilling to local disk past the bound."""

from __future__ import annotations

import duckdb

from ..settings import asgard_home

# what one DuckDB connection may hold before it spills to disk (DuckDB's own default is
# 80% of the machine's memory, so a query over a large table would grow with it)
DUCKDB_MEMORY = "512MB"


def duckdb_bounds(memory_limit: str = DUCKDB_MEMORY) -> dict[str, str]:
    """DuckDB settings: spill past ``memory_limit`` to ASGARD_HOME/tmp/duckdb. Every DuckDB
    connection of Asgard's gets them, dbt's too (``gold/dbt_iceberg_plugin.py``)."""
    spill = asgard_home() / "tmp" / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    return {"memory_limit": memory_limit, "temp_directory": str(spill)}


def bounded_duckdb(memory_limit: str = DUCKDB_MEMORY) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection within ``duckdb_bounds``."""
    return duckdb.connect(config=duckdb_bounds(memory_limit))

"""Every DuckDB connection of Asgard's (the silver engine, key checks, queries, dbt's):
bounded in memory, spilling to local disk past the bound."""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections import deque

import duckdb

from ..settings import asgard_home

# what one DuckDB database may hold before it spills to disk (DuckDB's own default is
# 80% of the machine's memory, so a query over a large table would grow with it)
DUCKDB_MEMORY = "512MB"

_lock = threading.Lock()
_names = itertools.count()
# the catalogs of connections gone since the last call: (their database, the name)
_unused: deque[tuple[duckdb.DuckDBPyConnection, str]] = deque()


def duckdb_bounds(memory_limit: str = DUCKDB_MEMORY) -> dict[str, str]:
    """DuckDB settings: spill past ``memory_limit`` to ASGARD_HOME/tmp/duckdb. Every DuckDB
    connection of Asgard's gets them, dbt's too (``gold/dbt_iceberg_plugin.py``)."""
    spill = asgard_home() / "tmp" / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    return {"memory_limit": memory_limit, "temp_directory": str(spill)}


@functools.lru_cache(maxsize=4)
def _database(memory_limit: str, temp_directory: str) -> duckdb.DuckDBPyConnection:
    # the database outlives its queries: its allocator's background threads give the memory
    # they freed back to the system within seconds (a database closed after each use did so
    # at once; without them a process holds its largest query's memory from then on)
    config = {"allocator_background_threads": True}
    return duckdb.connect(
        config={"memory_limit": memory_limit, "temp_directory": temp_directory, **config}
    )


def bounded_duckdb(memory_limit: str = DUCKDB_MEMORY) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection within ``duckdb_bounds``: a cursor on the process's one in-memory
    database for those bounds (starting a database costs ~16 ms, a cursor nothing; a run
    opens dozens). The memory limit is the database's: it bounds all the connections of
    the process that share it together, not each. Its default catalog is its own: the
    views ``Lakehouse.attach`` names for their tables (``bronze.machine_logs``) are seen by
    this connection alone (not by a ``.cursor()`` of it: that one is on the shared
    catalog), and the catalog is detached once the connection is garbage."""
    settings = duckdb_bounds(memory_limit)
    with _lock:  # DuckDB's Python connection is not to be shared between threads
        database = _database(settings["memory_limit"], settings["temp_directory"])
        con = database.cursor()
        gone = [_unused.popleft() for _ in range(len(_unused))]
        detaching = [(owner.cursor(), name) for owner, name in gone]
    for cursor, name in detaching:
        try:
            cursor.execute(f"DETACH DATABASE IF EXISTS {name}")
        except duckdb.Error:
            pass  # an empty catalog left attached is harmless: not worth failing a query
        finally:
            cursor.close()
    name = f"asgard_{next(_names)}"
    con.execute(f"ATTACH ':memory:' AS {name}")
    con.execute(f"USE {name}")
    # detached by the next call, not by the finalizer: that may run inside a DuckDB call
    weakref.finalize(con, _unused.append, (database, name)).atexit = False
    return con

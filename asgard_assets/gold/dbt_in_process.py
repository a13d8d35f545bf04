"""dbt in the Dagster step's own process, seen by dagster-dbt as the process it would start.

dagster-dbt runs every dbt command as a subprocess and reads its JSON log lines from stdout.
That process paid for itself on every gold build: an interpreter, dbt's import (~2 s) and the
``asgard_iceberg`` plugin's (pyiceberg, pyarrow, the lakehouse: ~2 s), all of which the step's
process has already loaded. ``DbtThread`` runs the same command with dbt's programmatic entry
point (``dbtRunner``) on a thread and hands each event to dagster-dbt as the JSON line dbt
would have printed (``msg_to_json``, what ``--log-format json`` writes), so dagster-dbt's own
event handling (Outputs, asset checks, error messages) is unchanged.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dbt_common.events.base_types import EventMsg


class _Lines:
    """The reading end of the thread's output: bytes lines, like a pipe's."""

    def __init__(self, lines: queue.SimpleQueue):
        self._lines = lines
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        while (line := self._lines.get()) is not None:
            yield line

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc) -> None:
        self.closed = True


class DbtThread:
    """``dbt <args>`` run in this process, with the parts of ``subprocess.Popen`` that
    dagster-dbt's ``DbtCliInvocation`` uses: ``args``, ``stdout``, ``wait``, ``returncode``,
    ``send_signal``. Exit codes are dbt's: 0 success, 1 a node failed, 2 dbt itself failed."""

    def __init__(self, args: Sequence[str]):
        self.args = ["dbt", *args]
        self.returncode: int | None = None
        self._reported = False  # dbt logged an error itself
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        self.stdout = _Lines(self._lines)
        self._thread = threading.Thread(
            target=self._run, args=(list(args),), name="dbt", daemon=True
        )
        self._thread.start()

    def _emit(self, msg: EventMsg) -> None:
        from dbt_common.events.base_types import EventLevel
        from dbt_common.events.functions import msg_to_json

        # what dbt prints at its default log level; the debug events go to dbt.log
        if msg.info.level != EventLevel.DEBUG:
            self._lines.put(msg_to_json(msg).encode())
        self._reported |= msg.info.level == EventLevel.ERROR

    def _run(self, args: list[str]) -> None:
        try:
            # imported by the first command, not with the definitions: a run that skips
            # gold (nothing changed) or has no gold step never needs dbt's runner
            from dbt.cli.main import dbtRunner

            result = dbtRunner(callbacks=[self._emit]).invoke(args)
            if result.exception is not None and not self._reported:
                # dbt stopped before its logging started (a bad flag): say why, as the
                # process would have on its stdout
                self._lines.put(_error_line(f"dbt failed: {result.exception}"))
            self.returncode = 0 if result.success else (2 if result.exception else 1)
        except BaseException as exc:  # the thread must always end the stream
            self._lines.put(_error_line(f"dbt failed: {exc!r}"))
            self.returncode = 2
        finally:
            _close_duckdb()
            self._lines.put(None)

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # dbt has no way to stop an in-process command; the step is being interrupted and its
        # process ends with it (the thread is a daemon), leaving every table at the snapshot
        # it had: a model's Iceberg commit is the last thing its node does
        pass


def _close_duckdb() -> None:
    """dbt-duckdb keeps its database open until the process exits (it expects one command
    per process; ``close_all_connections`` only drops the reference): closed here, so an
    in-memory database's rows are let go and a file is free for the next command, in this
    process or another."""
    connections = sys.modules.get("dbt.adapters.duckdb.connections")
    if connections is None:
        return
    manager = connections.DuckDBConnectionManager
    with manager._LOCK:
        env, manager._ENV = manager._ENV, None
    if env is not None:
        env.close()


def _error_line(message: str) -> bytes:
    return json.dumps(
        {"info": {"level": "error", "msg": message, "name": "AsgardDbtError"}, "data": {}}
    ).encode()

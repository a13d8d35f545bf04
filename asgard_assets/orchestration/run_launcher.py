"""The local run launcher: Dagster's default, plus a health check of the run's process.

Dagster's run monitoring (``run_monitoring`` in ``dagster.yaml``, run by the daemon of
``dagster dev``) marks a STARTED run failed when its launcher reports the worker gone, but
the ``DefaultRunLauncher`` cannot tell. This one can: every Dagster event records the pid
of the process that emitted it, so a run whose process no longer exists (kill -9, OOM
killer, a reboot) is marked failed when the daemon next looks, instead of staying STARTED
forever. Runs started from the CLI (``dagster asset materialize``) are covered too. Local
profile only: the pid is looked up on the daemon's own machine.
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus


def run_pid(instance, run_id: str) -> int | None:
    """The pid of the process that started executing the run (its RUN_START event)."""
    events = instance.all_logs(run_id, of_type=DagsterEventType.RUN_START)
    return events[-1].dagster_event.pid if events and events[-1].dagster_event else None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LocalRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = run_pid(self._instance, run.run_id)
        if pid is None or alive(pid):  # no pid yet: still starting, not ours to judge
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run's process {pid} no longer exists (killed?)"
        )

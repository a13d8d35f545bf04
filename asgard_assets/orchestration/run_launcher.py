"""The local run launcher: Dagster's default, plus a health check of the run's process.

Dagster's run monitoring (``run_monitoring`` in ``dagster.yaml``, run by the daemon of
``dagster dev``) marks a STARTED run failed when its launcher reports the worker gone, but
the ``DefaultRunLauncher`` cannot tell. This one can: every Dagster event records the pid
of the process that emitted it, so a run whose process no longer exists (kill -9, OOM
killer, a reboot) is marked failed when the daemon next looks, instead of staying STARTED
forever. Runs started from the CLI (``dagster asset materialize``) are covered too. Local
profile only: the pid is looked up on the daemon's own machine.

It also starts runs in a warm process (``warm_worker.py``): one waits with the libraries the
steps use and the definitions already imported, and a run launched (by the daemon's queue,
a sensor, a schedule, a click on Materialize) is handed to it instead of to the code server,
which would start a new interpreter and import them all again. The next one starts
importing when that run ends (or has run ``QUIET_S``). When none is ready (the first launch,
one launched during a run or while the next is still importing) the run goes to the code
server, as it would without this: a process still importing would start it later than
Dagster's own. A handed-over process is watched by the launching process (the daemon): one
that ends before its run started or finished has the run failed at once (run monitoring
asks the launcher only about started runs, and only every 30 s; it still covers the runs of
a daemon that restarted). ``warm_worker: false`` in ``dagster.yaml`` turns this off; a run
whose code location uses another interpreter goes to the code server.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading

import psutil
from dagster import (
    DagsterEventType,
    DagsterInvariantViolationError,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    Field,
)
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs

# the run tags naming the warm process a run was handed to, and when it started (a pid is
# reused once its process is gone: the start time tells the process apart)
WORKER_PID_TAG = "asgard/run_worker_pid"
WORKER_STARTED_TAG = "asgard/run_worker_started"
# The next warm process starts importing when the handed-over run ends, or once it has run
# this long: its import beside a run competed with it for the CPU (2 cores here: a day's
# three runs took ~0.3 s longer in all, the automation's ticks between them twice as long);
# a long run has the next one ready by its end.
QUIET_S = 10.0


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
    def __init__(self, inst_data=None, warm_worker: bool = True):
        super().__init__(inst_data=inst_data)
        self._warm = warm_worker
        self._next: WarmProcess | None = None
        self._lock = threading.Lock()  # the daemon launches from more than one thread
        self._disposed = False

    @classmethod
    def config_type(cls) -> dict:
        return {"warm_worker": Field(bool, is_required=False, default_value=True)}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> LocalRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def _take_worker(self) -> WarmProcess | None:
        """The waiting process if it is ready, else None, with one started or still
        importing for a later launch. The next one starts once the taken one's run ends, or
        has gone on for ``QUIET_S`` (``_watch``)."""
        with self._lock:
            waiting = self._next
            if waiting is None or not waiting.ready():
                self._alive_next()
                return None
            self._next = None
            return waiting

    def prepare(self) -> WarmProcess | None:
        """The process waiting for the next run, started now if none is (a run launched once
        it is ready goes to it); None when runs go to the code server (``warm_worker:
        false``) or the launcher was disposed of (none is started then: it would be left)."""
        if not self._warm:
            return None
        with self._lock:
            return self._alive_next()

    def _alive_next(self) -> WarmProcess | None:
        """(Under the lock.) The process waiting for the next run, started if none is alive;
        none once the launcher is disposed of."""
        if not self._disposed and (self._next is None or self._next.process.poll() is not None):
            self._start_next()
        return self._next

    def _start_next(self) -> None:
        try:
            self._next = WarmProcess()
        except OSError as e:  # no memory to fork: runs go to the code server meanwhile
            self._next = None
            logging.getLogger(__name__).warning(f"cannot start a warm run process: {e}")

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if not self._warm or origin is None or origin.executable_path != sys.executable:
            return super().launch_run(context)
        worker = self._take_worker()
        if worker is None:
            return super().launch_run(context)
        command = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        ).get_command_args()
        process = worker.process
        try:
            started = psutil.Process(process.pid).create_time()
            self._instance.add_run_tags(
                run.run_id, {WORKER_PID_TAG: str(process.pid), WORKER_STARTED_TAG: str(started)}
            )
            process.stdin.write(json.dumps(list(command)) + "\n")
            process.stdin.close()
        except (OSError, psutil.NoSuchProcess):  # it died since it said it was ready
            # tags cannot be removed: an empty pid says the run was not handed over
            self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: ""})
            return super().launch_run(context)
        self._run_ids.add(run.run_id)
        threading.Thread(target=self._watch, args=(process, run.run_id), daemon=True).start()
        return None

    def _watch(self, process: subprocess.Popen, run_id: str) -> None:
        """Wait for the run's process (which also reaps it), start the next warm process
        (once it ends, or once it has run ``QUIET_S``), and fail the run if its process ended
        before the run did: a crash while importing the definitions, kill -9, the OOM
        killer. A run that ended writes its last event before its process exits."""
        try:
            code = process.wait(timeout=QUIET_S)
        except subprocess.TimeoutExpired:
            if self._live_instance() is not None:
                self.prepare()  # a long run: the next run's process imports beside it
            code = process.wait()
        instance = self._live_instance()
        if instance is None:  # the daemon is going away: run monitoring looks after the run
            return
        self.prepare()
        try:
            self._fail_unfinished(instance, run_id, process.pid, code)
        except Exception:
            if not self._disposed:
                raise
            # the instance's storage was disposed of first: run monitoring looks after it

    def _live_instance(self):
        """The launcher's instance, or None once it is disposed of or gone."""
        try:
            return None if self._disposed else self._instance
        except DagsterInvariantViolationError:  # garbage-collected: its process is ending
            return None

    @staticmethod
    def _fail_unfinished(instance, run_id: str, pid: int, code: int) -> None:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return
        ended = f"the run's process {pid} ended (exit code {code})"
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=ended)
            return
        when = "during" if run.status == DagsterRunStatus.STARTED else "before it started"
        instance.report_run_failed(
            run, f"{ended} {when} the run; its error, if any, is in the output of `asgard ui`"
        )

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or not run.tags.get(WORKER_PID_TAG):
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        worker = handed_to(run)
        if worker is None:  # its process is gone: nothing is left to stop
            self._instance.report_run_canceled(run, message="the run's process had ended")
            return True
        # as Dagster's container launchers stop a run: SIGTERM, which the run's process
        # takes as an interrupt (the run is then marked canceled)
        try:
            worker.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            self._instance.report_run_canceled(run, message="the run's process had ended")
        return True

    def dispose(self) -> None:
        with self._lock:
            self._disposed = True
            if self._next is not None:
                self._next.close()
            self._next = None
        super().dispose()

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = run_pid(self._instance, run.run_id)
        if pid is None:  # not started yet (a warm process ending first is seen by _watch)
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        if alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run's process {pid} no longer exists (killed?)"
        )


def handed_to(run: DagsterRun) -> psutil.Process | None:
    """The live warm process ``run`` was handed to, or None when it is gone (its pid reused
    by another process counts as gone)."""
    try:
        worker = psutil.Process(int(run.tags[WORKER_PID_TAG]))
        same = abs(worker.create_time() - float(run.tags.get(WORKER_STARTED_TAG, 0))) < 0.01
        return worker if same and worker.status() != psutil.STATUS_ZOMBIE else None
    except (psutil.NoSuchProcess, KeyError, ValueError):
        return None


class WarmProcess:
    """A warm process (warm_worker.py) and the pipe on which it says its imports are done."""

    def __init__(self):
        said, say = os.pipe()
        try:
            # stdout and stderr are the launcher's (dagster dev prints the runs' output, as
            # it does for the code server's run processes)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "asgard_assets.orchestration.warm_worker", str(say)],
                stdin=subprocess.PIPE,
                text=True,
                pass_fds=(say,),
            )
        except OSError:
            os.close(said)
            raise
        finally:
            os.close(say)
        self._said: int | None = said

    def ready(self) -> bool:
        """Imports done and alive (a process that died closes the pipe too)."""
        if self._said is not None:
            said = select.poll()  # not select(): a long-lived daemon's fds may pass 1024
            said.register(self._said, select.POLLIN)
            if said.poll(0):
                os.close(self._said)
                self._said = None
        return self._said is None and self.process.poll() is None

    def close(self) -> None:
        """End it if it still waits (it ends when its stdin does)."""
        if self._said is not None:
            os.close(self._said)
            self._said = None
        if self.process.poll() is None:
            self.process.stdin.close()

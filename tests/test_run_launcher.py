"""LocalRunLauncher hands launched runs to a warm process (orchestration/warm_worker.py): real
runs, a real Dagster instance with the repository's dagster.yaml, the runs' own processes."""

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
from conftest import ROOT
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from asgard_assets.orchestration.run_launcher import (
    WORKER_PID_TAG,
    WORKER_STARTED_TAG,
    LocalRunLauncher,
    handed_to,
)

JOBS = """
import os
import time
import dagster as dg

@dg.op
def where(context):
    context.log.info(f"pid {os.getpid()}")

@dg.job(executor_def=dg.in_process_executor)
def quick():
    where()

@dg.op
def wait():
    time.sleep(600)

@dg.job(executor_def=dg.in_process_executor)
def sleepy():
    wait()
"""


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        try:
            yield instance
        finally:
            # no process of a test outlives it (a failed test's sleepy run included)
            # (the processes the runs were handed to, matched by their start time too)
            workers = [handed_to(r) for r in instance.get_runs() if WORKER_PID_TAG in r.tags]
            if instance.run_launcher._next is not None:
                workers.append(psutil.Process(instance.run_launcher._next.pid))
            instance.run_launcher.dispose()
            for worker in filter(None, workers):
                try:
                    worker.kill()
                except psutil.NoSuchProcess:
                    pass


def launch(instance: dg.DagsterInstance, folder: Path, job: str) -> dg.DagsterRun:
    """What the daemon's queue does with a run (the job loaded from its file, as a code
    location would)."""
    recon = ReconstructableJob.for_file(str(folder / "jobs.py"), job)
    run = instance.create_run_for_job(
        job_def=recon.get_definition(), job_code_origin=recon.get_python_origin()
    )
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return instance.get_run_by_id(run.run_id)


def wait_for(instance, run_id: str, statuses, bound: float = 180) -> dg.DagsterRun:
    deadline = time.monotonic() + bound  # a bound, not a timing assertion
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run.status}")


def started_in(instance, run_id: str) -> int:
    (start,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    return start.dagster_event.pid


def test_a_launched_run_runs_in_the_worker_that_was_waiting(instance, tmp_path):
    first = launch(instance, tmp_path, "quick")
    waiting = instance.run_launcher._next  # started as the first run was handed over
    assert waiting is not None and waiting.poll() is None
    done = wait_for(instance, first.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.SUCCESS
    assert started_in(instance, first.run_id) == int(first.tags[WORKER_PID_TAG])

    second = launch(instance, tmp_path, "quick")
    assert int(second.tags[WORKER_PID_TAG]) == waiting.pid
    done = wait_for(instance, second.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.SUCCESS
    assert started_in(instance, second.run_id) == waiting.pid
    # the run imported the job's code itself: the worker had only the libraries
    messages = [e.message for e in instance.all_logs(second.run_id)]
    assert f"pid {waiting.pid}" in messages

    # the launcher's end ends the worker still waiting
    nxt = instance.run_launcher._next
    instance.run_launcher.dispose()
    assert nxt.wait(timeout=120) == 0


def test_terminating_a_run_in_a_worker_cancels_it(instance, tmp_path):
    run = launch(instance, tmp_path, "sleepy")
    wait_for(instance, run.run_id, [dg.DagsterRunStatus.STARTED])
    assert instance.run_launcher.terminate(run.run_id)
    done = wait_for(instance, run.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.CANCELED
    # and the run's process ends (it raised a timeout if it did not)
    psutil.Process(int(run.tags[WORKER_PID_TAG])).wait(timeout=60)


def test_a_worker_that_died_while_waiting_is_replaced(instance, tmp_path):
    launch_first = launch(instance, tmp_path, "quick")
    wait_for(instance, launch_first.run_id, FINISHED_STATUSES)
    dead = instance.run_launcher._next
    dead.kill()
    dead.wait()
    run = launch(instance, tmp_path, "quick")
    assert int(run.tags[WORKER_PID_TAG]) != dead.pid
    done = wait_for(instance, run.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.SUCCESS


def test_warm_worker_false_leaves_runs_to_the_code_server(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    config = (ROOT / "dagster.yaml").read_text()
    assert "warm_worker: true" in config
    (home / "dagster.yaml").write_text(config.replace("warm_worker: true", "warm_worker: false"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert instance.run_launcher._warm is False
        (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS))
        recon = ReconstructableJob.for_file(str(tmp_path / "jobs.py"), "quick")
        run = instance.create_run_for_job(
            job_def=recon.get_definition(), job_code_origin=recon.get_python_origin()
        )
        # Dagster's own path: it needs a code location from a workspace, which this has not
        with pytest.raises(dg.DagsterInvariantViolationError, match="requires a workspace"):
            instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert instance.run_launcher._next is None


def test_a_run_whose_worker_died_before_starting_it_is_failed_by_monitoring(instance, tmp_path):
    """Its process gone before RUN_START (an import that crashed it, the OOM killer): run
    monitoring fails the run at once instead of waiting for its start timeout."""
    recon = ReconstructableJob.for_file(str(tmp_path / "jobs.py"), "quick")
    run = instance.create_run_for_job(
        job_def=recon.get_definition(), job_code_origin=recon.get_python_origin()
    )
    gone = subprocess.Popen(["true"])
    started = psutil.Process(gone.pid).create_time()
    gone.wait()
    instance.add_run_tags(
        run.run_id, {WORKER_PID_TAG: str(gone.pid), WORKER_STARTED_TAG: str(started)}
    )
    health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
    assert health.status == WorkerStatus.FAILED
    assert f"the run's process {gone.pid} ended before it started the run" in health.msg
    # a pid now used by another process (started later) is not the run's
    other = subprocess.Popen(["sleep", "60"])
    try:
        instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(other.pid)})
        run = instance.get_run_by_id(run.run_id)
        assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.FAILED
        assert instance.run_launcher.terminate(run.run_id)  # nothing to stop: canceled
        assert other.poll() is None  # not signalled
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
    finally:
        other.kill()
        other.wait()


def test_a_waiting_worker_has_imported_libraries_only():
    """What a run executes is imported by the run: nothing of the definitions (or of a
    workspace's module) is in the waiting process."""
    code = (
        "import importlib, sys\n"
        "from asgard_assets.orchestration.warm_worker import PRELOAD\n"
        "for name in PRELOAD: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('asgard')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(done.stdout) == [
        "asgard_assets",
        "asgard_assets.features",
        "asgard_assets.features.feast_import",
        "asgard_assets.orchestration",
        "asgard_assets.orchestration.warm_worker",
    ]

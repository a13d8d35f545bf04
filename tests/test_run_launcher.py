"""LocalRunLauncher hands launched runs to a warm process (orchestration/warm_worker.py): real
runs, a real Dagster instance with the repository's dagster.yaml, the runs' own processes."""

import os
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
from dagster._core.launcher.base import LaunchRunContext
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from asgard_assets.orchestration import run_launcher
from asgard_assets.orchestration.run_launcher import (
    WORKER_PID_TAG,
    WORKER_STARTED_TAG,
    LocalRunLauncher,
    WarmProcess,
    handed_to,
)
from asgard_assets.orchestration.warm_worker import PRELOAD

JOBS = """
import os
import sys
import time
import dagster as dg

@dg.op
def where(context):
    ahead = "asgard_assets.definitions" in sys.modules
    context.log.info(f"pid {os.getpid()}, definitions imported ahead: {ahead}")

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

# a job whose code crashes the run's process as it is imported (not this test's process,
# which loads it from its file too)
CRASHING = """
import os
import sys
import dagster as dg

if "execute_run" in sys.argv:
    os._exit(3)

@dg.op
def nothing():
    pass

@dg.job(executor_def=dg.in_process_executor)
def crashing():
    nothing()
"""


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS))
    (tmp_path / "crashing.py").write_text(textwrap.dedent(CRASHING))
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
                workers.append(psutil.Process(instance.run_launcher._next.process.pid))
            instance.run_launcher.dispose()
            for worker in filter(None, workers):
                try:
                    worker.kill()
                except psutil.NoSuchProcess:
                    pass


def launch(
    instance: dg.DagsterInstance, folder: Path, job: str, file: str = "jobs.py"
) -> dg.DagsterRun:
    """What the daemon's queue does with a run (the job loaded from its file, as a code
    location would)."""
    recon = ReconstructableJob.for_file(str(folder / file), job)
    run = instance.create_run_for_job(
        job_def=recon.get_definition(), job_code_origin=recon.get_python_origin()
    )
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return instance.get_run_by_id(run.run_id)


def launched_by_code_server(instance, folder: Path, job: str = "quick") -> None:
    """Dagster's own launch (the code server) needs a workspace, which these tests have not:
    its error shows the launcher chose it."""
    with pytest.raises(dg.DagsterInvariantViolationError, match="requires a workspace"):
        launch(instance, folder, job)


def ready_worker(instance) -> WarmProcess:
    """The waiting process, started if none is, once its imports are done."""
    worker = instance.run_launcher.prepare()
    deadline = time.monotonic() + 180  # a bound, not a timing assertion
    while not worker.ready():
        assert time.monotonic() < deadline, "the warm process never said it was ready"
        time.sleep(0.2)
    assert instance.run_launcher.prepare() is worker  # the same one, until a run takes it
    return worker


def next_worker(instance) -> WarmProcess:
    """The process the launcher started for the next run (by a run's end, or its length)."""
    deadline = time.monotonic() + 60  # a bound, not a timing assertion
    while (waiting := instance.run_launcher._next) is None:
        assert time.monotonic() < deadline, "no warm process was started for the next run"
        time.sleep(0.05)
    return waiting


def wait_for(instance, run_id: str, statuses, bound: float = 180) -> dg.DagsterRun:
    deadline = time.monotonic() + bound  # a bound, not a timing assertion
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run.status}")


def messages(instance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id)]


def ran_in(instance, run: dg.DagsterRun, worker: WarmProcess, ahead: bool) -> None:
    """``run`` was handed to ``worker``, started and succeeded in its process (its pid,
    whether or not it replaced itself), and found Asgard's definitions imported or not."""
    pid = worker.process.pid
    assert int(run.tags[WORKER_PID_TAG]) == pid
    done = wait_for(instance, run.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.SUCCESS
    assert started_in(instance, run.run_id) == pid
    assert f"pid {pid}, definitions imported ahead: {ahead}" in messages(instance, run.run_id)


def started_in(instance, run_id: str) -> int:
    (start,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    return start.dagster_event.pid


def test_a_launched_run_runs_in_the_worker_that_was_waiting(instance, tmp_path):
    # the first launch finds none waiting: the code server starts it, and one starts warming
    launched_by_code_server(instance, tmp_path)
    assert instance.run_launcher._next is not None
    first_worker = ready_worker(instance)
    first = launch(instance, tmp_path, "quick")
    assert int(first.tags[WORKER_PID_TAG]) == first_worker.process.pid
    done = wait_for(instance, first.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.SUCCESS
    assert started_in(instance, first.run_id) == first_worker.process.pid
    # its process was reaped once it ended (no zombie left until the next launch)
    deadline = time.monotonic() + 60
    while first_worker.process.returncode is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert first_worker.process.returncode == 0
    waiting = next_worker(instance)  # started once the first run's process ended
    assert waiting is not first_worker and waiting.process.poll() is None

    assert ready_worker(instance) is waiting
    # the run imported the job's code itself (the worker had the libraries and Asgard's
    # definitions, unchanged since)
    ran_in(instance, launch(instance, tmp_path, "quick"), waiting, ahead=True)

    # the launcher's end ends the worker still waiting
    nxt = next_worker(instance)
    instance.run_launcher.dispose()
    assert nxt.process.wait(timeout=120) == 0


def test_a_run_launched_while_the_next_worker_imports_goes_to_the_code_server(instance, tmp_path):
    """Simultaneous launches: one takes the waiting process, and no other imports beside its
    run; the next launch would wait for a new one's imports, slower than Dagster's own
    launch, which it gets instead, and one starts importing for the launch after."""
    ready_worker(instance)
    first = launch(instance, tmp_path, "sleepy")
    assert WORKER_PID_TAG in first.tags
    assert instance.run_launcher._next is None  # not beside the run (for QUIET_S)
    launched_by_code_server(instance, tmp_path)
    importing = instance.run_launcher._next
    assert importing is not None and not importing.ready()
    launched_by_code_server(instance, tmp_path)
    assert instance.run_launcher._next is importing  # kept for the launch after
    assert instance.run_launcher.terminate(first.run_id)
    assert wait_for(instance, first.run_id, FINISHED_STATUSES).status == (
        dg.DagsterRunStatus.CANCELED
    )


def test_a_long_run_has_the_next_worker_import_beside_it(instance, tmp_path, monkeypatch):
    """A run going on past QUIET_S: the next warm process starts while it runs, so one is
    ready when it ends."""
    monkeypatch.setattr(run_launcher, "QUIET_S", 1.0)
    ready_worker(instance)
    run = launch(instance, tmp_path, "sleepy")
    assert instance.run_launcher._next is None
    waiting = next_worker(instance)
    assert not instance.get_run_by_id(run.run_id).is_finished  # (it sleeps 600 s)
    assert waiting.process.pid != int(run.tags[WORKER_PID_TAG])
    assert instance.run_launcher.terminate(run.run_id)
    wait_for(instance, run.run_id, FINISHED_STATUSES)


def test_terminating_a_run_in_a_worker_cancels_it(instance, tmp_path):
    ready_worker(instance)
    run = launch(instance, tmp_path, "sleepy")
    wait_for(instance, run.run_id, [dg.DagsterRunStatus.STARTED])
    assert instance.run_launcher.terminate(run.run_id)
    done = wait_for(instance, run.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.CANCELED
    # and the run's process ends (it raised a timeout if it did not)
    psutil.Process(int(run.tags[WORKER_PID_TAG])).wait(timeout=60)


def test_a_worker_that_died_while_waiting_is_replaced(instance, tmp_path):
    dead = ready_worker(instance)
    dead.process.kill()
    dead.process.wait()
    launched_by_code_server(instance, tmp_path)
    replacement = ready_worker(instance)
    assert replacement is not dead
    run = launch(instance, tmp_path, "quick")
    assert int(run.tags[WORKER_PID_TAG]) == replacement.process.pid
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
        launched_by_code_server(instance, tmp_path)
        assert instance.run_launcher._next is None  # and no process warming


def test_a_run_whose_process_ended_before_or_during_it_is_failed_at_once(instance, tmp_path):
    """Its process gone before RUN_START (here: the job's code crashes it as it is imported;
    also the OOM killer) or during the run (kill -9): the launcher fails the run at once,
    instead of the start timeout (run monitoring asks only about started runs) or the next
    monitoring poll."""
    ready_worker(instance)
    run = launch(instance, tmp_path, "crashing", file="crashing.py")
    done = wait_for(instance, run.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    pid = run.tags[WORKER_PID_TAG]
    assert f"the run's process {pid} ended (exit code 3) before it started the run" in (
        failure.message
    )

    ready_worker(instance)
    run = launch(instance, tmp_path, "sleepy")
    wait_for(instance, run.run_id, [dg.DagsterRunStatus.STARTED])
    victim = psutil.Process(int(run.tags[WORKER_PID_TAG]))
    # its children outlive a kill -9 (Dagster's `tail -F` of the run's captured logs, as for
    # a run process of Dagster's own): ended here, so the test leaves no process behind
    children = victim.children(recursive=True)
    victim.kill()
    done = wait_for(instance, run.run_id, FINISHED_STATUSES)
    assert done.status == dg.DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "ended (exit code -9) during the run" in failure.message
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def test_a_run_in_a_process_that_is_gone_is_canceled_and_nothing_else_signalled(instance, tmp_path):
    """Terminate when the run's process is gone, its pid now another process's (started
    later): the run is canceled, the other process left alone."""
    recon = ReconstructableJob.for_file(str(tmp_path / "jobs.py"), "quick")
    run = instance.create_run_for_job(
        job_def=recon.get_definition(), job_code_origin=recon.get_python_origin()
    )
    other = subprocess.Popen(["sleep", "60"])
    started = psutil.Process(other.pid).create_time() - 1  # the run's, a second earlier
    try:
        instance.add_run_tags(
            run.run_id, {WORKER_PID_TAG: str(other.pid), WORKER_STARTED_TAG: str(started)}
        )
        run = instance.get_run_by_id(run.run_id)
        assert handed_to(run) is None
        assert instance.run_launcher.terminate(run.run_id)  # nothing to stop: canceled
        assert other.poll() is None  # not signalled
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
    finally:
        other.kill()
        other.wait()


def test_a_run_starts_in_a_new_process_when_the_source_days_changed(home, instance, tmp_path):
    """The waiting process imported the definitions ahead; a day added to the demo
    database since (`asgard add-day`) makes their partitions stale: the run is started by a
    new `dagster api execute_run` process (exec: the same pid), which loads them again."""
    from asgard_assets import demo_data
    from asgard_assets.settings import demo_source_path

    demo_data.ensure_sqlite(demo_source_path())
    ready_worker(instance)
    first = launch(instance, tmp_path, "quick")
    waiting = ready_worker(instance)  # imported the definitions with the database's days
    assert wait_for(instance, first.run_id, FINISHED_STATUSES).status == (
        dg.DagsterRunStatus.SUCCESS
    )
    pid = int(first.tags[WORKER_PID_TAG])
    assert f"pid {pid}, definitions imported ahead: True" in messages(instance, first.run_id)

    demo_data.add_day(demo_source_path())
    ran_in(instance, launch(instance, tmp_path, "quick"), waiting, ahead=False)


def test_a_run_starts_in_a_new_process_when_dotenv_changed(instance, tmp_path, monkeypatch):
    """`.env` in the working directory, which a new run process loads before the
    definitions, written after the waiting process imported them: it replaces itself. (The
    package's files are watched the same way: files_state, below.)"""
    monkeypatch.chdir(tmp_path)  # the launcher's, and so its processes' working directory
    waiting = ready_worker(instance)
    (tmp_path / ".env").write_text("ASGARD_TRIAL_SETTING=1\n")
    ran_in(instance, launch(instance, tmp_path, "quick"), waiting, ahead=False)


def test_files_state_changes_with_any_file_but_skipped_ones(tmp_path):
    from asgard_assets.file_state import files_state

    (tmp_path / "models").mkdir()
    (tmp_path / "target").mkdir()
    model = tmp_path / "models" / "a.sql"
    model.write_text("select 1")
    before = files_state(tmp_path, skip=(tmp_path / "target",))
    assert list(before) == ["models/a.sql"]
    for ignored in ("target/manifest.json", ".user.yml", "models/a.cpython-311.pyc"):
        (tmp_path / ignored).write_text("x")
    assert files_state(tmp_path, skip=(tmp_path / "target",)) == before
    model.write_text("select 2")  # same size: its mtime tells
    os.utime(model, ns=(before["models/a.sql"][1] + 10**9,) * 2)
    assert files_state(tmp_path, skip=(tmp_path / "target",)) != before
    model.rename(model.with_name("b.sql"))
    assert list(files_state(tmp_path, skip=(tmp_path / "target",))) == ["models/b.sql"]


def test_definitions_imported_while_the_source_was_down_are_not_used(home, monkeypatch):
    """Their first day was a stand-in (the source could not be read): a run gets a new
    process, which reads the source's first day again."""
    import asgard_assets.definitions  # noqa: F401 - as the waiting process has
    from asgard_assets import days
    from asgard_assets.orchestration import warm_worker

    state = warm_worker.code_state()
    monkeypatch.setattr(days, "STAND_INS", [])
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://asgard@127.0.0.1:1/x")
    days.partition_bounds()  # down: the stand-in first day, with a warning
    assert days.STAND_INS == [f"{days.DEMO_START:%Y-%m-%d}"]
    assert warm_worker.changed_since(state) == (
        "the source could not be read when this process imported the definitions"
    )


def test_code_that_could_not_be_listed_at_start_means_a_new_process():
    from asgard_assets.orchestration import warm_worker

    assert warm_worker.changed_since(None) == (
        "the code could not be listed when this process started"
    )


@pytest.mark.parametrize("tracking_store", [False, True])
def test_everything_a_warm_process_prepares_is_there(tmp_path, tracking_store):
    """A name in PRELOAD that no longer imports (a library moved a module), an MLflow
    whose cache is gone or a dbt command that fails would only print a warning in each warm
    process and quietly cost every run its time again: here they fail. dbt's ``ls`` ran in
    the process (its task imported) and left nothing in the project or the home; a home
    without a tracking store gets none, one with it has its stores opened, and the
    environment is as it was (MLflow exports the URI it is given: a process that replaces
    itself would pass it on)."""
    code = textwrap.dedent(
        """
        import importlib, os, sys
        from asgard_assets.orchestration.warm_worker import PRELOAD, fill_caches
        for name in PRELOAD:
            importlib.import_module(name)
        assert "dbt.task.list" not in sys.modules
        if sys.argv[1] == "True":  # a home that has trained: its tracking store exists
            from mlflow import MlflowClient
            from asgard_assets.settings import asgard_home, embedded_mlflow_uri
            (asgard_home() / "mlflow").mkdir(parents=True)
            MlflowClient(embedded_mlflow_uri()).search_experiments()
        environment = dict(os.environ)
        fill_caches()
        assert dict(os.environ) == environment
        from mlflow.utils import requirements_utils
        assert "sklearn" in requirements_utils._MODULES_TO_PACKAGES
        assert "dbt.task.list" in sys.modules
        from asgard_assets.orchestration import dagster_instance
        assert dagster_instance._template is not None  # Dagster's init of a run's file
        print("prepared", len(PRELOAD))
        """
    )
    home = tmp_path / "home"
    (tmp_path / "dagster").mkdir()
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster")
    target = ROOT / "dbt_project" / "target"
    before = sorted(p.name for p in target.iterdir())
    done = subprocess.run(
        [sys.executable, "-c", code, str(tracking_store)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            # an MLflow URI another test set (MLflow's set_tracking_uri exports it) is not
            # this home's
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "ASGARD_HOME": str(home),
            "DAGSTER_HOME": str(tmp_path / "dagster"),
            "TMPDIR": str(tmp_path),
        },
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"prepared {len(PRELOAD)}"
    assert sorted(p.name for p in target.iterdir()) == before
    assert not (home / "dbt").exists()
    assert (home / "mlflow").exists() == tracking_store  # none made ahead in a new home
    assert not list(tmp_path.glob("asgard-dbt-ls-*"))  # its scratch target removed


@pytest.mark.parametrize("disposed", [True, False])
def test_a_run_ending_after_the_launcher_s_instance_is_gone_is_left_to_run_monitoring(disposed):
    """The daemon stopping while a handed-over run goes on: when that run's process ends,
    its watcher reads no instance (one garbage-collected raised in the watcher's thread)."""
    launcher = LocalRunLauncher()  # no instance, as one collected with its daemon
    if disposed:
        launcher.dispose()
    process = subprocess.Popen(["true"])
    launcher._watch(process, "a-run")
    assert process.returncode == 0


def test_a_disposed_launcher_starts_no_warm_process():
    """A launch racing the daemon's shutdown would start a process nobody ends."""
    launcher = LocalRunLauncher()
    launcher.dispose()
    assert launcher.prepare() is None
    assert launcher._take_worker() is None
    assert launcher._next is None

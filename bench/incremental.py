"""One new day of source rows, end to end, against the cold journey measured in the same run.

Builds a home with `asgard demo` on a private copy of the demo database (the cold
baseline), then adds one day of work orders and machine logs to the source (as `asgard
add-day` does: its last day again, one day later) and times what the automation does for
it, step by step: the `new_source_rows` sensor's tick and its ingest run (that day only,
into bronze and on into silver), the automation's evaluation and the gold run it requests,
then `train_and_deploy` only if gold's snapshot changed. Then a second day, the same way.

The first day's runs execute in this process (``dg.materialize``), which has loaded the
definitions before the timing starts, imports on the day's steps what they first use, and
keeps its storages, catalog and resources from one run to the next. The second day's runs
are launched through the instance's run launcher into warm processes (``warm_worker.py``),
timed from the run's creation to its end. That is a best case of the daemon's way: the
bench waits, untimed, until the warm process is ready before each launch, and skips the
daemon's queue (0.5-4.5 s a run, ``bench/launch.py``); the daemon's ticks come from three
sensors and may follow a run sooner than a warm process imports (the run then goes to the
code server, Dagster's way). It also times, apart, what a warm process does before a run is
handed to it (the libraries imported, the instance opened, a `dbt ls`, MLflow's caches).

    .venv/bin/python bench/incremental.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from journey import ROOT, remove, run_demo, settle

# two days after the demo data ends: one run in this process, one in warm processes
LAST_DAY = "2025-07-02"
# what a warm run process has done before a run is handed to it (warm_worker.py): the
# libraries the steps use imported, its caches filled (fill_caches); measured once
# the definitions are loaded, as a run's process has them before its steps
AHEAD = (
    "import time, importlib, asgard_assets.definitions\n"
    "from asgard_assets.orchestration.warm_worker import PRELOAD, fill_caches\n"
    "t = time.perf_counter()\n"
    "for name in PRELOAD:\n"
    "    importlib.import_module(name)\n"
    "fill_caches()\n"
    "print(time.perf_counter() - t)"
)


def ahead_floor(env: dict[str, str], repeat: int = 3) -> float:
    """Best of ``repeat`` fresh interpreters: the time to do what a warm process does ahead
    (AHEAD). A run of the day in a process of its own pays it."""
    return min(
        float(
            subprocess.run(
                [sys.executable, "-c", AHEAD], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(repeat)
    )


class InProcess:
    """The day's runs in this process, as ``dg.materialize`` runs them."""

    label = "in this process"

    def __init__(self, instance, defs) -> None:
        self.instance, self.defs = instance, defs

    def run(self, keys, partition_key=None, tags=None) -> float:
        import dagster as dg

        t = time.perf_counter()
        result = dg.materialize(
            [*self.defs.assets, *self.defs.asset_checks],
            resources=self.defs.resources,
            instance=self.instance,
            selection=list(keys),
            partition_key=partition_key,
            tags=tags,
        )
        assert result.success
        return time.perf_counter() - t

    def close(self) -> None:
        pass


class Warm:
    """The day's runs as the daemon launches them: each through the instance's run launcher
    (dagster.yaml's) into the warm process waiting for it, and waited for. Before each
    launch the bench waits, untimed, until that process is ready (``prepared`` holds those
    waits): a best case, see the module's docstring."""

    label = "warm processes"

    def __init__(self, instance, defs) -> None:
        from dagster._core.definitions.reconstruct import ReconstructableRepository

        self.instance = instance
        repository = ReconstructableRepository.for_module(
            "asgard_assets.definitions", "defs", working_directory=str(ROOT)
        )
        self.job = repository.get_reconstructable_job("__ASSET_JOB")
        self.prepared: list[float] = []

    def ready(self):
        """The warm process waiting for the next run, once its imports are done."""
        deadline = time.perf_counter() + 300
        while True:
            worker = self.instance.run_launcher.prepare()  # starts one again if it died
            if worker is None:
                raise SystemExit("no warm process: is warm_worker off in dagster.yaml?")
            if worker.ready():
                return worker
            if time.perf_counter() > deadline:
                raise SystemExit("the warm process was not ready within 300 s")
            time.sleep(0.05)

    def run(self, keys, partition_key=None, tags=None) -> float:
        import dagster as dg
        from dagster._core.launcher.base import LaunchRunContext
        from dagster._core.storage.dagster_run import FINISHED_STATUSES

        from asgard_assets.orchestration.run_launcher import WORKER_PID_TAG

        t = time.perf_counter()
        self.ready()
        self.prepared.append(time.perf_counter() - t)
        # timed from the run's creation (its plan, its planned events), as dg.materialize is
        t = time.perf_counter()
        keys = frozenset(keys)
        subset = self.job.get_subset(asset_selection=keys)
        run = self.instance.create_run_for_job(
            job_def=subset.get_definition(),
            asset_selection=keys,
            tags={
                **(tags or {}),
                **({"dagster/partition": partition_key} if partition_key else {}),
            },
            job_code_origin=subset.get_python_origin(),
        )
        self.instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        if not self.instance.get_run_by_id(run.run_id).tags.get(WORKER_PID_TAG):
            raise SystemExit(f"run {run.run_id} was not handed to a warm process")
        give_up = t + 600
        while (done := self.instance.get_run_by_id(run.run_id)).status not in FINISHED_STATUSES:
            if time.perf_counter() > give_up:
                self.instance.run_launcher.terminate(run.run_id)
                raise SystemExit(f"run {run.run_id} did not finish within 600 s")
            time.sleep(0.02)
        if done.status != dg.DagsterRunStatus.SUCCESS:
            raise SystemExit(f"run {run.run_id} ended {done.status}")
        return time.perf_counter() - t

    def close(self) -> None:
        """Wait for the process started for a next run to end (dispose closes its stdin; it
        ends once its imports are done, cleaning up as it exits): it would import beside
        what follows."""
        launcher = self.instance.run_launcher
        waiting = launcher.prepare()
        launcher.dispose()
        if waiting is not None:
            try:
                waiting.process.wait(timeout=300)
            except subprocess.TimeoutExpired:
                waiting.process.kill()
                waiting.process.wait()


def one_day(instance, defs, source: Path, runner) -> tuple[dict, list[tuple[str, float]]]:
    """Add a day to the source and time what the automation does for it, run by ``runner``."""
    import dagster as dg

    from asgard_assets import demo_data
    from asgard_assets.contracts.sources import PARTITIONED_TABLES
    from asgard_assets.orchestration.sensors import new_source_rows
    from asgard_assets.resources import resource

    steps: list[tuple[str, float]] = []

    def timed(label: str, fn):
        t = time.perf_counter()
        out = fn()
        steps.append((label, time.perf_counter() - t))
        return out

    def ran(label: str, fn) -> None:  # a run: the runner times it
        steps.append((label, fn()))

    gold = dg.AssetKey(["gold", "operator_features"])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    gold_before = resource("lakehouse").snapshot_id("gold.operator_features")
    day, added = demo_data.add_day(source)  # what `asgard add-day` adds

    def sensor_tick():
        context = dg.build_sensor_context(
            instance=instance, resources=defs.resources, definitions=defs
        )
        return new_source_rows.evaluate_tick(context).run_requests

    requests = timed("sensor new_source_rows (tick)", sensor_tick)
    for req in requests:
        assert req.partition_key == day, req  # one run for the new day: bronze, then silver
        tables = sorted({k.path[-1] for k in req.asset_selection}, key=PARTITIONED_TABLES.index)
        ran(
            f"ingest {','.join(tables)}: bronze, silver [day]",
            lambda req=req: runner.run(req.asset_selection, req.partition_key, req.tags),
        )
    auto = timed(
        "automation (evaluation)",
        lambda: dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline),
    )
    # the sensor's run took the day through silver: no silver partition asked for again
    silver = [dg.AssetKey(["silver", t]) for t in PARTITIONED_TABLES]
    assert not any(auto.get_requested_partitions(key) for key in silver), "silver again"
    if auto.get_requested_partitions(gold):
        ran("gold/operator_features (dbt)", lambda: runner.run([gold]))
    if resource("lakehouse").snapshot_id("gold.operator_features") != gold_before:
        selection = dg.AssetSelection.groups("features", "models", "deployments")
        keys = selection.resolve(defs.resolve_asset_graph())
        ran("train_and_deploy (gold changed)", lambda: runner.run(keys))
    return {"day": day, **added}, steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the bench's ASGARD_HOME")
    keep = parser.parse_args().keep
    base = Path(tempfile.mkdtemp(prefix="asgard-incremental-"))
    home, source = base / "asgard", base / "source.sqlite"
    from asgard_assets import demo_data

    demo_data.ensure_sqlite(source)
    env = {
        "ASGARD_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ASGARD_SOURCE_URL": f"sqlite:///{source}",
        # partitions to the two new days, not to yesterday: the cold run covers the demo's
        # 181 days (+2 empty), as `make demo` does (+1), so the baseline is not inflated
        "ASGARD_PARTITION_END": LAST_DAY,
    }
    cold, _ = run_demo({**os.environ, **env})
    settle(home / "dagster")
    os.environ.update(env)

    import dagster as dg

    from asgard_assets.contracts.model import MODEL_NAME
    from asgard_assets.definitions import defs
    from asgard_assets.resources.deployer import LocalDeployer

    days = []
    try:
        with dg.DagsterInstance.get() as instance:
            for runner in (InProcess(instance, defs), Warm(instance, defs)):
                try:
                    days.append((runner, *one_day(instance, defs, source, runner)))
                finally:
                    runner.close()
    finally:
        LocalDeployer().stop(MODEL_NAME)
    floor = ahead_floor({**os.environ, **env})
    if not keep:
        remove(base)
    (_, first, steps), (warm, second, warm_steps) = days
    assert [label for label, _ in steps] == [label for label, _ in warm_steps]
    rows = {k: v for k, v in first.items() if k != "day"}
    print(f"new days {first['day']} and {second['day']}, rows added to the source each: {rows}")
    print(f"{'step':<56}{'in this process':>17}{'warm processes':>16}")
    for (label, secs), (_, warm_secs) in zip(steps, warm_steps, strict=True):
        print(f"{label:<56}{secs:>17.2f}{warm_secs:>16.2f}")
    total, warm_total = sum(s for _, s in steps), sum(s for _, s in warm_steps)
    print(f"{'one new day, all steps':<56}{total:>17.2f}{warm_total:>16.2f}")
    print(f"{'cold journey (asgard demo)':<56}{cold:>17.2f}")
    print(
        f"one new day / cold journey: {total / cold:.2f} in this process, "
        f"{warm_total / cold:.2f} in warm processes (a best case of the daemon's way)   "
        "(target <= 0.3)"
    )
    print(
        "waits, not counted, for the next warm process to be ready before each launch "
        f"(a best case: the daemon's ticks may come sooner): "
        f"{', '.join(f'{w:.1f}' for w in warm.prepared)} s; the daemon's queue is skipped"
    )
    print(
        "of the day in this process, what a warm run process has done before its run "
        f"(warm_worker.py: imports, fill_caches): {floor:.2f} s (best of 3, apart)"
    )


if __name__ == "__main__":
    main()

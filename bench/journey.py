"""Wall time of the README's demo journey (`asgard demo`) from an empty ASGARD_HOME, with
each step's time from Dagster's own step events; then the same command again on the
now-built home (nothing changed upstream: it must start no run), and `asgard demo --force`
(a run whose every step finds on its own that there is nothing to do).

The floor is one process importing what the journey needs (dagster, dagster-dbt, dbt,
feast, mlflow, scikit-learn, pyiceberg, duckdb), measured in the same run: the cold journey
is compared with it (target <= 2.5x), the unchanged re-run with the cold one (<= 0.15x).
Asgard imports Feast without typeguard's instrumentation, most of a plain `import feast`:
the floor is also measured that way, and the cold journey compared with it too.

    .venv/bin/python bench/journey.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(env: dict, *args: str) -> tuple[float, str]:
    """Wall time and output of ``asgard demo *args``."""
    t = time.perf_counter()
    out = subprocess.run(
        [str(Path(sys.executable).with_name("asgard")), "demo", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"asgard demo failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return elapsed, out.stdout


def run_count(dagster_home: Path) -> int:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return len(instance.get_runs())


FLOOR_IMPORTS = (
    "import dagster, dagster_dbt, dbt.cli.main, feast, mlflow, sklearn.ensemble, "
    "pyiceberg.catalog, duckdb"
)
# the same, with Feast imported as Asgard imports it: without typeguard instrumenting Feast's
# classes (asgard_assets/features/feast_import.py), which is most of `import feast`
FLOOR_IMPORTS_AS_ASGARD = FLOOR_IMPORTS.replace(" feast,", " asgard_assets.features.feast_import,")


def import_floor(imports: str = FLOOR_IMPORTS, repeat: int = 3) -> float:
    """Best of ``repeat`` fresh interpreters importing the journey's libraries."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", imports], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def settle(dagster_home: Path) -> None:
    """Wait until the latest run's end is stored: `asgard demo` returns once Dagster has
    logged it, without waiting for the Dagster process's exit."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        while not instance.get_runs(limit=1)[0].is_finished:
            time.sleep(0.1)


def step_windows(dagster_home: Path) -> list[tuple[str, float, float]]:
    """(step, start, end) timestamps of the latest run, from STEP_START / STEP_SUCCESS."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        starts, windows = {}, []
        for entry in instance.all_logs(run.run_id):
            kind = entry.dagster_event_type
            if kind == DagsterEventType.STEP_START:
                starts[entry.step_key] = entry.timestamp
            elif kind == DagsterEventType.STEP_SUCCESS and entry.step_key in starts:
                windows.append((entry.step_key, starts[entry.step_key], entry.timestamp))
        return windows


def phases(dagster_home: Path, started: float, wall: float) -> dict[str, float]:
    """Where a journey's wall time went, from the run's own event timestamps: before the run
    starts (process start, imports, definitions, dbt manifest, run creation), inside steps
    (check steps too), between steps (Dagster's bookkeeping), after the run (summary, exit)."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        kinds = {DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS}
        at = {
            e.dagster_event_type: e.timestamp for e in instance.all_logs(run.run_id, of_type=kinds)
        }
    in_steps = sum(end - start for _, start, end in step_windows(dagster_home))
    run_time = at[DagsterEventType.RUN_SUCCESS] - at[DagsterEventType.RUN_START]
    before = at[DagsterEventType.RUN_START] - started
    return {
        "before the run (process, imports, definitions, run creation)": before,
        "inside steps": in_steps,
        "between steps (Dagster's bookkeeping)": run_time - in_steps,
        "after the run (summary, exit)": wall - before - run_time,
    }


def step_times(dagster_home: Path) -> list[tuple[str, float]]:
    """(step, seconds) of the latest run, longest first."""
    times = [(k, end - start) for k, start, end in step_windows(dagster_home)]
    return sorted(times, key=lambda x: -x[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the bench's ASGARD_HOME")
    keep = parser.parse_args().keep
    home = Path(tempfile.mkdtemp(prefix="asgard-journey-")) / "asgard"
    env = {**os.environ, "ASGARD_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("ASGARD_SOURCE_URL", None)
    dagster_home = home / "dagster"
    floor = import_floor()
    floor_as_asgard = import_floor(FLOOR_IMPORTS_AS_ASGARD)
    try:
        started = time.time()  # wall clock: the run's own events are placed against it
        cold, _ = run_demo(env)
        settle(dagster_home)
        steps = step_times(dagster_home)
        cold_phases = phases(dagster_home, started, cold)
        runs = run_count(dagster_home)
        again, said = run_demo(env)
        if "Nothing to run" not in said or run_count(dagster_home) != runs:
            raise SystemExit(f"the unchanged re-run ran:\n{said[-3000:]}")
        started = time.time()
        forced, _ = run_demo(env, "--force")
        settle(dagster_home)
        forced_steps = dict(step_times(dagster_home))
        forced_phases = phases(dagster_home, started, forced)
    finally:
        os.environ["ASGARD_HOME"] = str(home)
        from asgard_assets.contracts.model import MODEL_NAME
        from asgard_assets.resources.deployer import LocalDeployer

        LocalDeployer().stop(MODEL_NAME)
    print(f"{'step':<58}{'cold s':>8}{'--force s':>10}")
    for key, secs in steps:
        if secs >= 0.05:
            print(f"{key:<58}{secs:>8.2f}{forced_steps.get(key, 0):>10.2f}")
    in_steps = sum(s for _, s in steps)
    print(f"{'sum of steps':<58}{in_steps:>8.1f}{sum(forced_steps.values()):>10.1f}")
    print(f"{'wall time of `asgard demo`':<58}{cold:>8.1f}{forced:>10.1f}")
    for phase, secs in cold_phases.items():
        print(f"{phase:<58}{secs:>8.1f}{forced_phases[phase]:>10.1f}")
    print(f"import floor (one process, best of 3): {floor:.1f} s")
    print(f"cold / floor: {cold / floor:.2f}   (target <= 2.5)")
    print(
        f"import floor with Feast imported as Asgard imports it (no typeguard): "
        f"{floor_as_asgard:.1f} s; cold / that floor: {cold / floor_as_asgard:.2f}"
    )
    print(
        f"unchanged re-run: {again:.2f} s, no run started (the last run's stamp matched); "
        f"/ cold: {again / cold:.3f}   (target <= 0.15)"
    )
    print(
        f"every step again, each finding nothing to do (--force): {forced:.1f} s; "
        f"/ cold: {forced / cold:.2f}"
    )
    if not keep:  # kept after a failure: its event logs say why
        remove(home.parent)


def remove(folder: Path) -> None:
    """Remove ``folder``; the last run's dagster process may still be writing its way out."""
    for _ in range(3):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(2)


if __name__ == "__main__":
    main()

"""Wall time of the README's demo journey (`asgard demo`) from an empty ASGARD_HOME, with
each step's time from Dagster's own step events; then the same command again on the
now-built home (nothing changed upstream), as the in-run baseline for "no repeated work".

    .venv/bin/python bench/journey.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(env: dict) -> float:
    t = time.perf_counter()
    out = subprocess.run(
        [str(Path(sys.executable).with_name("asgard")), "demo"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"asgard demo failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return elapsed


def step_times(dagster_home: Path) -> list[tuple[str, float]]:
    """(step, seconds) of the latest run, from STEP_START / STEP_SUCCESS events."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter

    with DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        starts, times = {}, []
        for kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
            for rec in instance.get_event_records(EventRecordsFilter(event_type=kind), limit=1000):
                e = rec.event_log_entry
                if e.run_id != run.run_id:
                    continue
                if kind == DagsterEventType.STEP_START:
                    starts[e.step_key] = e.timestamp
                elif e.step_key in starts:
                    times.append((e.step_key, e.timestamp - starts[e.step_key]))
        return sorted(times, key=lambda x: -x[1])


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="asgard-journey-")) / "asgard"
    env = {**os.environ, "ASGARD_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("ASGARD_SOURCE_URL", None)
    try:
        cold = run_demo(env)
        steps = step_times(home / "dagster")
        warm = run_demo(env)
        warm_steps = dict(step_times(home / "dagster"))
    finally:
        os.environ["ASGARD_HOME"] = str(home)
        from asgard_assets.models.training import MODEL_NAME
        from asgard_assets.resources.deployer import LocalDeployer

        LocalDeployer().stop(MODEL_NAME)
    print(f"{'step':<58}{'cold s':>8}{'again s':>9}")
    for key, secs in steps:
        if secs >= 0.05:
            print(f"{key:<58}{secs:>8.2f}{warm_steps.get(key, 0):>9.2f}")
    in_steps = sum(s for _, s in steps)
    print(f"{'sum of steps':<58}{in_steps:>8.1f}{sum(warm_steps.values()):>9.1f}")
    print(
        f"{'wall time of `asgard demo` (imports, dbt parse, process start)':<58}{cold:>8.1f}{warm:>9.1f}"
    )
    print(f"second run / first run: {warm / cold:.2f}   (target: first run <= 60 s on 2 cores)")


if __name__ == "__main__":
    main()

"""One new day of source rows, end to end, against the cold journey measured in the same run.

Builds a home with `asgard demo` on a private copy of the demo database (the cold
baseline), then adds one day of work orders and machine logs to the source (as `asgard
add-day` does: its last day again, one day later) and times what the automation does for
it, step by step, as the daemon would: the `new_source_rows`
sensor's tick and its ingest run (that day only), the automation's evaluation and the
silver partitions + gold it requests, then `train_and_deploy` only if gold's snapshot
changed. Runs execute in this process (a daemon would start a process per run on top).
It also times, apart, what no process running the day can skip: importing the libraries
its steps first use (dbt's runner, Feast, MLflow, scikit-learn, the ONNX converter and
runtime) once the definitions are loaded: what the day's runs do not pay when the daemon
hands them to warm processes (``warm_worker`` in dagster.yaml), which start each run in ~0.25 s
(``bench/launch.py``).

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

from journey import remove, run_demo, settle

NEW_DAY = "2025-07-01"  # the day after the demo data ends
# what the day's steps import on first use, in a process that has loaded the definitions
# (as this one has before the timing starts, and as a run's process has before its steps)
DAY_IMPORTS = (
    "import dbt.cli.main, asgard_assets.features.feast_import, mlflow, sklearn.ensemble, "
    "skl2onnx, onnxruntime"
)


def day_import_floor(env: dict[str, str], repeat: int = 3) -> float:
    """Best of ``repeat`` fresh interpreters: the time to import DAY_IMPORTS once the
    definitions are loaded (untimed). No run of the day can pay less in a new process."""
    code = (
        "import time, asgard_assets.definitions\n"
        f"t = time.perf_counter()\n{DAY_IMPORTS}\nprint(time.perf_counter() - t)"
    )
    return min(
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(repeat)
    )


def timed(label: str, steps: list, fn):
    t = time.perf_counter()
    out = fn()
    steps.append((label, time.perf_counter() - t))
    return out


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
        # partitions to the new day, not to yesterday: the cold run covers the demo's 181
        # days (+1 empty), as `make demo` does, so the baseline is not inflated
        "ASGARD_PARTITION_END": NEW_DAY,
    }
    cold, _ = run_demo({**os.environ, **env})
    settle(home / "dagster")
    os.environ.update(env)

    import dagster as dg

    from asgard_assets.contracts.model import MODEL_NAME
    from asgard_assets.contracts.sources import PARTITIONED_TABLES
    from asgard_assets.definitions import defs
    from asgard_assets.orchestration.sensors import new_source_rows
    from asgard_assets.resources import resource
    from asgard_assets.resources.deployer import LocalDeployer

    steps: list[tuple[str, float]] = []
    everything = [*defs.assets, *defs.asset_checks]
    resources = defs.resources
    gold = dg.AssetKey(["gold", "operator_features"])
    try:
        with dg.DagsterInstance.get() as instance:
            baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
            gold_before = resource("lakehouse").snapshot_id("gold.operator_features")
            day, added = demo_data.add_day(source)  # what `asgard add-day` adds
            assert day == NEW_DAY, day

            def sensor_tick():
                context = dg.build_sensor_context(
                    instance=instance, resources=resources, definitions=defs
                )
                return new_source_rows.evaluate_tick(context).run_requests

            requests = timed("sensor new_source_rows (tick)", steps, sensor_tick)
            for req in requests:
                label = f"ingest {','.join(k.path[-1] for k in req.asset_selection)}"
                label += f" [{req.partition_key or 'range'}]"
                timed(
                    label,
                    steps,
                    lambda req=req: dg.materialize(
                        everything,
                        resources=resources,
                        instance=instance,
                        selection=req.asset_selection,
                        partition_key=req.partition_key,
                        tags=req.tags,
                    ),
                )
            auto = timed(
                "automation (evaluation)",
                steps,
                lambda: dg.evaluate_automation_conditions(
                    defs=defs, instance=instance, cursor=baseline
                ),
            )
            # the requested silver partitions, one run per day for the assets of that day,
            # as the automation's run requests group them (same partitions, same key)
            by_day: dict[str, list[dg.AssetKey]] = {}
            for key in (dg.AssetKey(["silver", t]) for t in PARTITIONED_TABLES):
                for day in auto.get_requested_partitions(key):
                    if day:
                        by_day.setdefault(day, []).append(key)
            for day, keys in sorted(by_day.items()):
                timed(
                    f"{','.join(k.to_user_string() for k in keys)} [{day}]",
                    steps,
                    lambda keys=keys, day=day: dg.materialize(
                        everything,
                        resources=resources,
                        instance=instance,
                        selection=keys,
                        partition_key=day,
                    ),
                )
            # the next tick sees silver updated: gold is requested
            auto = timed(
                "automation (next tick)",
                steps,
                lambda: dg.evaluate_automation_conditions(
                    defs=defs, instance=instance, cursor=auto.cursor
                ),
            )
            if auto.get_requested_partitions(gold):
                timed(
                    "gold/operator_features (dbt)",
                    steps,
                    lambda: dg.materialize(
                        everything, resources=resources, instance=instance, selection=[gold]
                    ),
                )
            gold_after = resource("lakehouse").snapshot_id("gold.operator_features")
            if gold_after != gold_before:
                selection = dg.AssetSelection.groups("features", "models", "deployments")
                timed(
                    "train_and_deploy (gold changed)",
                    steps,
                    lambda: dg.materialize(
                        everything,
                        resources=resources,
                        instance=instance,
                        selection=selection,
                    ),
                )
    finally:
        LocalDeployer().stop(MODEL_NAME)
    floor = day_import_floor({**os.environ, **env})
    if not keep:
        remove(base)
    total = sum(s for _, s in steps)
    print(f"new day {NEW_DAY}: {added} rows added to the source")
    print(f"{'step':<52}{'s':>8}")
    for label, secs in steps:
        print(f"{label:<52}{secs:>8.2f}")
    print(f"{'one new day, all steps':<52}{total:>8.2f}")
    print(f"{'cold journey (asgard demo)':<52}{cold:>8.2f}")
    print(f"one new day / cold journey: {total / cold:.2f}   (target <= 0.3)")
    print(
        f"of the day, importing what its steps first use ({DAY_IMPORTS[7:]}; Feast as Asgard "
        "imports it) in a process "
        f"that has the definitions: {floor:.2f} s (best of 3, apart); the day above that: "
        f"{(total - floor) / cold:.2f}x cold (the daemon's warm run processes have these "
        "imports already; each of its runs adds ~0.25 s from launch to start: bench/launch.py)"
    )


if __name__ == "__main__":
    main()

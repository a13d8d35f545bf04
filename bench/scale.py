"""The journey at 1x, 10x, 100x (and 1,000x) the demo data: wall time and peak RSS per step.

The source is PostgreSQL. Scale N holds N replicas of the seeded demo database (45,823
rows each): replica 0 is the demo data itself, replica r>0 the same rows with ids suffixed
``-r<r>`` and times moved by a seeded, deterministic offset within the same day, so every
day, operator and label keeps its share while the volume grows N-fold. It is generated
inside Postgres (INSERT ... SELECT over generate_series), never through Python rows.

For each scale, `asgard demo` runs on a fresh ASGARD_HOME; the process tree's RSS is
sampled every 0.1 s and each step's peak is the highest sample within the step's start and
end (Dagster's step events; the journey runs its steps in one process).

    .venv/bin/python bench/scale.py                   # 1, 10, 100
    .venv/bin/python bench/scale.py --scales 1,10,100,1000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import sqlalchemy as sa
from journey import ROOT, step_windows

DEFAULT_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
SEED = 42

# per table: the id column and the timestamp columns a replica shifts
SHIFTS = {
    "production.work_orders": ("work_order_id", ["start_time", "end_time", "updated_at"]),
    "production.machine_logs": ("log_id", ["event_time", "updated_at"]),
    "production.quality_checks": ("check_id", ["check_time", "updated_at"]),
    "inventory.materials": ("material_id", ["updated_at"]),
}


def build_source(admin: str, scale: int) -> str:
    """A database holding ``scale`` replicas of the demo data; returns its URL."""
    from asgard_assets import demo_data

    db = f"asgard_scale_{scale}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    engine.dispose()
    url = sa.engine.make_url(admin).set(database=db).render_as_string(hide_password=False)
    demo_data.load(url, seed=SEED)
    if scale > 1:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for table, (key, times) in SHIFTS.items():
                cols = [
                    r[0]
                    for r in conn.execute(
                        sa.text(
                            "SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema || '.' || table_name = :t ORDER BY ordinal_position"
                        ),
                        {"t": table},
                    )
                ]
                # a seeded offset of up to +-30 min per row and replica, the same each run
                offset = (
                    f"((hashtext({key} || '/' || r || '/{SEED}') % 1800) * interval '1 second')"
                )
                exprs = [
                    f"{key} || '-r' || r" if c == key else (f"{c} + {offset}" if c in times else c)
                    for c in cols
                ]
                conn.execute(
                    sa.text(
                        f"INSERT INTO {table} ({', '.join(cols)}) "
                        f"SELECT {', '.join(exprs)} FROM {table} "
                        f"CROSS JOIN generate_series(1, {scale - 1}) AS r"
                    )
                )
                conn.execute(sa.text(f"ANALYZE {table}"))
        engine.dispose()
    return url


class RssSampler(threading.Thread):
    """Samples the RSS of a process and its children (the journey's process tree)."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.proc, self.every, self.samples = psutil.Process(pid), every, []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                self.samples.append((time.time(), rss))
            except psutil.Error:
                pass
            time.sleep(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((r for t, r in self.samples if start <= t <= end), default=0)


def run_scale(admin: str, scale: int) -> tuple[float, int, list[tuple[str, float, int]]]:
    url = build_source(admin, scale)
    home = Path(tempfile.mkdtemp(prefix=f"asgard-scale-{scale}-")) / "asgard"
    env = {
        **os.environ,
        "ASGARD_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ASGARD_SOURCE_URL": url,
        # the demo's days, as `make demo` (a real source's partitions run to yesterday)
        "ASGARD_PARTITION_END": "2025-06-30",
    }
    t = time.perf_counter()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("asgard")), "demo"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = RssSampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    sampler.stop()
    wall = time.perf_counter() - t
    try:
        if proc.returncode != 0:
            raise SystemExit(f"asgard demo at {scale}x failed:\n{out[-4000:]}")
        steps = [
            (key, end - start, sampler.peak(start, end))
            for key, start, end in step_windows(home / "dagster")
        ]
    finally:
        os.environ["ASGARD_HOME"] = str(home)
        from asgard_assets.contracts.model import MODEL_NAME
        from asgard_assets.resources.deployer import LocalDeployer

        LocalDeployer().stop(MODEL_NAME)
    return wall, sampler.peak(), steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", default="1,10,100")
    parser.add_argument("--admin", default=os.environ.get("ASGARD_TEST_PG", DEFAULT_ADMIN))
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    results = {s: run_scale(args.admin, s) for s in scales}

    mib = 1024 * 1024
    print(f"{'scale':>6}{'source rows':>14}{'wall s':>9}{'peak RSS MiB':>14}{'x of 1x wall':>14}")
    base = results[scales[0]][0]
    for s, (wall, peak, _) in results.items():
        print(f"{s:>5}x{45_823 * s:>14,}{wall:>9.1f}{peak / mib:>14.0f}{wall / base:>14.2f}")
    keys = sorted({k for _, _, steps in results.values() for k, _, _ in steps})
    print("\nper step: seconds / peak RSS MiB")
    print(f"{'step':<44}" + "".join(f"{f'{s}x':>18}" for s in scales))
    for key in keys:
        cells = []
        for s in scales:
            found = {k: (sec, rss) for k, sec, rss in results[s][2]}.get(key)
            cells.append(f"{found[0]:>8.1f} / {found[1] / mib:>5.0f}" if found else f"{'-':>16}")
        print(f"{key:<44}" + "".join(f"{c:>18}" for c in cells))
    if 1000 in results:
        wall, peak, _ = results[1000]
        print(
            f"\n1,000x: {wall / base:.1f}x the 1x wall time (target <= 10), "
            f"peak {peak / mib:.0f} MiB (target <= 2048)"
        )


if __name__ == "__main__":
    main()

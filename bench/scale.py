"""The journey at 1x, 10x, 100x (and 1,000x) the demo data: wall time and peak RSS per step.

The source is PostgreSQL. Scale N holds N replicas of the seeded demo database (45,823
rows each): replica 0 is the demo data itself, replica r>0 the same rows with ids suffixed
``-r<r>`` and times moved by a seeded, deterministic offset within the same day, so every
day, operator and label keeps its share while the volume grows N-fold. It is generated
inside Postgres (INSERT ... SELECT over generate_series), never through Python rows.

For each scale, `asgard demo` runs on a fresh ASGARD_HOME; the process tree's RSS is
sampled every 0.1 s and each step's peak is the highest sample within the step's start and
end (Dagster's step events; the journey runs its steps in one process).

Before a source is built, the disk it needs is estimated from the demo database's size
(source tables and indexes, plus as much again for the warehouse and DuckDB's spill files);
the bench refuses a scale that does not fit. Each scale's ASGARD_HOME is removed after its
run and its database dropped (``--keep`` keeps both).

``--spark-at N`` also runs the four silver SQL files on scale N's bronze tables in DuckDB
(as the silver engine does: sqlglot's transpilation, its memory limit and spill folder)
and in PySpark local (``spark_job.run_local``, two cores), each result collected as one
Arrow table, and prints both times and their ratio (target: DuckDB >= 10x faster).

    .venv/bin/python bench/scale.py                   # 1, 10, 100
    .venv/bin/python bench/scale.py --scales 1,10,100,1000
    .venv/bin/python bench/scale.py --scales 100 --spark-at 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import sqlalchemy as sa
from journey import ROOT, settle, step_windows

DEFAULT_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
SEED = 42
DEMO_ROWS = 45_823
# disk a scale needs per byte of its source tables: the source itself, and as much again
# for bronze and silver Parquet, DuckDB's spill files and Postgres' WAL
DISK_FACTOR = 2.0
GIB = 1024**3

# per table: the id column and the timestamp columns a replica shifts
SHIFTS = {
    "production.work_orders": ("work_order_id", ["start_time", "end_time", "updated_at"]),
    "production.machine_logs": ("log_id", ["event_time", "updated_at"]),
    "production.quality_checks": ("check_id", ["check_time", "updated_at"]),
    "inventory.materials": ("material_id", ["updated_at"]),
}


def drop_database(admin: str, db: str) -> None:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
    engine.dispose()


def source_rows(admin: str, db: str) -> int | None:
    """Rows of the source tables in ``db``; None when there is no such database."""
    engine = sa.create_engine(admin)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": db})
        exists = found.first() is not None
    engine.dispose()
    if not exists:
        return None
    engine = sa.create_engine(sa.engine.make_url(admin).set(database=db))
    with engine.connect() as conn:
        rows = sum(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in SHIFTS)
    engine.dispose()
    return rows


def check_disk(url: str, scale: int, home_parent: Path) -> None:
    """Refuse a scale whose source, warehouse and spill files would not fit on the disk(s)
    of Postgres' data directory and of the journey's ASGARD_HOME."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        one = sum(
            conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar()
            for t in SHIFTS
        )
        data_dir = conn.execute(sa.text("SHOW data_directory")).scalar()
    engine.dispose()
    source, lake = one * scale, one * scale * (DISK_FACTOR - 1)
    # the same filesystem counts both; an unreadable data directory (remote server) only the lake
    need = {home_parent: lake}
    if os.path.isdir(data_dir):
        need[Path(data_dir)] = source
    by_device: dict[int, list] = {}  # st_dev -> [a path on it, bytes needed there]
    for path, size in need.items():
        by_device.setdefault(os.stat(path).st_dev, [path, 0.0])[1] += size
    for path, size in by_device.values():
        free = shutil.disk_usage(path).free
        if size > free:
            raise SystemExit(
                f"scale {scale}x needs about {size / GIB:.1f} GiB on the disk of {path} "
                f"({one * scale / GIB:.1f} GiB of source tables, {DISK_FACTOR:g}x for the "
                f"lakehouse and spill files), only {free / GIB:.1f} GiB is free: not run"
            )


def build_source(admin: str, scale: int, prefix: str, home_parent: Path, reuse: bool) -> str:
    """A database holding ``scale`` replicas of the demo data; returns its URL. Refuses
    (before the replicas are written) when the disk cannot hold the scale. With ``reuse``,
    a database of that name that holds the scale's rows is used as it is."""
    from asgard_assets import demo_data

    db = f"{prefix}_{scale}"
    url = sa.engine.make_url(admin).set(database=db).render_as_string(hide_password=False)
    if reuse and source_rows(admin, db) == DEMO_ROWS * scale:
        return url
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    engine.dispose()
    demo_data.load(url, seed=SEED)
    try:
        check_disk(url, scale, home_parent)
    except SystemExit:
        drop_database(admin, db)
        raise
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


def compare_spark(home: Path) -> list[tuple[str, int, float, float]]:
    """The silver SQL files on the bronze tables of ``home``, in DuckDB and in PySpark local:
    (table, rows, DuckDB s, Spark s) each, both results collected as one Arrow table; the
    row counts must agree. Spark's session start is outside the timing (the first query in
    it pays the JIT's warm-up, as a job's would), and so is the catalog's first load of each
    table, which both engines' file lists come from (when it was timed, DuckDB, timed first,
    paid it alone)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from asgard_assets.contracts.sources import SOURCE_TABLES
    from asgard_assets.resources import resource
    from asgard_assets.resources.duckdb_bounds import bounded_duckdb
    from asgard_assets.resources.spark import DuckDbSparkSql, transpile
    from asgard_assets.silver import spark_job
    from asgard_assets.silver.assets import sql_path

    os.environ["ASGARD_HOME"] = str(home)
    lakehouse = resource("lakehouse", "local")
    engine = DuckDbSparkSql()
    for table in SOURCE_TABLES:
        lakehouse.table(f"bronze.{table}")
    # DuckDB first, before Spark's JVM exists: after a query the JVM goes on compiling and
    # collecting on both cores, and a DuckDB query timed then shared them (machine logs
    # 1.7 s against 1.05 s alone)
    duck: dict[str, tuple[int, float]] = {}
    for table in SOURCE_TABLES:
        t = time.perf_counter()
        con = bounded_duckdb(engine.memory_limit)
        lakehouse.attach(con, [f"bronze.{table}"])
        rows = con.sql(transpile(sql_path(table))).to_arrow_table().num_rows
        con.close()
        duck[table] = (rows, time.perf_counter() - t)
    spark_builder = SparkSession.builder.master("local[2]").appName("asgard-scale-bench")
    # the results are collected to the driver: room for the 100x tables
    for key, value in {**spark_job.LOCAL_CONF, "spark.driver.memory": "3g"}.items():
        spark_builder = spark_builder.config(key, value)
    spark = spark_builder.getOrCreate()
    out = []
    try:
        for table in SOURCE_TABLES:
            source = f"bronze.{table}"
            t = time.perf_counter()
            files = lakehouse.current_files(source)
            spark_rows = spark_job.run_local(sql_path(table), {source: files}, None, spark).num_rows
            spark_s = time.perf_counter() - t
            duck_rows, duck_s = duck[table]
            if duck_rows != spark_rows:
                raise SystemExit(
                    f"silver {table}: DuckDB gave {duck_rows} rows, Spark {spark_rows}"
                )
            out.append((table, duck_rows, duck_s, spark_s))
    finally:
        gateway = spark.sparkContext._gateway
        spark.stop()
        # the JVM outlives stop() until this process exits: the next scale's journey must
        # not share the two cores (and 3 GB) with it
        gateway.shutdown()
        gateway.proc.kill()
        gateway.proc.wait()
        SparkContext._gateway = SparkContext._jvm = None
    return out


def run_scale(
    admin: str, scale: int, prefix: str, keep: bool, spark: bool, reuse: bool = False
) -> tuple[float, int, list[tuple[str, float, int]], list]:
    parent = Path(tempfile.mkdtemp(prefix=f"asgard-scale-{scale}-"))
    url = build_source(admin, scale, prefix, parent, reuse)
    home = parent / "asgard"
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
    if proc.returncode == 0:
        settle(home / "dagster")
    compared = []
    try:
        steps = [
            (key, end - start, sampler.peak(start, end))
            for key, start, end in step_windows(home / "dagster")
        ]
        # each scale's figures as soon as it is done (a 1,000x run is long), failed or not
        print(f"{scale}x: {wall:.1f} s, peak {sampler.peak() / 1024**2:.0f} MiB", flush=True)
        for key, secs, rss in steps:
            print(f"  {key:<50}{secs:>8.1f} s {rss / 1024**2:>6.0f} MiB", flush=True)
        if proc.returncode != 0:
            raise SystemExit(f"asgard demo at {scale}x failed (home {home} kept):\n{out[-4000:]}")
    finally:
        os.environ["ASGARD_HOME"] = str(home)
        from asgard_assets.contracts.model import MODEL_NAME
        from asgard_assets.resources.deployer import LocalDeployer

        LocalDeployer().stop(MODEL_NAME)
    try:
        if spark:
            compared = compare_spark(home)
    finally:
        if not keep:
            shutil.rmtree(parent, ignore_errors=True)
            drop_database(admin, f"{prefix}_{scale}")
    return wall, sampler.peak(), steps, compared


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", default="1,10,100")
    parser.add_argument("--admin", default=os.environ.get("ASGARD_TEST_PG", DEFAULT_ADMIN))
    parser.add_argument("--db-prefix", default="asgard_scale", help="source database: <prefix>_<N>")
    parser.add_argument("--spark-at", type=int, help="also run silver in PySpark at this scale")
    parser.add_argument("--keep", action="store_true", help="keep each ASGARD_HOME and database")
    parser.add_argument(
        "--reuse-source", action="store_true", help="use an existing <prefix>_<N> as it is"
    )
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    if args.spark_at is not None and args.spark_at not in scales:
        parser.error(f"--spark-at {args.spark_at} must be one of --scales {args.scales}")
    results = {
        s: run_scale(
            args.admin, s, args.db_prefix, args.keep, s == args.spark_at, args.reuse_source
        )
        for s in scales
    }

    mib = 1024 * 1024
    print(f"{'scale':>6}{'source rows':>14}{'wall s':>9}{'peak RSS MiB':>14}{'x of 1x wall':>14}")
    base = results[1][0] if 1 in results else None
    for s, (wall, peak, _, _) in results.items():
        ratio = f"{wall / base:>14.2f}" if base else f"{'-':>14}"
        print(f"{s:>5}x{DEMO_ROWS * s:>14,}{wall:>9.1f}{peak / mib:>14.0f}{ratio}")
    keys = sorted({k for _, _, steps, _ in results.values() for k, _, _ in steps})
    print("\nper step: seconds / peak RSS MiB")
    print(f"{'step':<44}" + "".join(f"{f'{s}x':>18}" for s in scales))
    for key in keys:
        cells = []
        for s in scales:
            found = {k: (sec, rss) for k, sec, rss in results[s][2]}.get(key)
            cells.append(f"{found[0]:>8.1f} / {found[1] / mib:>5.0f}" if found else f"{'-':>16}")
        print(f"{key:<44}" + "".join(f"{c:>18}" for c in cells))
    if 1000 in results:
        wall, peak, _, _ = results[1000]
        against = f"{wall / base:.1f}x the 1x wall time" if base else "no 1x in this run"
        print(
            f"\n1,000x: {wall:.1f} s, {against} (target <= 10), "
            f"peak {peak / mib:.0f} MiB (target <= 2048)"
        )
    if args.spark_at is not None:
        compared = results[args.spark_at][3]
        print(f"\nsilver SQL at {args.spark_at}x, results collected as Arrow (s)")
        print(f"{'table':<16}{'rows':>12}{'DuckDB':>9}{'PySpark':>9}{'ratio':>8}")
        for table, rows, duck, spark in compared:
            print(f"{table:<16}{rows:>12,}{duck:>9.2f}{spark:>9.2f}{spark / duck:>8.1f}")
        duck = sum(c[2] for c in compared)
        spark = sum(c[3] for c in compared)
        print(
            f"{'all four':<16}{sum(c[1] for c in compared):>12,}{duck:>9.2f}{spark:>9.2f}"
            f"{spark / duck:>8.1f}   (target: DuckDB >= 10x faster)"
        )


if __name__ == "__main__":
    main()

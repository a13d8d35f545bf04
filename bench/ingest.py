"""Bronze ingestion throughput against the physical limit of reading the same table.

Loads N work-order rows into PostgreSQL (generated server-side), then in separate child
processes (so each peak memory is its own):
  raw     COPY (SELECT * ...) TO STDOUT, discarded: what reading the table costs at best
  read    Asgard's source read alone (EmbeddedIngestion.read: contract check, ADBC, read-ahead
          thread), discarded: the ceiling of the bronze path, shown for reference
  asgard  the bronze code path (EmbeddedIngestion.ingest) into a fresh Iceberg table
and prints rows/s, CPU seconds (of that process: the Postgres server's are not counted),
peak RSS, the ratio asgard/raw and the targets, with the machine's load average (a loaded
machine lowers the ratio: Asgard's path needs more CPU than the raw read).

    .venv/bin/python bench/ingest.py --rows 1000000
    .venv/bin/python bench/ingest.py --rows 10000000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time

import sqlalchemy as sa

DEFAULT_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DB = "asgard_bench"
TARGET_RATIO = 0.85
TARGET_MIB = 384  # at 10M rows

FILL = """
CREATE SCHEMA IF NOT EXISTS production;
DROP TABLE IF EXISTS production.work_orders;
CREATE TABLE production.work_orders (
    work_order_id text, product_id text, operator_id text, machine_id text, status text,
    quantity integer, start_time timestamp, end_time timestamp, updated_at timestamp
);
INSERT INTO production.work_orders
SELECT 'WO-' || lpad(g::text, 9, '0'),
       'PROD-' || lpad((g % 60)::text, 3, '0'),
       CASE WHEN g % 50 = 0 THEN NULL ELSE 'EMP-' || lpad((g % 142)::text, 3, '0') END,
       'MCH-' || lpad((g % 40)::text, 2, '0'),
       (ARRAY['completed', 'COMPLETED', 'in_progress', 'cancelled'])[1 + g % 4],
       (g % 900) - 10,
       timestamp '2025-01-01' + (g % 15638400) * interval '1 second',
       CASE WHEN g % 4 = 2 THEN NULL ELSE timestamp '2025-01-01' + (g % 15638400 + 3600 * (1 + g % 9)) * interval '1 second' END,
       timestamp '2025-01-01' + (g % 15638400 + 40000) * interval '1 second'
FROM generate_series(1, :rows) AS g;
ANALYZE production.work_orders;
"""


def fill(admin: str, rows: int, db: str = DB) -> str:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": db}
        ).scalar():
            conn.execute(sa.text(f"CREATE DATABASE {db}"))
    engine.dispose()
    url = sa.engine.make_url(admin).set(database=db).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('production.work_orders')")).scalar()
        have = (
            conn.execute(sa.text("SELECT count(*) FROM production.work_orders")).scalar()
            if exists
            else -1
        )
        if have != rows:  # reuse a table of the right size from an earlier run
            for stmt in FILL.strip().split(";\n"):
                if stmt.strip():
                    conn.execute(sa.text(stmt), {"rows": rows})
    engine.dispose()
    return url


class _Discard:
    def write(self, data):
        return len(data)


def _usage() -> tuple[float, float]:
    """CPU seconds (user + system, every thread) and peak RSS (MiB) of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


def raw(url: str, out: mp.Queue) -> None:
    import psycopg2

    dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(dsn)
    cpu, t = _usage()[0], time.perf_counter()
    with conn.cursor() as cur:
        cur.copy_expert("COPY (SELECT * FROM production.work_orders) TO STDOUT", _Discard())
        n = cur.rowcount
    elapsed = time.perf_counter() - t
    used, mib = _usage()
    out.put((n, elapsed, used - cpu, mib))


def read(url: str, out: mp.Queue) -> None:
    import pandas  # noqa: F401 - as in asgard()

    from asgard_assets.resources.ingestion import EmbeddedIngestion

    cpu, t = _usage()[0], time.perf_counter()
    n = sum(b.num_rows for b in EmbeddedIngestion(source_url=url).read("work_orders"))
    elapsed = time.perf_counter() - t
    used, mib = _usage()
    out.put((n, elapsed, used - cpu, mib))


def asgard(url: str, out: mp.Queue) -> None:
    os.environ["ASGARD_HOME"] = tempfile.mkdtemp(prefix="asgard-bench-")
    import pandas  # noqa: F401 - pyarrow imports it lazily; inside Dagster it is always loaded

    from asgard_assets.resources.ingestion import EmbeddedIngestion
    from asgard_assets.resources.lakehouse import IcebergLakehouse

    lakehouse = IcebergLakehouse()
    lakehouse.catalog()
    cpu, t = _usage()[0], time.perf_counter()
    result = EmbeddedIngestion(source_url=url).ingest("work_orders", lakehouse, full_refresh=True)
    elapsed = time.perf_counter() - t
    used, mib = _usage()
    shutil.rmtree(os.environ["ASGARD_HOME"], ignore_errors=True)  # the bronze copy it wrote
    out.put((result.write.rows_written, elapsed, used - cpu, mib))


def run(phase, url: str) -> tuple[int, float, float, float]:
    ctx = mp.get_context("spawn")  # a clean process: its peak memory is the phase's own
    q = ctx.Queue()
    p = ctx.Process(target=phase, args=(url, q))
    p.start()
    figures = q.get()
    p.join()
    return figures


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--postgres", default=os.environ.get("ASGARD_BENCH_PG", DEFAULT_ADMIN))
    ap.add_argument("--database", default=DB, help="the source database (created if missing)")
    args = ap.parse_args()

    t = time.perf_counter()
    url = fill(args.postgres, args.rows, args.database)
    print(
        f"source: {args.rows:,} rows in production.work_orders ({time.perf_counter() - t:.1f}s to prepare)"
    )
    print(f"before: {load()} on {os.cpu_count()} cores")
    phases = (("raw COPY TO STDOUT", raw), ("asgard source read", read), ("asgard bronze", asgard))
    results = {name: run(fn, url) for name, fn in phases}
    print(f"after:  {load()}")
    print(f"{'path':<20} {'rows':>12} {'seconds':>9} {'rows/s':>12} {'cpu s':>7} {'peak MiB':>9}")
    for name, (n, secs, cpu, mib) in results.items():
        print(f"{name:<20} {n:>12,} {secs:>9.2f} {n / secs:>12,.0f} {cpu:>7.2f} {mib:>9.0f}")
    (rn, rs, _, _), (sn, ss, _, _), (an, as_, _, amib) = results.values()
    assert rn == sn == an == args.rows, "every path must read every row"
    print(f"asgard source read / raw throughput: {(sn / ss) / (rn / rs):.2f}  (for reference)")
    ratio = (an / as_) / (rn / rs)
    met = ratio >= TARGET_RATIO and amib <= TARGET_MIB
    print(
        f"asgard / raw throughput: {ratio:.2f}, peak {amib:.0f} MiB  (target >= {TARGET_RATIO}, "
        f"peak <= {TARGET_MIB} MiB at 10M rows: {'met' if met else 'not met'})"
    )


if __name__ == "__main__":
    main()

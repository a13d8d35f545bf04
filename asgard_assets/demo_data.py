"""The demo factory ERP database: deterministic, with the defects of the seed's story.

15,000 work orders, 25,000 machine logs, 3,500 quality checks and 2,323 materials
(45,823 rows). Defects: mixed-case and padded ids and statuses, blank operators,
zero/negative quantities, completed orders with no end time, end before start, and 150
work orders with no id. Tuned so that silver keeps 14,850 work orders and gold gets 142
operators with both classes of ``is_high_performer`` well represented.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from .contracts.sources import (
    INTEGER,
    PARTITIONED_TABLES,
    SOURCES,
    STRING,
    TIMESTAMP,
    qualified_name,
)
from .days import DEMO_DAYS, DEMO_START, last_day

SEED = 42
N_WORK_ORDERS = 15_000
N_MISSING_IDS = 150
N_MACHINE_LOGS = 25_000
N_QUALITY_CHECKS = 3_500
N_MATERIALS = 2_323
N_OPERATORS = 142  # operators with enough valid orders to reach gold
N_SPARSE_OPERATORS = 3  # operators with too few orders: silver keeps them, gold does not
START, DAYS = DEMO_START, DEMO_DAYS

EXPECTED_ROWS = {
    "work_orders": N_WORK_ORDERS,
    "machine_logs": N_MACHINE_LOGS,
    "quality_checks": N_QUALITY_CHECKS,
    "materials": N_MATERIALS,
}

_SQL_TYPES = {STRING: sa.String(64), INTEGER: sa.Integer, TIMESTAMP: sa.DateTime}

# the source tables as the registry declares them (DOUBLE and anything else: Float)
TABLES = {
    name: sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c.name, _SQL_TYPES.get(c.type, sa.Float)) for c in table.columns),
    )
    for name, table in SOURCES.items()
}


def _messy(rng: np.random.Generator, values: list[str]) -> list[str]:
    """Mixed case and padding, as data typed on a factory floor."""
    out = []
    for v, r in zip(values, rng.random(len(values)), strict=True):
        if r < 0.10:
            v = v.lower()
        elif r < 0.15:
            v = v.title()
        if r > 0.93:
            v = f"  {v} "
        out.append(v)
    return out


def _seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, DAYS * 86400, n)


def _ts(seconds: float) -> datetime:
    return START + timedelta(seconds=int(seconds))


def _avoid(rng: np.random.Generator, low: float, high: float, gap: tuple[float, float], n: int):
    """Uniform draws that stay out of ``gap``: operators are clearly on one side of a label
    threshold, so a model can learn it from 113 training rows."""
    out = rng.uniform(low, high, n)
    bad = (out > gap[0]) & (out < gap[1])
    while bad.any():
        out[bad] = rng.uniform(low, high, bad.sum())
        bad = (out > gap[0]) & (out < gap[1])
    return out


def work_orders(seed: int = SEED) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = N_WORK_ORDERS
    operators = [f"EMP-{i:03d}" for i in range(1, N_OPERATORS + N_SPARSE_OPERATORS + 1)]
    rate = _avoid(rng, 50, 110, (71, 79), len(operators))  # units per hour
    completion = _avoid(rng, 0.84, 0.995, (0.885, 0.915), len(operators))

    # 3 orders each for the sparse operators, the rest spread over the others
    op_idx = rng.integers(0, N_OPERATORS, n)
    op_idx[: 3 * N_SPARSE_OPERATORS] = np.repeat(
        np.arange(N_OPERATORS, N_OPERATORS + N_SPARSE_OPERATORS), 3
    )
    rng.shuffle(op_idx)
    r = rng.random(n)
    completed = r < completion[op_idx]
    other = np.array(["in_progress", "cancelled", "pending"])[rng.integers(0, 3, n)]
    status = np.where(completed, "completed", other)

    quantity = rng.integers(100, 900, n).astype(object)
    hours = quantity.astype(float) / rate[op_idx] * rng.lognormal(0, 0.08, n)
    start = _seconds(rng, n)
    end = start + hours * 3600
    has_end = completed | (status == "cancelled")

    defect = rng.random(n)
    bad_qty = defect < 0.02
    quantity[bad_qty] = rng.choice([0, -5, -40, None], bad_qty.sum())
    no_end = (defect >= 0.02) & (defect < 0.03) & completed
    has_end[no_end] = False
    backwards = (defect >= 0.03) & (defect < 0.035) & has_end
    end[backwards] = start[backwards] - 3600

    blank_operator = rng.random(n) < 0.02
    operator = [operators[i] for i in op_idx]
    for i in np.flatnonzero(blank_operator):
        operator[i] = ["", "  ", None][i % 3]

    ids = [f"WO-{i:06d}" for i in range(1, n + 1)]
    ids = _messy(rng, ids)
    for i in rng.choice(n, N_MISSING_IDS, replace=False):
        ids[i] = [None, "", "   "][i % 3]

    end_ts = [_ts(e) if h else None for e, h in zip(end, has_end, strict=True)]
    start_ts = [_ts(s) for s in start]
    updated = [max(s, e or s) + timedelta(minutes=5) for s, e in zip(start_ts, end_ts, strict=True)]
    return pa.table(
        {
            "work_order_id": ids,
            "product_id": _messy(rng, [f"PROD-{i:03d}" for i in rng.integers(1, 61, n)]),
            "operator_id": _messy_keep_none(rng, operator),
            "machine_id": _messy(rng, [f"MCH-{i:02d}" for i in rng.integers(1, 41, n)]),
            "status": _messy(
                rng,
                [s.upper() if x < 0.1 else s for s, x in zip(status, rng.random(n), strict=True)],
            ),
            "quantity": pa.array(list(quantity), pa.int32()),
            "start_time": start_ts,
            "end_time": pa.array(end_ts, pa.timestamp("us")),
            "updated_at": updated,
        }
    )


def _messy_keep_none(rng: np.random.Generator, values: list[str | None]) -> list[str | None]:
    mask = [v is not None for v in values]
    messy = _messy(rng, [v or "" for v in values])
    return [m if keep else None for m, keep in zip(messy, mask, strict=True)]


def machine_logs(seed: int = SEED) -> pa.Table:
    rng = np.random.default_rng(seed + 1)
    n = N_MACHINE_LOGS
    t = _seconds(rng, n)
    ids = [f"LOG-{i:07d}" for i in range(1, n + 1)]
    # 1% re-sent events: the same log id again, updated later
    for i in rng.choice(n, n // 100, replace=False):
        ids[i] = ids[max(i - 1, 0)]
    events = np.array(["start", "stop", "error", "maintenance", "running"])[rng.integers(0, 5, n)]
    temp = rng.normal(68, 9, n)
    temp[rng.random(n) < 0.005] = np.nan
    return pa.table(
        {
            "log_id": _messy(rng, ids),
            "machine_id": _messy(rng, [f"MCH-{i:02d}" for i in rng.integers(1, 41, n)]),
            "operator_id": _messy(rng, [f"EMP-{i:03d}" for i in rng.integers(1, 146, n)]),
            "event_type": _messy(rng, list(events)),
            "temperature_c": pa.array(np.round(temp, 2), from_pandas=True),
            "vibration_mm_s": np.round(rng.gamma(2.0, 1.5, n), 3),
            "event_time": [_ts(s) for s in t],
            "updated_at": [_ts(s + 60 * (i % 7)) for i, s in enumerate(t)],
        }
    )


def quality_checks(seed: int = SEED) -> pa.Table:
    rng = np.random.default_rng(seed + 2)
    n = N_QUALITY_CHECKS
    t = _seconds(rng, n)
    result = np.where(rng.random(n) < 0.88, "pass", "fail")
    defects = np.where(result == "pass", 0, rng.integers(1, 6, n))
    return pa.table(
        {
            "check_id": _messy(rng, [f"QC-{i:05d}" for i in range(1, n + 1)]),
            "work_order_id": _messy(
                rng, [f"WO-{i:06d}" for i in rng.integers(1, N_WORK_ORDERS, n)]
            ),
            "inspector_id": _messy(rng, [f"QA-{i:02d}" for i in rng.integers(1, 16, n)]),
            "result": _messy(rng, list(result)),
            "defects_found": pa.array(defects, pa.int32()),
            "check_time": [_ts(s) for s in t],
            "updated_at": [_ts(s + 300) for s in t],
        }
    )


def materials(seed: int = SEED) -> pa.Table:
    rng = np.random.default_rng(seed + 3)
    n = N_MATERIALS
    cats = np.array(["steel", "aluminium", "plastic", "electronics", "fasteners", "paint"])
    cat = cats[rng.integers(0, len(cats), n)]
    qty = rng.integers(0, 5000, n)
    qty[rng.random(n) < 0.01] = -1
    return pa.table(
        {
            "material_id": _messy(rng, [f"MAT-{i:05d}" for i in range(1, n + 1)]),
            "material_name": _messy(rng, [f"{c} part {i}" for i, c in enumerate(cat)]),
            "category": _messy(rng, list(cat)),
            "unit": _messy(rng, list(np.array(["kg", "pcs", "m", "l"])[rng.integers(0, 4, n)])),
            "quantity_on_hand": pa.array(qty, pa.int32()),
            "unit_cost": np.round(rng.lognormal(2.5, 1.0, n), 2),
            "supplier": _messy(rng, [f"Supplier {i}" for i in rng.integers(1, 40, n)]),
            "updated_at": [_ts(s) for s in _seconds(rng, n)],
        }
    )


GENERATORS = {
    "work_orders": work_orders,
    "machine_logs": machine_logs,
    "quality_checks": quality_checks,
    "materials": materials,
}


def load(url: str, *, replace: bool = True, seed: int = SEED) -> dict[str, int]:
    """Create the demo tables in any SQLAlchemy database and load the demo rows
    (``SourceUrlError`` when the URL itself cannot work)."""
    from .source_url import source_engine

    engine = source_engine(url, creating=True)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        dialect = conn.dialect.name
        for name, template in TABLES.items():
            schema, _ = qualified_name(name, dialect)
            if schema:
                kw = "DATABASE" if dialect in ("mysql", "mariadb") else "SCHEMA"
                conn.execute(sa.text(f"CREATE {kw} IF NOT EXISTS {schema}"))
            table = template.to_metadata(sa.MetaData(), schema=schema)
            if replace:
                table.drop(conn, checkfirst=True)
            table.create(conn, checkfirst=True)
            rows = GENERATORS[name](seed).to_pylist()
            for i in range(0, len(rows), 5000):
                conn.execute(table.insert(), rows[i : i + 5000])
            counts[name] = len(rows)
    engine.dispose()
    return counts


def ensure_sqlite(path: Path) -> str:
    """The demo database as a SQLite file, generated on first use; returns its URL.

    Built under a temporary name and renamed, so a concurrent reader never sees half of it.
    """
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        load(f"sqlite:///{tmp}")
        os.replace(tmp, path)
    return f"sqlite:///{path}"


# the columns moved with a copied day besides the partition column
MOVED_WITH_DAY = {"work_orders": ("end_time",)}


def add_day(path: Path) -> tuple[str, dict[str, int]]:
    """One more ordinary day in the demo database (SQLite at ``path``): the rows of its last
    day again, one day later, with new ids (``<id>-day<YYYYMMDD>``; blank ids stay blank)
    and ``updated_at`` now, as a new day arriving in an ERP would. Returns the day and the
    rows added per table; one transaction."""
    with closing(sqlite3.connect(path)) as conn, conn:
        last = last_day(conn)
        day = last + timedelta(days=1)
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as the table writes them
        added = {}
        for table in PARTITIONED_TABLES:
            source = SOURCES[table]
            key, column = source.key, source.partition_column
            names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            # the id before any earlier copy's suffix, unpadded
            base = (
                f"TRIM(CASE WHEN instr({key}, '-day') > 0 "
                f"THEN substr({key}, 1, instr({key}, '-day') - 1) ELSE {key} END)"
            )
            values = {
                key: f"CASE WHEN TRIM({key}) = '' THEN {key} ELSE {base} || '-day{day:%Y%m%d}' END",
                "updated_at": "?",
                # a day later, keeping the value's own fraction of a second ('.000000')
                **{
                    c: f"datetime({c}, '+1 day') || substr({c}, 20)"
                    for c in (column, *MOVED_WITH_DAY.get(table, ()))
                },
            }
            select = ", ".join(values.get(name, name) for name in names)
            added[table] = conn.execute(
                f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM {table} "
                f"WHERE date({column}) = ?",
                (now, f"{last:%Y-%m-%d}"),
            ).rowcount
    return f"{day:%Y-%m-%d}", added

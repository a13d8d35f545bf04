"""The key checks bronze and silver run on staged data (write-audit-publish).

One query over the staged table's key (and partition column) yields every check's figures:
rows, NULL or blank keys, keys that occur more than once, rows outside the daily partitions.
The asset declares the checks (``check_specs``) and reports their results from its body;
``Lakehouse.write`` publishes the new snapshot only when no ERROR check failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from .contracts.sources import SOURCES
from .partitions import Window
from .resources.duckdb_bounds import bounded_duckdb
from .resources.write_audit import Staged

SAMPLE = 10  # keys named in a check's description and metadata
OUTSIDE = "rows_outside_partitions"
# metadata of a check judged against the partitions' span (OUTSIDE): which span it was
SPAN = "partitions_span"


def check_names(table: str) -> tuple[str, str, str]:
    key = SOURCES[table].key
    return "row_count_positive", f"{key}_not_null", f"{key}_unique"


def key_specs(asset: dg.AssetKey, table: str, keys_block: bool) -> list[dg.AssetCheckSpec]:
    """Rows present (always blocking) and key not null / unique (blocking when
    ``keys_block``), judged on the staged data before it is published."""
    rows, not_null, unique = check_names(table)
    key = SOURCES[table].key
    when = "blocks publishing" if keys_block else "warns"
    return [
        dg.AssetCheckSpec(
            rows, asset=asset, blocking=True, description="The table has rows; blocks publishing."
        ),
        dg.AssetCheckSpec(
            not_null,
            asset=asset,
            blocking=keys_block,
            description=f"No NULL or blank `{key}`; {when}.",
        ),
        dg.AssetCheckSpec(
            unique,
            asset=asset,
            blocking=keys_block,
            description=f"Each `{key}` once; {when}.",
        ),
    ]


@dataclass(frozen=True)
class KeyStats:
    rows: int
    null_keys: int
    duplicate_keys: int
    duplicate_sample: list
    outside: int
    outside_sample: list


def key_stats(staged: Staged, key: str, window: Window | None = None) -> KeyStats:
    """The figures of every key check, in one pass over the staged key column (the key cast
    to text, so integer keys work too)."""
    columns = (key, window.column) if window else (key,)
    con = bounded_duckdb()
    try:
        con.register("_staged", staged.rows(*columns))
        outside = f"count(*) FILTER (WHERE {window.outside_sql()})" if window else "0"
        blank = "k IS NULL OR trim(k) = ''"
        row = con.execute(
            f"""
            WITH per_key AS (
                SELECT CAST({key} AS VARCHAR) AS k, count(*) AS n, {outside} AS o
                FROM _staged GROUP BY 1
            )
            SELECT
                coalesce(sum(n), 0),
                coalesce(sum(n) FILTER (WHERE {blank}), 0),
                count(*) FILTER (WHERE n > 1 AND NOT ({blank})),
                min(k, {SAMPLE}) FILTER (WHERE n > 1 AND NOT ({blank})),
                coalesce(sum(o), 0),
                min(coalesce(k, 'NULL'), {SAMPLE}) FILTER (WHERE o > 0)
            FROM per_key
            """
        ).fetchone()
    finally:
        con.close()
    rows, nulls, dups, dup_sample, out, out_sample = row
    return KeyStats(int(rows), int(nulls), dups, dup_sample or [], int(out), out_sample or [])


def check_result(
    asset: dg.AssetKey,
    name: str,
    count: int,
    description: str,
    severity: dg.AssetCheckSeverity,
    sample: list | None = None,
    metadata: dict | None = None,
) -> dg.AssetCheckResult:
    """A check that passes when ``count`` (of bad rows or keys) is 0; names the sample."""
    sample = [str(k) for k in sample or []]
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=count == 0,
        severity=severity,
        description=f"{count} {description}"
        + (f" (first {SAMPLE}: {', '.join(sample)})" if sample else ""),
        metadata={"count": count, "sample_keys": sample, **(metadata or {})},
    )


def key_results(
    asset: dg.AssetKey, table: str, stats: KeyStats, severity: dg.AssetCheckSeverity
) -> list[dg.AssetCheckResult]:
    rows, not_null, unique = check_names(table)
    key = SOURCES[table].key
    return [
        dg.AssetCheckResult(
            asset_key=asset,
            check_name=rows,
            passed=stats.rows > 0,
            description=f"{stats.rows} rows",
            metadata={"rows": stats.rows},
        ),
        check_result(
            asset, not_null, stats.null_keys, f"rows with a NULL or blank {key}", severity
        ),
        check_result(
            asset,
            unique,
            stats.duplicate_keys,
            f"{key}s occur more than once",
            severity,
            stats.duplicate_sample,
        ),
    ]

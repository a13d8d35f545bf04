"""Bronze checks of the data contract: the columns silver reads are there, rows stamped in
the future are flagged, rows whose values do not fit their type are counted.

A source that misses a contracted column already fails ingestion before any write; the
first check also guards bronze tables written by other loaders (Airbyte at scale), so a
dropped or renamed column stops silver instead of turning into NULLs.
"""

from __future__ import annotations

import json
from functools import cache

import dagster as dg
import sqlglot
from sqlglot import exp

from ..contracts.sources import CURSOR_COLUMN, LOADED_AT, SOURCE_TABLES, SOURCES
from ..resources.lakehouse import Lakehouse
from ..resources.source_fits import QUARANTINE, QUARANTINED_KEYS, SAMPLE_KEYS
from ..resources.source_streams import LOAD_ID
from ..silver.assets import sql_path


@cache
def silver_columns(table: str) -> frozenset[str]:
    """The bronze columns the silver SQL of ``table`` reads (from its SELECT over
    ``bronze.<table>``)."""
    tree = sqlglot.parse_one(sql_path(table).read_text(), read="spark")
    found: set[str] = set()
    for select in tree.find_all(exp.Select):
        source = select.args.get("from_") or select.args.get("from")
        t = source.this if source else None
        if isinstance(t, exp.Table) and t.db == "bronze" and t.name == table:
            found |= {c.name for c in select.find_all(exp.Column)}
    return frozenset(found)


def _keys(lakehouse: Lakehouse, identifier: str, key: str, where: str) -> tuple[int, list]:
    count, keys = lakehouse.query(
        f"SELECT count(*), list({key}::VARCHAR) FILTER (WHERE {key} IS NOT NULL) "
        f"FROM {identifier} WHERE {where}",
        identifier,
    ).fetchone()
    return count, sorted(keys or [])[:SAMPLE_KEYS]


def contract_checks(table: str) -> list[dg.AssetChecksDefinition]:
    asset = dg.AssetKey(["bronze", table])
    identifier = f"bronze.{table}"
    key = SOURCES[table].key

    @dg.asset_check(
        asset=asset,
        name="silver_columns_present",
        blocking=True,
        description="Every column the silver SQL reads is in bronze (else silver would "
        "read NULLs or fail deep in the engine).",
    )
    def silver_columns_present(lakehouse: Lakehouse) -> dg.AssetCheckResult:
        have = set(lakehouse.table(identifier).schema().column_names)
        missing = sorted(silver_columns(table) - have)
        return dg.AssetCheckResult(
            passed=not missing,
            # either side may be wrong: the source dropped or renamed a column, or the SQL
            # names one the contract does not have (a typo)
            description=f"{sql_path(table).name} reads column(s) {identifier} does not have: "
            f"{', '.join(missing)} (renamed or dropped in the source, or mistyped in the SQL)"
            if missing
            else None,
            metadata={"missing_columns": missing, "silver_reads": sorted(silver_columns(table))},
        )

    @dg.asset_check(
        asset=asset,
        name="updated_at_not_in_future",
        description="Rows whose updated_at was later than their load: they are loaded, but "
        "the cursor ignores them (it never passes a load's start time).",
    )
    def updated_at_not_in_future(lakehouse: Lakehouse) -> dg.AssetCheckResult:
        count, keys = _keys(lakehouse, identifier, key, f"{CURSOR_COLUMN} > {LOADED_AT}")
        return dg.AssetCheckResult(
            passed=count == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{count} rows of {identifier} updated after their load (keys "
            f"{keys}): loaded, but the cursor ignores them"
            if count
            else None,
            metadata={"future_rows": count, "keys": keys},
        )

    @dg.asset_check(
        asset=asset,
        name="values_fit_types",
        description=f"Source rows of the last load whose values did not fit their column "
        f"type: kept as text in `{identifier}{QUARANTINE}`, not loaded.",
    )
    def values_fit_types(lakehouse: Lakehouse) -> dg.AssetCheckResult:
        summary = lakehouse.table(identifier).current_snapshot().summary
        count = int(summary.get("asgard.quarantined", 0))
        keys: list = json.loads(summary.get(QUARANTINED_KEYS) or "[]")
        if count and not keys and lakehouse.exists(identifier + QUARANTINE):
            # a table loaded before the keys were recorded with the load: its rows of that load
            load = summary.get("asgard.load-id")
            _, keys = _keys(lakehouse, identifier + QUARANTINE, key, f"{LOAD_ID} = '{load}'")
        return dg.AssetCheckResult(
            passed=count == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{count} source rows did not fit their column types (keys {keys}): "
            f"kept as text in {identifier}{QUARANTINE}, not loaded"
            if count
            else None,
            metadata={"quarantined": count, "keys": keys, "table": identifier + QUARANTINE},
        )

    return [silver_columns_present, updated_at_not_in_future, values_fit_types]


bronze_contract_checks = [c for t in SOURCE_TABLES for c in contract_checks(t)]

"""Checks of silver/<table>: silver promises clean keys, so rows present, key not null and
key unique all block publishing. They run on the staged data inside the asset (see
``key_checks``): a failing write leaves the table at its last good snapshot."""

import dagster as dg

from ..contracts.sources import SOURCES
from ..key_checks import key_results, key_specs, key_stats
from ..resources.write_audit import Audit, Staged


def silver_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["silver", table])


def silver_check_specs(table: str) -> list[dg.AssetCheckSpec]:
    return key_specs(silver_key(table), table, keys_block=True)


def silver_audit(table: str) -> Audit:
    def audit(staged: Staged) -> list[dg.AssetCheckResult]:
        stats = key_stats(staged, SOURCES[table].key)
        return key_results(silver_key(table), table, stats, dg.AssetCheckSeverity.ERROR)

    return audit

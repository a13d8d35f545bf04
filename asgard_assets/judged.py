"""The check results a table's snapshot was published with, kept on the table itself.

A write-audit-publish write judges its staged snapshot; the results are stored as a table
property naming that snapshot, in the same commit. A later step that finds nothing to do
reports them again instead of reading the table again: the same rows, the same verdicts.
Any other write moves the snapshot and voids the record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import dagster as dg
from pyiceberg.table import Table

PROPERTY = "asgard.checks"


def as_property(snapshot_id: int | None, checks: Sequence[dg.AssetCheckResult]) -> dict[str, str]:
    """The table property recording ``checks`` as the verdicts on ``snapshot_id``."""
    return {
        PROPERTY: json.dumps(
            {
                "snapshot_id": snapshot_id,
                "checks": [
                    {
                        "name": c.check_name,
                        "passed": c.passed,
                        "severity": c.severity.value,
                        "description": c.description,
                        "metadata": {k: v.value for k, v in (c.metadata or {}).items()},
                    }
                    for c in checks
                ],
            },
            default=str,
        )
    }


def for_current_snapshot(table: Table, prop: str) -> dict | None:
    """A JSON table property recorded for the table's current snapshot (its
    ``snapshot_id`` field names it); None when absent or recorded for another snapshot."""
    snapshot = table.current_snapshot()
    record = json.loads(table.properties.get(prop, "{}"))
    if snapshot is None or record.get("snapshot_id") != snapshot.snapshot_id:
        return None
    return record


def recorded(
    table: Table, asset_key: dg.AssetKey | None = None
) -> list[dg.AssetCheckResult] | None:
    """The results recorded for the table's current snapshot (as results on ``asset_key``
    when given: a step of several assets must name it); None when there are none."""
    record = for_current_snapshot(table, PROPERTY)
    if record is None:
        return None
    snapshot_id = str(record["snapshot_id"])
    return [
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=c["name"],
            passed=c["passed"],
            severity=dg.AssetCheckSeverity(c["severity"]),
            description=c["description"],
            metadata={**c["metadata"], "judged_on_snapshot": snapshot_id},
        )
        for c in record["checks"]
    ]

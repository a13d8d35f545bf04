"""What a table's current snapshot was built from, recorded on the table itself.

A step that rebuilds a table from other tables (silver from bronze, gold from silver)
records its inputs (their Iceberg snapshot ids, the code version, the window) as a table
property naming the snapshot it applies to. When the same inputs come again, the step
notices and does nothing: no new snapshot, the same data version. State and data cannot
disagree: a write by anything else moves the snapshot and voids the record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import dagster as dg

from . import judged
from .resources.lakehouse import Lakehouse, described
from .resources.write_audit import Audit, Staged

PROPERTY = "asgard.built-from"


def inputs(lakehouse: Lakehouse, code: str | None, sources: list[str], **extra: str) -> str:
    """The inputs of a build: the code version, the current snapshot of each source table,
    and anything else that changes the result (a window), as one comparable string."""
    return json.dumps(
        {
            "code": code,
            "sources": {s: lakehouse.snapshot_id(s) for s in sorted(sources)},
            **extra,
        },
        sort_keys=True,
    )


def built_from(lakehouse: Lakehouse, identifier: str) -> str | None:
    """The inputs recorded for the table's current snapshot; None when unknown."""
    if not lakehouse.exists(identifier):
        return None
    recorded = judged.for_current_snapshot(lakehouse.table(identifier), PROPERTY)
    return recorded.get("inputs") if recorded is not None else None


def record(
    lakehouse: Lakehouse,
    identifier: str,
    built: str,
    checks: Sequence[dg.AssetCheckResult] = (),
) -> None:
    """Remember that the table's current snapshot was built from ``built``, and the
    ``checks`` it passed the build with when given (table properties: a metadata commit, no
    new snapshot)."""
    table = lakehouse.table(identifier)
    snapshot_id = table.current_snapshot().snapshot_id
    properties = {PROPERTY: json.dumps({"snapshot_id": snapshot_id, "inputs": built})}
    if checks:
        properties |= judged.as_property(snapshot_id, checks)
    with table.transaction() as txn:
        txn.set_properties(properties)


def unchanged(
    lakehouse: Lakehouse, identifier: str, audit: Audit, source: str
) -> dg.MaterializeResult:
    """The result of a step that found nothing to do: the table as it is, the same data
    version, and the check results its snapshot was published with (judged again on the
    current rows only when none were recorded, e.g. a table written before they were)."""
    table = lakehouse.table(identifier)
    written = described(table, identifier)
    checks = judged.recorded(table)
    if checks is None:
        checks = audit(Staged(identifier, table.transaction(), table.io))
    return dg.MaterializeResult(
        data_version=dg.DataVersion(str(written.snapshot_id)),
        metadata={
            "dagster/row_count": written.total_rows,
            "iceberg_snapshot_id": str(written.snapshot_id),
            "skipped": f"nothing to do: {source} unchanged since this snapshot was written",
        },
        check_results=checks,
    )

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
from .key_checks import OUTSIDE, SPAN
from .metadata import skipped
from .partitions import Window
from .resources.lakehouse import Lakehouse
from .resources.write_audit import Audit, Staged
from .resources.write_results import described

PROPERTY = "asgard.built-from"


def inputs(
    lakehouse: Lakehouse, code: str | None, sources: list[str], window: Window | None = None
) -> str:
    """The inputs of a build: the code version, the current snapshot of each source table,
    and the window it wrote (a partition run), as one comparable string."""
    return json.dumps(
        {
            "code": code,
            "sources": {s: lakehouse.snapshot_id(s) for s in sorted(sources)},
            **({"window": _span(window)} if window is not None else {}),
        },
        sort_keys=True,
    )


def _span(window: Window) -> dict[str, str]:
    return {
        "column": window.column,
        "days": [f"{window.start:%Y-%m-%d}", f"{window.end:%Y-%m-%d}"],
        "partitions": [f"{window.first:%Y-%m-%d}", f"{window.last:%Y-%m-%d}"],
    }


def covers(recorded: str | None, built: str) -> bool:
    """Whether the build recorded for a table's current snapshot already produced what
    ``built`` would: the same code and source snapshots, over the same window or one holding
    it (its days around these, the same partitions, so the same remainder). A window rebuilt
    from an unchanged source writes exactly the rows the larger build wrote there: its SQL
    reads the whole source, not the window."""
    if recorded is None:
        return False
    was, now = json.loads(recorded), json.loads(built)
    if (was.get("code"), was.get("sources")) != (now["code"], now["sources"]):
        return False
    before, after = was.get("window"), now.get("window")
    if before == after:
        return True
    return (
        isinstance(before, dict)
        and isinstance(after, dict)
        and (before["column"], before["partitions"]) == (after["column"], after["partitions"])
        and before["days"][0] <= after["days"][0]
        and after["days"][1] <= before["days"][1]
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
    snapshot_id: int | None = None,
) -> None:
    """Remember that the table's snapshot ``snapshot_id`` (the one this build wrote; the
    current one when not given) was built from ``built``, and the ``checks`` it passed the
    build with when given (table properties: a metadata commit, no new snapshot). A record
    names its snapshot: one another run wrote since never matches it."""
    table = lakehouse.table(identifier)
    if snapshot_id is None:
        snapshot_id = table.current_snapshot().snapshot_id
    properties = {PROPERTY: json.dumps({"snapshot_id": snapshot_id, "inputs": built})}
    if checks:
        properties |= judged.as_property(snapshot_id, checks)
    with table.transaction() as txn:
        txn.set_properties(properties)


def unchanged(
    context: dg.AssetExecutionContext,
    lakehouse: Lakehouse,
    identifier: str,
    audit: Audit,
    source: str,
    window: Window | None = None,
) -> dg.MaterializeResult:
    """The result of a step that found nothing to do: the table as it is, the same data
    version, and the check results its snapshot was published with. They are judged again
    on the current rows when none were recorded (a table written before they were), or when
    they were judged against another span of the daily partitions than ``window``'s (the
    partition bounds were set otherwise since, or a live source's last day moved on): the
    same rows are outside them or not depending on it."""
    table = lakehouse.table(identifier)
    written = described(table, identifier)
    checks = judged.recorded(table)
    if checks is None or (window is not None and _other_span(checks, window)):
        checks = audit(Staged(identifier, table.transaction(), table.io))
    return dg.MaterializeResult(
        data_version=dg.DataVersion(str(written.snapshot_id)),
        metadata={
            "dagster/row_count": written.total_rows,
            "iceberg_snapshot_id": str(written.snapshot_id),
            **skipped(context, f"{source} unchanged since this snapshot was written"),
        },
        check_results=checks,
    )


def _other_span(checks: Sequence[dg.AssetCheckResult], window: Window) -> bool:
    """A count of rows outside the partitions judged against another span than the
    window's, or recorded before the span was recorded with it."""
    spans = {(c.metadata or {}).get(SPAN) for c in checks if c.check_name == OUTSIDE}
    return any(span is None or span.value != window.span for span in spans)

"""What the demo journey built, printed at its end."""

from __future__ import annotations

from .resources import resources_for


def print_summary() -> None:
    lakehouse = resources_for("local")["lakehouse"]
    catalog = lakehouse.catalog()
    print("\nIceberg tables (current snapshot):")
    for namespace in ("bronze", "silver", "gold"):
        for ident in sorted(catalog.list_tables(namespace)):
            name = ".".join(ident)
            table = catalog.load_table(name)
            snap = table.current_snapshot()
            rows = int(snap.summary["total-records"]) if snap and snap.summary else 0
            print(f"  {name:<28} {rows:>8,} rows  snapshot {snap.snapshot_id if snap else '-'}")

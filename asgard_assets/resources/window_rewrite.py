"""DuckDB's plan for the silver SQL's "latest row per key": the window only where a key has
more than one row.

Every silver file numbers each key's versions (``ROW_NUMBER() OVER (PARTITION BY key ORDER
BY updated_at DESC ...)``) and keeps number 1. DuckDB's window operator sorts every row to
do that, though nearly every key has one row (at 100x the demo, 22k of 2.5M machine logs
share a key): that sort was most of the query. Here the keys with more than one row are
found by a hash aggregate and only their rows go through the window; a key with one row
gets number 1, which is what the window gives it. The result is the same, row for row.
At 100x (``bench/scale.py``'s data) machine logs took 1.37 s instead of 2.42, work orders
0.82 s instead of 1.26 (medians of 5; a MATERIALIZED CTE for the rows was slower than
letting DuckDB plan it). Spark runs the file as written: there the split was slower (10.1
s against 9.1).

Only a SELECT of exactly ``*, ROW_NUMBER() OVER (PARTITION BY <columns> ORDER BY ...) AS
name`` from one table or CTE, with at most a WHERE, whose window names only that source's
columns (no subquery, no struct field), is rewritten; any other shape is left as it is.
Assumed, as the silver inputs (Parquet, Arrow) are: keys compare without a collation (the
GROUP BY and the join compare bytes where a window would honour one), and the source gives
the same rows each time it is read (DuckDB computes a CTE read three times once; a
``random()`` filter relies on that). The split is a subquery (it may stand where a UNION's
branch stands): a number named like one of the source's columns comes out renamed
(``k_1``), as DuckDB names a subquery's repeated columns.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

DIALECT = "duckdb"


def split_latest_row_windows(tree: exp.Expression) -> exp.Expression:
    """``tree`` (parsed in any dialect) with each latest-row window numbering only the keys
    that have more than one row; the parts it adds are DuckDB SQL."""
    n = 0  # the CTEs' names: numbered within the statement, so its text is always the same
    for select in list(tree.find_all(exp.Select)):
        window = _numbering(select)
        if window is not None:
            split = _split(select, window, n)
            if select is tree:  # the statement itself: no parent to be replaced in
                tree = split
            else:
                select.replace(split)
            n += 1
    return tree


def _numbering(select: exp.Select) -> exp.Alias | None:
    """The ``ROW_NUMBER() ... AS name`` of a select of the rewritable shape, else None."""
    if len(select.expressions) != 2:
        return None
    star, numbered = select.expressions
    if not isinstance(star, exp.Star) or any(star.args.values()):  # not `* EXCEPT (...)`
        return None
    if not isinstance(numbered, exp.Alias) or not isinstance(numbered.this, exp.Window):
        return None
    window = numbered.this
    keys = window.args.get("partition_by") or []
    if not isinstance(window.this, exp.RowNumber) or not keys:
        return None
    if not all(isinstance(k, exp.Column) for k in keys):
        return None
    source = select.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table):
        return None
    if {arg for arg, value in select.args.items() if value} - {"expressions", "from_", "where"}:
        return None  # a join, GROUP BY, DISTINCT, LIMIT, its own WITH, ...
    # the window is moved onto a CTE of the source's rows: it may name only their columns
    if window.find(exp.Subquery, exp.Select):
        return None
    names = {source.this.alias_or_name}
    if any(c.table and c.table not in names for c in window.find_all(exp.Column)):
        return None  # a struct's field (p.k), a column of an outer query
    return numbered


def _split(select: exp.Select, numbered: exp.Alias, n: int) -> exp.Expression:
    rows, dup = f"_asgard_rows_{n}", f"_asgard_dup_{n}"
    # on the CTE the source's columns are unqualified (its own name was checked above)
    window = numbered.transform(
        lambda node: (
            exp.column(node.name, quoted=node.this.quoted) if isinstance(node, exp.Column) else node
        )
    )
    keys = [k.sql(DIALECT) for k in window.this.args["partition_by"]]
    source = select.copy()
    source.set("expressions", [source.expressions[0]])  # the star
    on = " AND ".join(f"{rows}.{k} IS NOT DISTINCT FROM {dup}.{k}" for k in keys)
    name = exp.to_identifier(numbered.alias).sql(DIALECT)
    return sqlglot.parse_one(
        f"SELECT * FROM ("
        f"WITH {rows} AS ({source.sql(DIALECT)}), "
        f"{dup} AS (SELECT {', '.join(keys)} FROM {rows} GROUP BY ALL HAVING COUNT(*) > 1) "
        f"SELECT {rows}.*, CAST(1 AS BIGINT) AS {name} FROM {rows} ANTI JOIN {dup} ON {on} "
        f"UNION ALL "
        f"SELECT {rows}.*, {window.sql(DIALECT)} FROM {rows} SEMI JOIN {dup} ON {on})",
        read=DIALECT,
    )

"""Run one silver Spark-SQL file in Spark: the job of the SparkApplication at scale.

The SQL text runs as written, except that each input table it names (``bronze.work_orders``)
is bound to a temporary view of that table's rows (in the run's window, when there is one).
Two modes:

- cluster (the SparkApplication): inputs are Iceberg tables of the Spark catalog
  ``--catalog`` (configured by the application's ``sparkConf``); the result replaces the
  target's rows in the window (all rows without one) in one Iceberg commit.
- files (tests, bench): ``--input-files`` maps each input to its current-snapshot Parquet
  files; the result is written as Parquet to ``--output`` (or returned by ``run_local``).

Standalone on purpose: it imports only pyspark, sqlglot and pyarrow, so the Spark image needs
the package's files but not Dagster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import sqlglot
from sqlglot import exp

CATALOG = "asgard"
# Catalog credentials come from the driver's environment (a Kubernetes secret), never from
# the SparkApplication, where anyone who can read the resource would see them.
CATALOG_SECRET_ENV = {
    "ASGARD_CATALOG_TOKEN": "token",
    "ASGARD_CATALOG_CREDENTIAL": "credential",
    "ASGARD_CATALOG_JDBC_USER": "jdbc.user",
    "ASGARD_CATALOG_JDBC_PASSWORD": "jdbc.password",
}
LOCAL_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}


class JobError(Exception):
    """A problem with the job's input (SQL, arguments), named for the person reading the log."""


def view_name(identifier: str) -> str:
    return identifier.replace(".", "__")


def bind_inputs(sql: str, inputs: list[str], name: str = "query") -> str:
    """The SQL text with every reference to an input table replaced by its view name; the
    rest of the text is untouched (sqlglot only locates the references)."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="spark") if s is not None]
    except sqlglot.errors.ParseError as e:
        raise JobError(f"Spark SQL in {name} does not parse: {e}") from e
    if len(statements) != 1:
        raise JobError(f"{name} must hold exactly one SELECT, found {len(statements)}")
    spans = []
    wanted = {i.lower(): i for i in inputs}  # Spark identifiers are case-insensitive
    for table in statements[0].find_all(exp.Table):
        db = table.args.get("db")
        identifier = wanted.get(f"{db.name}.{table.name}".lower()) if db is not None else None
        if identifier:
            spans.append((db.meta["start"], table.this.meta["end"] + 1, identifier))
    found = {identifier for *_, identifier in spans}
    if missing := [i for i in inputs if i not in found]:
        raise JobError(f"{name} does not read its input(s) {', '.join(missing)}")
    for start, end, identifier in sorted(spans, reverse=True):
        sql = sql[:start] + view_name(identifier) + sql[end:]
    return sql


def window_condition(window: list[str] | None) -> str | None:
    """``[column, start, end]`` as Spark SQL: rows with ``start <= column < end``."""
    if not window:
        return None
    column, start, end = window
    return f"{column} >= '{start}' AND {column} < '{end}'"


def local_session():
    """A small local Spark session (tests and bench): two cores, no UI, UTC."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName("asgard-silver-local")
    for key, value in LOCAL_CONF.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


# as in contracts/sources.py (this job runs without the package's dependencies)
LOADED_AT, LOADED_AT_ALIASES = "_asgard_loaded_at", ("_airbyte_extracted_at",)


def _with_loaded_at(frame):
    """Bronze written by Airbyte shows its load time under Asgard's name."""
    if LOADED_AT in frame.columns:
        return frame
    alias = next((a for a in LOADED_AT_ALIASES if a in frame.columns), None)
    return frame.withColumn(LOADED_AT, frame[alias]) if alias else frame


def transform(spark, sql: str, sources: Mapping[str, object], window: list[str] | None, name: str):
    """The DataFrame of ``sql`` with each input bound to ``sources[input]`` (a DataFrame),
    filtered to the window."""
    condition = window_condition(window)
    for identifier, frame in sources.items():
        frame = _with_loaded_at(frame)
        (frame.where(condition) if condition else frame).createOrReplaceTempView(
            view_name(identifier)
        )
    return spark.sql(bind_inputs(sql, list(sources), name))


def _file_sources(spark, inputs: Mapping[str, list[str]]):
    frames = {}
    for identifier, files in inputs.items():
        if not files:
            raise JobError(f"no files given for input {identifier}")
        frames[identifier] = spark.read.option("mergeSchema", "true").parquet(*files)
    return frames


def run_local(
    sql_path: str | Path,
    inputs: Mapping[str, list[str]],
    window: list[str] | None = None,
    spark=None,
):
    """The silver SELECT in ``sql_path`` over Parquet files (``{"bronze.work_orders":
    [files...]}``), in local Spark, as a ``pyarrow.Table``."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    spark = spark or local_session()
    path = Path(sql_path)
    frame = transform(spark, path.read_text(), _file_sources(spark, inputs), window, path.name)
    if hasattr(frame, "toArrow"):  # Spark 4
        return frame.toArrow()
    batches = frame._collect_as_arrow()
    return pa.Table.from_batches(batches, schema=to_arrow_schema(frame.schema))


def apply_catalog_secrets(spark, catalog: str, env: Mapping[str, str]) -> list[str]:
    """Set the catalog's credentials from the environment before the catalog is first used;
    returns the property names set (never their values)."""
    set_props = []
    for var, prop in CATALOG_SECRET_ENV.items():
        if env.get(var):
            spark.conf.set(f"spark.sql.catalog.{catalog}.{prop}", env[var])
            set_props.append(prop)
    return set_props


def write_iceberg(spark, frame, target: str, window: list[str] | None, sql_name: str) -> None:
    """Replace the target's rows in the window (all rows without one) in one Iceberg commit.

    A new windowed table is partitioned by day of the window column, so replacing days is a
    metadata-only delete of whole files (Iceberg rejects a filtered overwrite that would
    split a file). New columns evolve the schema by name, as the local path does.
    """
    from pyspark.sql import functions as F

    properties = {"snapshot-property.asgard.sql": sql_name, "mergeSchema": "true"}
    if window:
        properties["snapshot-property.asgard.window"] = (
            f"{window[0]} in [{window[1][:10]}, {window[2][:10]})"
        )
    writer = frame.writeTo(target).options(**properties)
    if not spark.catalog.tableExists(target):
        writer = writer.tableProperty("write.spark.accept-any-schema", "true")
        if window:
            writer = writer.partitionedBy(F.days(F.col(window[0])))
        writer.create()
    elif window:
        writer.overwrite(F.expr(window_condition(window)))
    else:
        writer.overwrite(F.lit(True))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sql = p.add_mutually_exclusive_group(required=True)
    sql.add_argument("--sql", help="path of the Spark-SQL file")
    sql.add_argument("--sql-text", help="the SQL text itself (the SparkApplication passes it)")
    p.add_argument("--sql-name", help="file name for messages and the snapshot (with --sql-text)")
    p.add_argument("--target", help="Iceberg table to write, e.g. silver.work_orders")
    p.add_argument("--input", action="append", default=[], help="input table (repeat)")
    p.add_argument("--window", nargs=3, metavar=("COLUMN", "START", "END"))
    p.add_argument("--catalog", default=CATALOG, help="Spark catalog holding the tables")
    p.add_argument("--input-files", help='files mode: JSON {"bronze.x": ["a.parquet", ...]}')
    p.add_argument("--output", help="files mode: Parquet folder to write the result to")
    args = p.parse_args(argv)
    if args.input_files is None and not (args.target and args.input):
        p.error("cluster mode needs --target and at least one --input")
    if args.input_files is not None and not args.output:
        p.error("--input-files needs --output")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pyspark.sql import SparkSession

    name = args.sql_name or (Path(args.sql).name if args.sql else "query")
    sql = args.sql_text if args.sql_text is not None else Path(args.sql).read_text()
    try:
        if args.input_files is not None:
            spark = local_session()
            frame = transform(
                spark,
                sql,
                _file_sources(spark, json.loads(args.input_files)),
                args.window,
                name,
            )
            frame.write.mode("overwrite").parquet(args.output)
            print(f"asgard: {name} wrote {spark.read.parquet(args.output).count()} rows")
            return 0
        spark = SparkSession.builder.appName(f"asgard-{args.target}").getOrCreate()
        secrets = apply_catalog_secrets(spark, args.catalog, os.environ)
        print(f"asgard: catalog {args.catalog}, credentials from env: {secrets or 'none'}")
        sources = {i: spark.table(f"{args.catalog}.{i}") for i in args.input}
        frame = transform(spark, sql, sources, args.window, name)
        write_iceberg(spark, frame, f"{args.catalog}.{args.target}", args.window, name)
        print(f"asgard: {name} committed to {args.target}")
        return 0
    except JobError as e:
        print(f"asgard: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

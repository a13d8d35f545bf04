"""dbt-duckdb plugin ``asgard_iceberg``: dbt reads silver from Iceberg and lands gold in it.

``load`` exposes a source as an Arrow dataset over the table's current snapshot files,
local or on S3 (DuckDB scans them in place). ``store`` takes the Parquet file that dbt-duckdb's
``external`` materialization wrote and overwrites the Iceberg table in one commit, so a
failed model never touches the table and the previous snapshot stays readable. A rebuild
whose rows are exactly the current snapshot's commits nothing: the snapshot, gold's data
version, stays, and the feature view and the model see no change (a silver rebuilt with
the same rows retrained the model before).
"""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig

from ..resources import resource
from ..resources.duckdb_bounds import duckdb_bounds
from ..resources.table_reads import ALL_ROWS, current_data_files, table_dataset
from ..resources.write_results import described

# gold is one row per operator: a model this small is compared before it is written
COMPARED_UP_TO = 1_000_000


def same_rows(current: pa.Table, new: pa.Table) -> bool:
    """The same columns in the same order, of the same types (a table read back may hold
    large strings where dbt's file has strings), and the same rows in any order, compared
    exactly. Anything else, a type changed alone included, is a change to write."""
    if current.num_rows != new.num_rows or current.column_names != new.column_names:
        return False
    if [_plain(f.type) for f in current.schema] != [_plain(f.type) for f in new.schema]:
        return False
    try:
        order = [(name, "ascending") for name in new.column_names]
        return current.cast(new.schema).sort_by(order).equals(new.sort_by(order))
    except (pa.ArrowException, TypeError, ValueError):  # e.g. a column that cannot be sorted
        return False


def _plain(kind: pa.DataType) -> pa.DataType:
    return {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}.get(kind, kind)


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict) -> None:
        # dbt runs nodes on worker threads; a SQLite catalog connection stays in its thread
        self._local = threading.local()

    def update_connection_config(self, creds, config: dict) -> None:
        # dbt's DuckDB is bounded like Asgard's others (DuckDB's own default: 80 % of RAM)
        config.update(duckdb_bounds())

    @property
    def lakehouse(self):
        if getattr(self._local, "lakehouse", None) is None:
            self._local.lakehouse = resource("lakehouse")
        return self._local.lakehouse

    def load(self, source_config: SourceConfig):
        # read through the table's FileIO: local disk or object storage, no DuckDB extension
        return self.lakehouse.dataset(f"{source_config.schema}.{source_config.identifier}")

    def store(self, target_config: TargetConfig) -> None:
        relation = target_config.relation
        identifier = f"{relation.schema}.{relation.identifier}"
        parquet = pq.ParquetFile(target_config.location.path)
        rows, table = parquet.metadata.num_rows, self.lakehouse.loaded(identifier)
        if (
            rows <= COMPARED_UP_TO
            and table is not None
            and table.current_snapshot() is not None
            and described(table, identifier).total_rows == rows
        ):  # one load of the table for its row count and its rows
            current = table_dataset(table, current_data_files(table, ALL_ROWS)).to_table()
            if same_rows(current, parquet.read()):
                return
        reader = pa.RecordBatchReader.from_batches(parquet.schema_arrow, parquet.iter_batches())
        self.lakehouse.write(
            identifier,
            reader,
            mode="overwrite",
            properties={"asgard.dbt-model": relation.identifier},
        )

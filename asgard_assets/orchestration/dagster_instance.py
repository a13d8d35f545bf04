"""The Dagster instance: Dagster's SQLite storage, with its SQLAlchemy engines kept between
writes.

Dagster's ``SqliteEventLogStorage`` and ``SqliteRunStorage`` build a new SQLAlchemy engine
for every event they store and dispose of it afterwards, which throws away the dialect set-up
and the compiled-statement cache each time. A range run over the demo's 181 days stores
thousands of events (one materialization per day per partitioned asset, its check
evaluations), and a profile of an unchanged re-run put ~60 % of the run process's CPU in
``store_event``, most of it engine creation and statement compilation.

The storages here keep one engine per database file, and keep the connections to the files
nothing watches open (the index and runs.db; a run's own file is still opened and closed
per write, or per batch, so the webserver's file watcher sees each one). A batch of events
(``store_event_batch``) is written in one transaction per file instead of one per event and
file. Dagster's init of a run's file (~50 ms creating it, ~20 ms checking it) is done once
per process: a new run's file is a copy of an empty one made by Dagster's own init, an
existing one is checked for that one's alembic stamp. The same files, schema and layout, and
the same lock around every write.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import cached_property
from pathlib import Path
from typing import IO

import yaml
from dagster import DagsterInstance
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

# a long-lived process (the webserver, the daemon) reads many runs' files: keep the latest few
ENGINES_KEPT = 16


class _Engines:
    """Engines by connection string, least recently used dropped past ``ENGINES_KEPT``."""

    def __init__(self) -> None:
        self._by_url: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()  # its own: Dagster calls has_table inside _connect

    def get(self, url: str, pooled: bool = False, **kwargs) -> Engine:
        """``pooled``: SQLAlchemy's default pool (connections stay open) instead of a new
        connection per use."""
        with self._lock:
            engine = self._by_url.pop(url, None)
            if engine is None:
                engine = (
                    create_engine(url, **kwargs)
                    if pooled
                    else create_engine(url, poolclass=NullPool, **kwargs)
                )
            self._by_url[url] = engine
            while len(self._by_url) > ENGINES_KEPT:
                self._by_url.popitem(last=False)[1].dispose()
            return engine

    def dispose(self) -> None:
        with self._lock:
            while self._by_url:
                self._by_url.popitem()[1].dispose()


_template: tuple[bytes, str] | None = None
_template_lock = threading.Lock()


def _run_file_template(initdb: Callable[[Engine], None]) -> tuple[bytes, str]:
    """An empty run file as Dagster's ``initdb`` makes it (its schema, its alembic stamp,
    WAL mode), and that stamp: made once per process in a scratch folder."""
    global _template
    with _template_lock:
        if _template is None:
            with tempfile.TemporaryDirectory() as scratch:
                engine = create_engine(create_db_conn_string(scratch, "run"), poolclass=NullPool)
                initdb(engine)
                with engine.connect() as conn:
                    stamp = conn.exec_driver_sql("SELECT version_num FROM alembic_version")
                    revision = stamp.scalar_one()
                engine.dispose()  # the last connection closed: the WAL is checkpointed in
                _template = ((Path(scratch) / "run.db").read_bytes(), revision)
        return _template


class KeptEngineEventLogStorage(SqliteEventLogStorage):
    def __init__(self, *args, **kwargs) -> None:
        self._engines = _Engines()  # before Dagster's __init__: it may connect
        self._batch = threading.local()
        super().__init__(*args, **kwargs)

    def _engine(self, shard: str) -> Engine:
        # In WAL mode the last connection to close checkpoints the file, ~1 ms per write. A
        # run's file needs that: the webserver follows a run by watching its .db file change.
        # Nothing watches the index, which takes most writes: its connections stay open.
        return self._engines.get(
            self.conn_string_for_shard(shard),
            pooled=shard == INDEX_SHARD_NAME,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's own _connect, with the engine kept; inside store_event_batch, the batch's
        # transaction on that file
        batch = getattr(self._batch, "connections", None)
        if batch is not None:
            if shard not in batch:
                batch[shard] = self._batch.stack.enter_context(self._transaction(shard))
            yield batch[shard]
            return
        with self._db_lock, self._transaction(shard) as conn:
            yield conn

    @contextmanager
    def _transaction(self, shard: str) -> Iterator[Connection]:
        engine = self._engine(shard)
        if shard not in self._initialized_dbs:
            if shard == INDEX_SHARD_NAME or not self._run_file_ready(shard, engine):
                self._initdb(engine)
            self._initialized_dbs.add(shard)
        with engine.connect() as conn, conn.begin():
            yield conn

    def prepare(self) -> None:
        """Make this process's empty run file ahead (a warm run process does)."""
        _run_file_template(self._initdb)

    def _run_file_ready(self, shard: str, engine: Engine) -> bool:
        """Dagster's ``_initdb`` of a run's file, once per process instead of once per run
        and process: that init creates the event log's tables and indexes in a new file and
        stamps the alembic revision, reading Dagster's ~350 migration scripts twice (~50 ms,
        in the process that creates the run), and checks an existing file's stamp against
        them (~20 ms, in the run's process). A new file is a copy of the empty one made in
        this process (``_run_file_template``), linked into place, never over a file another
        process made meanwhile; an existing one is ready when it carries the template's
        stamp. False: Dagster's init is needed (an older stamp, no hard links here)."""
        template, revision = _run_file_template(self._initdb)
        path = Path(self.path_for_shard(shard))
        if not path.exists():
            scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            try:
                scratch.write_bytes(template)
                os.link(scratch, path)
                return True
            except FileExistsError:
                pass  # made by another process meanwhile: its stamp is read below
            except OSError:  # a file system without hard links, a full disk
                return False
            finally:
                scratch.unlink(missing_ok=True)
        try:
            with engine.connect() as conn:
                stamp = conn.exec_driver_sql("SELECT version_num FROM alembic_version")
                return stamp.scalar_one_or_none() == revision
        except DBAPIError:  # no stamp yet (its init is under way elsewhere) or no file
            return False

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Dagster's ``store_event`` for each event, in one transaction per database file
        instead of one per event and file (Dagster hands a step's materializations of a
        range of partitions, and a new run's planned events, over as one batch when
        ``DAGSTER_EVENT_BATCH_SIZE`` is set: ``asgard_assets/__init__.py``). A failure rolls
        the batch back and Dagster stores its events one by one."""
        with self._db_lock, ExitStack() as stack:
            # the index is opened first, so it commits last: a run file that fails to commit
            # rolls the index back too, and Dagster's one-by-one retry duplicates nothing
            # (two files are never atomic: an index failing after the run file committed
            # leaves the run's own log with the batch twice, as Dagster's own storing would)
            index = stack.enter_context(self._transaction(INDEX_SHARD_NAME))
            self._batch.connections, self._batch.stack = {INDEX_SHARD_NAME: index}, stack
            try:
                for event in events:
                    self.store_event(event)
            finally:
                del self._batch.connections, self._batch.stack

    def _store_asset_check_evaluation_planned(
        self, event: EventLogEntry, event_id: int | None
    ) -> None:
        # Dagster's, with the event serialized once instead of once per partition, and the
        # rows sent as one executemany instead of a VALUES list compiled anew each time (a
        # range run over 181 days plans each partitioned check 181 times: ~2 s per run)
        planned = event.get_dagster_event().event_specific_data
        subset = planned.partitions_subset
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        keys = subset.get_partition_keys() if subset else [None]
        with self.index_connection() as conn:
            conn.execute(
                AssetCheckExecutionsTable.insert(), [{**row, "partition": key} for key in keys]
            )

    def has_table(self, table_name: str) -> bool:
        # asked for every asset event Dagster stores
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    def wipe(self) -> None:
        with self._db_lock:
            self._engines.dispose()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._engines.dispose()


class KeptEngineRunStorage(SqliteRunStorage):
    @cached_property
    def _engine(self) -> Engine:
        # runs.db is read by polling, not watched: its connections stay open (see above)
        return create_engine(self._conn_string)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        if "_engine" in self.__dict__:
            self._engine.dispose()


# a process opening the storage holds its lock for milliseconds; one holding it longer was
# stopped (Ctrl-Z) or is stuck, and the processes waiting say so
LOCK_PATIENCE_S = 2.0


def _lock_patiently(lock: IO) -> None:
    deadline = time.monotonic() + LOCK_PATIENCE_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
    logging.getLogger(__name__).warning(
        f"waiting for {lock.name}: another process has been opening this Dagster storage "
        f"for {LOCK_PATIENCE_S:.0f} s (stopped? `fuser {lock.name}` names it)"
    )
    fcntl.flock(lock, fcntl.LOCK_EX)


class AsgardSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (same files) with the two storages above."""

    def __init__(self, base_dir: str, inst_data=None) -> None:
        # DagsterSqliteStorage.__init__ with two of its storages replaced, none built twice;
        # one process at a time: each creates the tables it finds missing and stamps their
        # alembic version, and two doing so at once on a new home failed (table exists) or
        # left two alembic heads, which every later process refused
        self.base_dir = base_dir
        Path(base_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(base_dir) / ".asgard-storage.lock", "a") as lock:
            _lock_patiently(lock)
            self._run_storage = KeptEngineRunStorage.from_local(_runs_directory(base_dir))
            self._event_log_storage = KeptEngineEventLogStorage(_event_logs_directory(base_dir))
            self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> AsgardSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class AsgardInstance(DagsterInstance):
    """``instance_class`` in ``dagster.yaml``: Dagster's instance whose default storage, for
    a ``dagster.yaml`` without a ``storage`` section, is ``AsgardSqliteStorage`` in the
    instance's folder (Dagster's hook for that: ``config_defaults``). A ``storage`` section
    (Postgres, say) still wins."""

    @classmethod
    def config_defaults(cls, base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        return {
            **InstanceRef.config_defaults(base_dir),
            "storage": ConfigurableClassData(
                __name__, AsgardSqliteStorage.__name__, yaml.dump({"base_dir": base_dir})
            ),
        }

    @classmethod
    def config_schema(cls) -> dict:
        return {}  # no settings of its own (Dagster asks every instance class for them)

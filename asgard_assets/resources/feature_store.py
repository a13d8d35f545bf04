"""Feast, behind one resource: apply + materialize, point-in-time and online retrieval.

The local and k8s profiles differ only in the store YAML (SQLite vs Redis online store,
local vs S3 registry); the definitions are shared and built in the package
(``asgard_assets/features/definitions.py``), never loaded from a configured path.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import ChainMap
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr, field_validator

from ..contracts.model import ENTITY_KEY, FEATURE_SERVICE, GOLD_TABLE, VIEW
from ..settings import asgard_home

if TYPE_CHECKING:  # feast takes seconds to import: only where it is used
    from feast import Entity, FeatureService, FeatureStore, FeatureView

__all__ = ["ENTITY_KEY", "FEATURE_REPO", "GOLD_TABLE", "VIEW", "FeatureStoreResource"]

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
_ROW = "_asgard_row"
_APPLIED_TAG = "asgard.applied"  # on the registered view: definitions + gold snapshot applied


@dataclass(frozen=True)
class Historical:
    frame: pd.DataFrame  # one row per entity row asked for, in order; nulls where no feature row
    missing: int  # entity rows that had no feature row at their timestamp


@dataclass(frozen=True)
class Online:
    features: dict[str, dict]  # operator_id -> feature values
    unknown: list[str]  # ids the online store has nothing for


@dataclass(frozen=True)
class Applied:
    store: FeatureStore
    fingerprint: str  # of the definitions and the gold snapshot they were materialized from
    changed: bool  # False: the registry already held exactly this, nothing was re-applied


class FeatureStoreResource(dg.ConfigurableResource):
    yaml_file: str = "feature_store.yaml"
    """A store configuration in the package's feature_repo folder (not a path)."""
    columns: list[str] | None = None
    """A subset of the view's columns (a smaller gold table); default all of them."""
    _store: object = PrivateAttr(default=None)
    _reader: object = PrivateAttr(default=None)

    @field_validator("yaml_file")
    @classmethod
    def _in_repo(cls, name: str) -> str:
        if not (FEATURE_REPO / name).is_file() or Path(name).name != name:
            found = sorted(p.name for p in FEATURE_REPO.glob("*.yaml"))
            raise ValueError(f"yaml_file {name!r} is not one of the store configurations {found}")
        return name

    def store(self) -> FeatureStore:
        """One FeatureStore per resource: its registry is cached between calls."""
        if self._store is None:
            from ..features import feast_import  # noqa: F401  (first: see there)

            # isort: split
            from feast import FeatureStore

            (asgard_home() / "feast").mkdir(parents=True, exist_ok=True)  # ${ASGARD_HOME}
            self._store = FeatureStore(
                repo_path=str(FEATURE_REPO), fs_yaml_file=FEATURE_REPO / self.yaml_file
            )
        return self._store

    def definitions(self) -> list[Entity | FeatureView | FeatureService]:
        """The objects ``feast apply`` registers."""
        from ..features.definitions import build

        return build(self.columns)

    def definitions_digest(self, gold_snapshot: str) -> str:
        """What the applied view is a function of, computed without importing Feast (~4 s):
        the definitions' code, the store configuration, the columns, Feast's version and the
        gold snapshot. Equal digests: ``apply_and_materialize`` would find nothing to do."""
        from importlib.metadata import version

        from ..metadata import code_version

        text = json.dumps(
            [
                code_version("features/definitions.py", "contracts/model.py"),
                (FEATURE_REPO / self.yaml_file).read_text(),
                self.columns,
                version("feast"),
                gold_snapshot,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def apply_and_materialize(self, gold_snapshot: str = "", force: bool = False) -> Applied:
        """Apply the definitions and load the latest features into the online store, unless
        the registry already holds these definitions materialized from ``gold_snapshot``."""
        store = self.store()
        objects = self.definitions()
        digest = hashlib.sha256(gold_snapshot.encode())
        for obj in objects:
            digest.update(_without_meta(obj.to_proto().spec).SerializeToString(deterministic=True))
        fingerprint = digest.hexdigest()[:16]
        if gold_snapshot and not force:
            try:
                registered = store.get_feature_view(VIEW, allow_registry_cache=False)
            except Exception:  # noqa: BLE001 - not registered yet (or no registry): apply
                registered = None
            if registered is not None and registered.tags.get(_APPLIED_TAG) == fingerprint:
                return Applied(store, fingerprint, changed=False)
        view = next(o for o in objects if o.name == VIEW and hasattr(o, "ttl"))
        store.apply(objects)
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))
        if gold_snapshot:  # recorded only once materialized: a failed load is redone next run
            view.tags[_APPLIED_TAG] = fingerprint
            store.apply([view])
        return Applied(store, fingerprint, changed=True)

    def _features(self, features: list[str] | None):
        """Feature references, or the model's feature service."""
        return features or self.store().get_feature_service(FEATURE_SERVICE)

    def _names(self, features) -> list[str]:
        if isinstance(features, list):
            return [r.split(":")[1] for r in features]
        return [f.name for p in features.feature_view_projections for f in p.features]

    def historical(self, entity_df: pd.DataFrame, features: list[str] | None = None) -> Historical:
        """Features as of each row's ``event_timestamp`` (point in time), by default the
        model's feature service. Feast's offline stores drop entity rows with no feature
        row; here they come back with nulls and are counted. Other columns of ``entity_df``
        (a label, say) are kept."""
        store = self.store()
        asked = entity_df.reset_index(drop=True).copy()
        asked["event_timestamp"] = pd.to_datetime(asked["event_timestamp"], utc=True)
        asked[_ROW] = range(len(asked))
        refs = self._features(features)
        got = store.get_historical_features(entity_df=asked, features=refs).to_df()
        values = got.drop(columns=[c for c in asked.columns if c != _ROW]).drop_duplicates(_ROW)
        frame = asked.merge(values, on=_ROW, how="left").sort_values(_ROW).drop(columns=_ROW)
        missing = int(frame[self._names(refs)].isna().all(axis=1).sum())
        return Historical(frame.reset_index(drop=True), missing)

    def online(self, operator_ids: list[str]) -> Online:
        """The latest features of the model's feature service for each id: what Feast's
        ``get_online_features`` gives, at a fraction of its cost.

        Built for a long-lived service: the feature service and its view resolve once; a
        miss is one read of the online store (Feast's ``OnlineStore.online_read``) for just
        that view; rows are cached only while the store proves it has not changed since
        they were read (``_OnlineReader``). ``get_online_features`` rebuilds the service
        from registry protos on every call (~30 ms here, most of it type-checking)."""
        return self._online_reader().read(operator_ids)

    def online_cached(self, operator_ids: list[str]) -> Online | None:
        """``online(operator_ids)`` when every id is cached and the store is unchanged since,
        else None: never waits on the store (for a caller on an event loop)."""
        return self._reader.cached(operator_ids) if self._reader is not None else None

    def _online_reader(self) -> _OnlineReader:
        if self._reader is None:
            self._reader = _OnlineReader(self.store())
        return self._reader


class _OnlineReader:
    """Online rows by id, cached no longer than the online store is unchanged.

    Every lookup first asks the store for its version (``_SqliteVersion``: ~10 us) and uses
    cached rows only if they were read at that same version; the version is taken before
    the rows are read, so a write that lands meanwhile makes them stale at the next lookup,
    never served. So a lookup that starts after a materialization has committed sees its
    rows, as Feast's own ``get_online_features`` would. Stores without such a version
    (Redis) are read on every lookup. Feast's SQLite online store shares one connection:
    every store read runs on one thread of its own."""

    MAX_CACHED = 50_000  # ids, known or not; the cache starts over beyond

    def __init__(self, store: FeatureStore) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        self.store = store
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-store")
        service = store.get_feature_service(FEATURE_SERVICE)
        (projection,) = service.feature_view_projections
        self.names = [f.name for f in projection.features]
        self.view = store.get_feature_view(projection.name)
        self.online_store = get_online_store_from_config(store.config.online_store)
        self.path, self.file = None, None  # SQLite: the database and the file read from
        self.version = lambda: None
        if isinstance(self.online_store, SqliteOnlineStore):
            self.path = Path(SqliteOnlineStore._get_db_path(store.config))
            self.version = _SqliteVersion(self.path)
        self.entry: tuple[object, dict[str, dict | None]] = (None, {})  # (version, rows)
        self.storing = threading.Lock()

    def read(self, operator_ids: list[str]) -> Online:
        version = self.version()  # before the rows: a write after this changes it
        at, cache = self.entry
        if version is None or at != version:
            cache = {}
        missing = list(dict.fromkeys(i for i in operator_ids if i not in cache))
        if not missing:
            return self._collect(operator_ids, cache)
        rows = self.thread.submit(self._fetch, missing).result()
        if version is not None:
            with self.storing:  # rows read at ``version`` join only rows read at it
                at, cached = self.entry
                if at == version and len(cached) + len(rows) <= self.MAX_CACHED:
                    cached.update(rows)
                else:
                    self.entry = (version, rows)
        return self._collect(operator_ids, ChainMap(rows, cache))

    def cached(self, operator_ids: list[str]) -> Online | None:
        version = self.version()
        at, cache = self.entry
        if version is None or at != version or not all(i in cache for i in operator_ids):
            return None
        return self._collect(operator_ids, cache)

    @staticmethod
    def _collect(operator_ids: list[str], rows: Mapping[str, dict | None]) -> Online:
        found, unknown = {}, []
        for op in operator_ids:
            row = rows[op]
            if row is None:
                unknown.append(op)
            else:
                found[op] = row
        return Online(found, unknown)

    def _fetch(self, operator_ids: list[str]) -> dict[str, dict | None]:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        keys = [
            EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=i)])
            for i in operator_ids
        ]
        rows = self._online_store().online_read(self.store.config, self.view, keys, self.names)
        out: dict[str, dict | None] = {}
        for op, (_, values) in zip(operator_ids, rows, strict=True):
            row = {n: _python(values.get(n)) for n in self.names} if values else {}
            # Redis answers an unknown key with empty values rather than none
            out[op] = row if any(v is not None for v in row.values()) else None
        return out

    def _online_store(self):
        """Feast's online store; for SQLite, connected to the file at the path now: a
        connection keeps reading a database that was deleted and made anew."""
        if self.path is not None:
            try:
                file = _identity(self.path)
            except OSError:
                file = None
            if file != self.file:
                from feast.infra.online_stores.helpers import get_online_store_from_config

                self.online_store = get_online_store_from_config(self.store.config.online_store)
                self.file = file
        return self.online_store


class _SqliteVersion:
    """The version of a SQLite online store: ``PRAGMA data_version`` on a read-only
    connection of our own, which SQLite changes whenever any other connection commits to
    the file (a materialization, an apply, a teardown), and the file's identity (a
    database deleted and created anew is another file: the connection we hold keeps the
    old one's inode, so the new one cannot reuse it). None when it cannot be told at
    once (no file yet, or a writer holds the lock): the caller then reads the store."""

    def __init__(self, path: Path) -> None:
        self.path, self.file, self.conn = path, None, None
        self.lock = threading.Lock()

    def __call__(self) -> tuple[int, int, int] | None:
        with self.lock:  # one connection, asked from the event loop and worker threads
            try:
                file = _identity(self.path)
                if file != self.file:
                    if self.conn is not None:
                        self.conn.close()
                    self.conn, self.file = None, None
                    conn = sqlite3.connect(
                        f"{self.path.as_uri()}?mode=ro",
                        uri=True,
                        timeout=0,  # busy: answer None at once, never wait on a writer
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    if _identity(self.path) != file:  # replaced while connecting: next time
                        conn.close()
                        return None
                    self.conn, self.file = conn, file
                (version,) = self.conn.execute("PRAGMA data_version").fetchone()
            except (OSError, sqlite3.Error):
                return None
            return (*self.file, version)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _without_meta(message):
    """A proto with every nested ``meta`` (creation and update times, set anew each time an
    object is built) cleared: what is left says what the definition is."""
    for field, value in message.ListFields():
        if field.name == "meta":
            message.ClearField("meta")
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # map<string, string>: no metas inside
        elif field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                _without_meta(item)
    return message


def _python(value) -> object:
    """A Feast ValueProto's Python value (None for a null)."""
    kind = value.WhichOneof("val") if value is not None else None
    return getattr(value, kind) if kind and kind != "null_val" else None

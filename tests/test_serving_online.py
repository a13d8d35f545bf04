"""The inference service's online lookups: cached rows are never staler than the online
store, whatever rewrote it (a materialization, a store deleted and made anew); a store
without a version (Redis) is read every time."""

from datetime import datetime, timedelta

import pandas as pd
import pytest
import redis
from test_gold_features import T1, write_gold
from test_object_storage import redis_url

from asgard_assets.contracts.model import ENTITY_KEY, FEATURE_SERVICE
from asgard_assets.resources.feature_store import FeatureStoreResource

IDS = ["A", "B", "Z"]


@pytest.fixture
def fs(home):
    """A hand-built gold table (``write_gold``) and the feature view over its columns."""
    return FeatureStoreResource(columns=["units_per_hour", "completion_rate", "is_high_performer"])


def gold(units_per_hour: list[float], at: datetime = T1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "operator_id": ["A", "B"],
            "units_per_hour": units_per_hour,
            "completion_rate": [0.5, 0.6],
            "is_high_performer": [0, 0],
            "feature_timestamp": [at, at],  # the same: only the values tell them apart
        }
    )


def feast_online(fs, ids: list[str]) -> dict:
    """Feast's own answer, ``get_online_features``: what the cache must never lag behind."""
    store = fs.store()
    rows = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{ENTITY_KEY: i} for i in ids],
    ).to_dict()
    return dict(zip(rows[ENTITY_KEY], rows["units_per_hour"], strict=True))


def units(online) -> dict:
    return {i: row["units_per_hour"] for i, row in online.features.items()}


def test_cached_rows_follow_every_materialization(fs, monkeypatch):
    write_gold(gold([50.0, 60.0]))
    fs.apply_and_materialize()
    first = fs.online(IDS)
    assert units(first) == {"A": 50.0, "B": 60.0} and first.unknown == ["Z"]

    # unchanged store: served from the cache, without a store read
    reader = fs._reader
    reads: list[list[str]] = []
    fetch = reader._fetch
    monkeypatch.setattr(reader, "_fetch", lambda ids: reads.append(ids) or fetch(ids))
    assert fs.online_cached(IDS) == first and fs.online(IDS) == first and not reads

    # a new materialization: the very next lookup reads the new rows, no wait, no TTL
    write_gold(gold([90.0, 95.0]))
    fs.apply_and_materialize()
    assert fs.online_cached(IDS) is None  # the store changed: nothing cached is trusted
    second = fs.online(IDS)
    assert (
        units(second)
        == {"A": 90.0, "B": 95.0}
        == {k: v for k, v in feast_online(fs, IDS).items() if v is not None}
    )
    assert reads == [IDS] and fs.online_cached(IDS) == second

    # the store deleted and made anew (a new file, as `feast teardown` + apply leave it)
    fs.store().teardown()
    write_gold(gold([10.0, 20.0]))
    fs.apply_and_materialize()
    assert units(fs.online(IDS)) == {"A": 10.0, "B": 20.0}


def test_no_version_means_no_cache(fs, monkeypatch):
    """A store that cannot say its version (Redis, or SQLite while a writer holds its
    lock) is read on every lookup."""
    write_gold(gold([50.0, 60.0]))
    fs.apply_and_materialize()
    fs.online(IDS)
    reader = fs._reader
    monkeypatch.setattr(reader, "version", lambda: None)
    assert fs.online_cached(IDS) is None
    reads: list[list[str]] = []
    fetch = reader._fetch
    monkeypatch.setattr(reader, "_fetch", lambda ids: reads.append(ids) or fetch(ids))
    assert units(fs.online(IDS)) == units(fs.online(IDS)) == {"A": 50.0, "B": 60.0}
    assert len(reads) == 2


@pytest.mark.parametrize("ids", [[], ["Z"], ["A", "A", "Z", "B"]])
def test_lookups_keep_order_and_duplicates(fs, ids):
    write_gold(gold([50.0, 60.0]))
    fs.apply_and_materialize()
    online = fs.online(ids)
    assert list(online.features) == list(dict.fromkeys(i for i in ids if i != "Z"))
    assert online.unknown == [i for i in ids if i == "Z"]


@pytest.mark.redis
def test_a_redis_store_is_read_on_every_lookup(home, tmp_path, monkeypatch):
    """The k8s profile's Redis online store has no version to trust a cache by: every
    lookup reads it, so a new materialization shows at once there too."""
    url = redis_url(db=13)  # not test_object_storage's: both tear their keys down
    parts = redis.connection.parse_url(url)
    monkeypatch.setenv("ASGARD_REDIS", f"{parts['host']}:{parts['port']},db={parts.get('db', 0)}")
    monkeypatch.setenv("ASGARD_FEAST_REGISTRY", str(tmp_path / "registry.db"))
    fs = FeatureStoreResource(
        yaml_file="feature_store.k8s.yaml",
        columns=["units_per_hour", "completion_rate", "is_high_performer"],
    )
    write_gold(gold([50.0, 60.0]))
    fs.apply_and_materialize()
    try:
        first = fs.online(IDS)
        assert units(first) == {"A": 50.0, "B": 60.0} and first.unknown == ["Z"]
        assert fs.online_cached(IDS) is None
        # later rows: Feast's Redis store keeps a row whose timestamp is not older
        write_gold(gold([90.0, 95.0], at=T1 + timedelta(days=1)))
        fs.apply_and_materialize()
        assert units(fs.online(IDS)) == {"A": 90.0, "B": 95.0}
    finally:
        fs.store().teardown()

"""Feast, behind one resource: apply + materialize, point-in-time and online retrieval.

The local and k8s profiles differ only in the store YAML (SQLite vs Redis online store,
local vs S3 registry); the definitions in ``feature_repo/features.py`` are shared.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from ..settings import asgard_home

if TYPE_CHECKING:  # feast takes ~7 s to import: only where it is used
    from feast import Entity, FeatureStore, FeatureView

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
VIEW = "operator_efficiency"
GOLD_TABLE = "gold.operator_features"  # the Iceberg table the view serves
ENTITY_KEY = "operator_id"
_ROW = "_asgard_row"


@dataclass(frozen=True)
class Historical:
    frame: pd.DataFrame  # one row per entity row asked for, in order; nulls where no feature row
    missing: int  # entity rows that had no feature row at their timestamp


@dataclass(frozen=True)
class Online:
    features: dict[str, dict]  # operator_id -> feature values
    unknown: list[str]  # ids the online store has nothing for


class FeatureStoreResource(dg.ConfigurableResource):
    repo_path: str = str(FEATURE_REPO)
    yaml_file: str = "feature_store.yaml"

    def store(self) -> FeatureStore:
        from feast import FeatureStore

        (asgard_home() / "feast").mkdir(parents=True, exist_ok=True)  # ${ASGARD_HOME} in the YAML
        return FeatureStore(
            repo_path=self.repo_path, fs_yaml_file=Path(self.repo_path) / self.yaml_file
        )

    def definitions(self) -> list[Entity | FeatureView]:
        """The objects ``feast apply`` would register from the repo."""
        from feast import Entity, FeatureView

        spec = importlib.util.spec_from_file_location(
            "asgard_feature_repo", Path(self.repo_path) / "features.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return [v for v in vars(module).values() if isinstance(v, Entity | FeatureView)]

    def apply_and_materialize(self) -> FeatureStore:
        store = self.store()
        store.apply(self.definitions())
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))
        return store

    def feature_refs(self, store: FeatureStore | None = None) -> list[str]:

        view = (store or self.store()).get_feature_view(VIEW)
        return [f"{VIEW}:{f.name}" for f in view.features]

    def historical(self, entity_df: pd.DataFrame, features: list[str] | None = None) -> Historical:
        """Features as of each row's ``event_timestamp`` (point in time). Feast's offline
        stores drop entity rows with no feature row; here they come back with nulls and are
        counted."""
        store = self.store()
        asked = entity_df.reset_index(drop=True).copy()
        asked["event_timestamp"] = pd.to_datetime(asked["event_timestamp"], utc=True)
        asked[_ROW] = range(len(asked))
        refs = features or self.feature_refs(store)
        got = store.get_historical_features(entity_df=asked, features=refs).to_df()
        values = got.drop(columns=[c for c in asked.columns if c != _ROW]).drop_duplicates(_ROW)
        frame = asked.merge(values, on=_ROW, how="left").sort_values(_ROW).drop(columns=_ROW)
        names = [r.split(":")[1] for r in refs]
        missing = int(frame[names].isna().all(axis=1).sum())
        return Historical(frame.reset_index(drop=True), missing)

    def online(self, operator_ids: list[str], features: list[str] | None = None) -> Online:
        store = self.store()
        refs = features or self.feature_refs(store)
        rows = store.get_online_features(
            features=refs, entity_rows=[{ENTITY_KEY: i} for i in operator_ids]
        ).to_dict()
        names = [r.split(":")[1] for r in refs]
        found, unknown = {}, []
        for i, op in enumerate(rows[ENTITY_KEY]):
            values = {n: rows[n][i] for n in names}
            if all(v is None for v in values.values()):
                unknown.append(op)
            else:
                found[op] = values
        return Online(found, unknown)

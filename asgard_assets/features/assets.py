"""features/operator_efficiency: the Feast feature view over gold, applied and materialized."""

import dagster as dg

from ..metadata import code_version
from ..resources.feature_store import FEATURE_REPO, GOLD_TABLE, VIEW, FeatureStoreResource
from ..resources.lakehouse import Lakehouse


@dg.asset(
    key=["features", VIEW],
    deps=[dg.AssetKey(["gold", "operator_features"])],
    group_name="features",
    kinds={"feast", "iceberg"},
    code_version=code_version(FEATURE_REPO / "features.py"),
)
def operator_efficiency(
    feature_store: FeatureStoreResource, lakehouse: Lakehouse
) -> dg.MaterializeResult:
    """Registers entity `operator` and feature view `operator_efficiency` (Feast apply) over
    the Iceberg table gold.operator_features, read in place at its current snapshot, then
    loads the latest features into the online store."""
    store = feature_store.apply_and_materialize()
    view = store.get_feature_view(VIEW)
    gold = lakehouse.describe(GOLD_TABLE)
    sample = [
        r[0]
        for r in lakehouse.query(
            f"SELECT operator_id FROM {GOLD_TABLE} ORDER BY 1 LIMIT 5",
            GOLD_TABLE,
        ).fetchall()
    ]
    online = feature_store.online(sample)
    return dg.MaterializeResult(
        metadata={
            "features": dg.MetadataValue.json([f.name for f in view.features]),
            "source": f"iceberg {GOLD_TABLE} (current snapshot, read in place)",
            "gold_snapshot_id": str(gold.snapshot_id),
            "entities": gold.total_rows,
            "online_sample": dg.MetadataValue.json(online.features),
            "registry": store.config.registry.path,
        }
    )

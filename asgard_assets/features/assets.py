"""features/operator_efficiency: the Feast feature view over gold, applied and materialized."""

import dagster as dg

from ..contracts.model import FEATURE_SERVICE, GOLD_TABLE, VIEW
from ..metadata import code_version
from ..resources.feature_store import FeatureStoreResource
from ..resources.lakehouse import Lakehouse


@dg.asset(
    key=["features", VIEW],
    deps=[dg.AssetKey(["gold", "operator_features"])],
    group_name="features",
    kinds={"feast", "iceberg"},
    code_version=code_version("features/definitions.py", "contracts/model.py"),
)
def operator_efficiency(
    feature_store: FeatureStoreResource, lakehouse: Lakehouse
) -> dg.MaterializeResult:
    """Registers entity `operator`, feature view `operator_efficiency` over the Iceberg table
    gold.operator_features (read in place at its current snapshot) and the model's feature
    service (Feast apply), then loads the latest features into the online store. Skipped when
    the registry already holds these definitions loaded from the current gold snapshot."""
    gold = lakehouse.describe(GOLD_TABLE)
    applied = feature_store.apply_and_materialize(str(gold.snapshot_id))
    view = applied.store.get_feature_view(VIEW)
    sample = [
        r[0]
        for r in lakehouse.query(
            f"SELECT operator_id FROM {GOLD_TABLE} ORDER BY 1 LIMIT 5",
            GOLD_TABLE,
        ).fetchall()
    ]
    online = feature_store.online(sample)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(applied.fingerprint),
        metadata={
            "skipped": not applied.changed,
            "features": dg.MetadataValue.json([f.name for f in view.features]),
            "feature_service": FEATURE_SERVICE,
            "source": f"iceberg {GOLD_TABLE} (current snapshot, read in place)",
            "gold_snapshot_id": str(gold.snapshot_id),
            "entities": gold.total_rows,
            "online_sample": dg.MetadataValue.json(online.features),
            "registry": applied.store.config.registry.path,
        },
    )

"""The lakehouse on object storage: the whole journey with its warehouse in an S3 bucket
(moto's S3 server on loopback) and its Iceberg catalog in PostgreSQL keeps every table file
in the bucket and reads them back through pyiceberg's FileIO (no DuckDB extension)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import dagster as dg
import httpx
import pytest
import redis
import sqlalchemy as sa
from conftest import journey_assets, materialize

from asgard_assets.contracts.model import GOLD_TABLE, MODEL_NAME
from asgard_assets.contracts.sources import SOURCE_TABLES
from asgard_assets.orchestration import sensors
from asgard_assets.resources import profile_settings, resource, resources_for
from asgard_assets.resources.deployer import LocalDeployer, free_port
from asgard_assets.resources.feature_store import FeatureStoreResource
from asgard_assets.resources.lakehouse import SECRET_PROPERTIES, IcebergLakehouse

BUCKET = "asgard-lake"
REDIS_DB = 11
TABLE_FILES = (".parquet", ".avro", ".metadata.json")
JOURNEY_TABLES = {
    *(f"{layer}.{t}" for layer in ("bronze", "silver") for t in SOURCE_TABLES),
    GOLD_TABLE,
}


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def bucket_keys(endpoint: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def redis_url(db: int = REDIS_DB) -> str:
    """The machine's Redis server, in a database of its own (Feast's keys name the project)."""
    url = os.environ.get("ASGARD_TEST_REDIS", f"redis://127.0.0.1:6379/{db}")
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI but unreachable at {url}: {e}")
        pytest.skip(f"Redis not reachable: {e}")
    return url


@pytest.mark.postgres
@pytest.mark.redis
def test_journey_on_object_storage(home, postgres_url, s3_endpoint, monkeypatch):
    """bronze -> silver -> gold (dbt) -> Feast -> MLflow -> deployment with the warehouse in
    the bucket and the catalog in PostgreSQL: every table file is in the bucket, none on
    local disk, and every read path reads them back."""
    env = {
        "ASGARD_CATALOG_URI": postgres_url,
        "ASGARD_WAREHOUSE": f"s3://{BUCKET}/warehouse",
        "ASGARD_S3_ENDPOINT": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "asgard-test",
        "AWS_SECRET_ACCESS_KEY": "asgard-test-secret",
        "AWS_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=BUCKET)
    try:
        result = materialize(assets=journey_assets())
        assert result.success
        assert_tables_only_in_the_bucket(home, s3_endpoint, postgres_url)
        assert_reads_from_the_bucket(result)
        assert_feast_on_the_k8s_stores(s3_endpoint, monkeypatch)
    finally:
        LocalDeployer().stop(MODEL_NAME)


def assert_tables_only_in_the_bucket(home: Path, endpoint: str, catalog_uri: str) -> None:
    local = [p for p in home.rglob("*") if p.name.endswith(TABLE_FILES)]
    assert local == []
    assert not (home / "catalog.db").exists() and not (home / "warehouse").exists()
    keys = bucket_keys(endpoint)
    for identifier in JOURNEY_TABLES:
        prefix = f"warehouse/{identifier.replace('.', '/')}/"
        for suffix in TABLE_FILES:
            assert any(k.startswith(prefix) and k.endswith(suffix) for k in keys), (
                f"no {suffix} of {identifier} in the bucket"
            )
    # the layout of Iceberg's JDBC catalog (schema V1), catalog name asgard: what Trino's
    # iceberg.catalog.type=jdbc and Spark's JdbcCatalog read
    engine = sa.create_engine(catalog_uri)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT catalog_name, table_namespace || '.' || table_name, iceberg_type, "
                "metadata_location, previous_metadata_location FROM iceberg_tables"
            )
        ).all()
        namespaces = conn.execute(
            sa.text("SELECT DISTINCT namespace FROM iceberg_namespace_properties")
        ).scalars()
        assert set(namespaces) == {"bronze", "silver", "gold"}
    engine.dispose()
    assert {name for _, name, *_ in rows} == JOURNEY_TABLES
    for catalog, _, kind, location, previous in rows:
        assert (catalog, kind) == ("asgard", "TABLE")
        assert location.startswith(f"s3://{BUCKET}/warehouse/") and location.endswith(
            ".metadata.json"
        )
        assert previous.startswith(f"s3://{BUCKET}/warehouse/")


def assert_reads_from_the_bucket(result: dg.ExecuteInProcessResult) -> None:
    lakehouse = resource("lakehouse")
    # DuckDB over Arrow datasets on the bucket (checks, previews, training's ids)
    silver = lakehouse.query("SELECT count(*) FROM silver.work_orders", "silver.work_orders")
    assert silver.fetchone()[0] == 14_850
    assert lakehouse.query(f"SELECT count(*) FROM {GOLD_TABLE}", GOLD_TABLE).fetchone()[0] == 142
    # the asset checks read the bucket's tables: beyond bronze's demo dirt (WARN), all pass
    checks = result.get_asset_check_evaluations()
    failed = [c for c in checks if not c.passed]
    assert len(checks) > 20 and len(failed) < len(checks)
    assert all(c.asset_key.path[0] == "bronze" for c in failed)
    assert all(c.severity == dg.AssetCheckSeverity.WARN for c in failed)
    # the sensor reads bronze's cursor from the bucket: nothing new in the source
    from asgard_assets.definitions import defs

    context = dg.build_sensor_context(
        resources={"ingestion": resource("ingestion"), "lakehouse": lakehouse}, definitions=defs
    )
    tick = sensors.new_source_rows.evaluate_tick(context)
    assert not tick.run_requests and "up to date" in tick.skip_message
    # Feast read gold from the bucket (IcebergSource) into its online store; the model
    # trained on those features is deployed and serves them
    online = FeatureStoreResource().online(["EMP-001", "EMP-999"])
    assert set(online.features) == {"EMP-001"} and online.unknown == ["EMP-999"]
    deployment = LocalDeployer().current(MODEL_NAME)
    by_id = httpx.post(f"{deployment.url}/predict", json={"operator_ids": ["EMP-001"]}, timeout=60)
    assert by_id.status_code == 200 and by_id.json()["operator_ids"] == ["EMP-001"]


def assert_feast_on_the_k8s_stores(endpoint: str, monkeypatch) -> None:
    """feature_store.k8s.yaml: registry in the bucket, Redis online store, the same source."""
    url = redis.connection.parse_url(redis_url())
    monkeypatch.setenv("ASGARD_FEAST_REGISTRY", f"s3://{BUCKET}/feast/registry.pb")
    monkeypatch.setenv("FEAST_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("ASGARD_REDIS", f"{url['host']}:{url['port']},db={url.get('db', 0)}")
    feast = FeatureStoreResource(yaml_file="feature_store.k8s.yaml")
    store = feast.apply_and_materialize().store
    try:
        assert "feast/registry.pb" in bucket_keys(endpoint)
        source = store.get_data_source("gold_operator_features")
        assert source.catalog_properties["s3.endpoint"] == endpoint
        assert not set(source.catalog_properties) & set(SECRET_PROPERTIES)
        online = feast.online(["EMP-001", "EMP-999"])
        assert set(online.features) == {"EMP-001"} and online.unknown == ["EMP-999"]
    finally:
        store.teardown()


def test_catalog_and_warehouse_are_chosen_independently(tmp_path, monkeypatch):
    monkeypatch.setenv("ASGARD_HOME", str(tmp_path))
    s3 = {"s3_endpoint": "http://minio:9000", "s3_access_key_id": "k", "s3_secret_access_key": "s"}
    sql = IcebergLakehouse(catalog_uri="postgresql://pg/iceberg", warehouse="s3://b/w", **s3)
    rest = IcebergLakehouse(catalog_uri="https://polaris:8181/api/catalog", warehouse="w", **s3)
    local = IcebergLakehouse()
    assert sql.catalog_properties() == {
        "type": "sql",
        "uri": "postgresql://pg/iceberg",
        "warehouse": "s3://b/w",
        "s3.endpoint": "http://minio:9000",
        "s3.access-key-id": "k",
        "s3.secret-access-key": "s",
    }
    assert rest.catalog_properties()["type"] == "rest"
    assert rest.catalog_properties()["s3.endpoint"] == "http://minio:9000"
    assert local.catalog_properties() == {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": (tmp_path / "warehouse").as_uri(),
    }
    assert "s3.secret-access-key" not in sql.write_pyiceberg_config().read_text()


def test_a_relative_warehouse_folder_is_made_absolute(tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.setenv("ASGARD_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    lakehouse = IcebergLakehouse(warehouse="wh")  # ASGARD_WAREHOUSE=wh
    assert lakehouse.catalog_properties()["warehouse"] == (tmp_path / "wh").as_uri()
    lakehouse.write("bronze.probe", pa.table({"id": [1, 2]}).to_reader(), mode="overwrite")
    monkeypatch.chdir(tmp_path / "home")  # another working directory reads the same table
    assert IcebergLakehouse(warehouse="wh").table("bronze.probe").scan().to_arrow().num_rows == 2
    # a REST catalog's warehouse may be a name, not a folder: left as it is
    rest = IcebergLakehouse(catalog_uri="https://polaris:8181/api/catalog", warehouse="wh")
    assert rest.catalog_properties()["warehouse"] == "wh"
    # `asgard` exports it absolute for what it starts elsewhere (`dagster dev` in the repo)
    from asgard_assets.instance import instance_env

    monkeypatch.setenv("ASGARD_WAREHOUSE", "wh")
    assert instance_env()["ASGARD_WAREHOUSE"] == (tmp_path / "home" / "wh").as_uri()


def test_both_profiles_pass_the_s3_settings(monkeypatch):
    for name in profile_settings("k8s"):  # every other k8s setting: any value
        monkeypatch.setenv(name, "x")
    env = {
        "ASGARD_CATALOG_URI": "postgresql://pg/iceberg",
        "ASGARD_WAREHOUSE": "s3://b/w",
        "ASGARD_S3_ENDPOINT": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "eu-west-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for profile in ("local", "k8s"):
        props = resource("lakehouse", profile).catalog_properties()
        assert props["warehouse"] == "s3://b/w" and props["s3.region"] == "eu-west-1"
        assert props["s3.endpoint"] == "http://minio:9000" and props["s3.access-key-id"] == "k"
    assert set(resources_for("k8s")) == set(resources_for("local"))

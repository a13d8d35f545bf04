"""Silver at scale: the Spark-SQL file as a SparkApplication of the Spark Operator.

``SparkOperatorEngine`` renders a ``sparkoperator.k8s.io/v1beta2`` SparkApplication that runs
``silver/spark_job.py`` (in the configured image) on the SQL text, creates it through the
Kubernetes API, streams the driver's log into the Dagster run and waits for the operator's
verdict. Spark reads and writes the tables through Iceberg's ``SparkCatalog`` on the same
catalog and warehouse as the lakehouse resource; credentials reach the Spark pods from
Kubernetes secrets (``envFrom``), never through the SparkApplication itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import urllib3
from pydantic import PrivateAttr

from ..partitions import Window
from ..silver import spark_job
from .lakehouse import Lakehouse
from .spark import SparkSqlEngine
from .write_audit import Audit, audit_published
from .write_results import WriteResult

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
# status.applicationState.state values that end an application (the operator's
# ApplicationStateType in api/v1beta2/sparkapplication_types.go)
COMPLETED, FAILED, SUBMISSION_FAILED = "COMPLETED", "FAILED", "SUBMISSION_FAILED"
TERMINAL = (COMPLETED, FAILED, SUBMISSION_FAILED)
DRIVER_STARTED = ("RUNNING", "SUCCEEDING", "FAILING", COMPLETED, FAILED)
ICEBERG_PACKAGES = (
    "org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.7.1,"
    "org.apache.iceberg:iceberg-aws-bundle:1.7.1"
)
# field -> environment variable, for the k8s profile's factory and its error message
ENV = {
    "namespace": "ASGARD_K8S_NAMESPACE",
    "image": "ASGARD_SPARK_IMAGE",
    "service_account": "ASGARD_SPARK_SERVICE_ACCOUNT",
    "executor_instances": "ASGARD_SPARK_EXECUTORS",
    "executor_memory": "ASGARD_SPARK_EXECUTOR_MEMORY",
    "driver_memory": "ASGARD_SPARK_DRIVER_MEMORY",
    "packages": "ASGARD_SPARK_PACKAGES",
    "env_secrets": "ASGARD_SPARK_ENV_SECRETS",
    "catalog_type": "ASGARD_SPARK_CATALOG_TYPE",
    "catalog_uri": "ASGARD_CATALOG_URI",
    "warehouse": "ASGARD_WAREHOUSE",
    "s3_endpoint": "ASGARD_S3_ENDPOINT",
    "s3_region": "AWS_REGION",
    "api_url": "ASGARD_K8S_API_URL",
}
REQUIRED = ("image", "catalog_uri", "warehouse")


class SparkOperatorEngine(SparkSqlEngine):
    """Scale profile: each silver build is one SparkApplication running the same SQL file."""

    namespace: str = "asgard"
    image: str = ""  # a Spark 3.5 Python image with the asgard package (spark_job.py, sqlglot)
    job_file: str = "local:///opt/asgard/asgard_assets/silver/spark_job.py"
    # the Spark Operator chart's account for Spark pods (may create executor pods)
    service_account: str = "spark-operator-spark"
    spark_version: str = "3.5.3"
    executor_instances: int = 2
    executor_cores: int = 1
    executor_memory: str = "2g"
    driver_cores: int = 1
    driver_memory: str = "1g"
    # Iceberg runtime: Maven coordinates fetched at submit, or "none" when baked into the image
    packages: str = ICEBERG_PACKAGES
    env_secrets: str = "asgard-s3"  # comma-separated Secrets exposed as env to driver/executors
    catalog_type: str = "rest"  # Iceberg SparkCatalog type: rest or jdbc
    catalog_uri: str = ""
    warehouse: str = ""
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    api_url: str = ""  # Kubernetes API; empty: in-cluster config, else kubeconfig
    poll_interval_s: float = 5.0
    pickup_timeout_s: float = 300.0  # an application the operator never picks up fails
    ttl_seconds: int = 86400  # finished applications (and their driver logs) kept a day

    _log: logging.Logger | None = PrivateAttr(default=None)
    _run_id: str = PrivateAttr(default="")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._log = context.log
        self._run_id = context.run_id or ""

    # --- the manifest -------------------------------------------------------------------

    def check_settings(self) -> None:
        missing = [ENV[f] for f in REQUIRED if not str(getattr(self, f)).strip()]
        if missing:
            raise dg.Failure(
                "the Spark Operator engine (ASGARD_PROFILE=k8s) is missing settings: "
                + ", ".join(missing)
            )

    def spark_conf(self) -> dict[str, str]:
        """Spark's Iceberg catalog ``asgard`` on the lakehouse's catalog and warehouse."""
        cat = f"spark.sql.catalog.{spark_job.CATALOG}"
        conf = {
            "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
            cat: "org.apache.iceberg.spark.SparkCatalog",
            f"{cat}.type": self.catalog_type,
            f"{cat}.uri": self.catalog_uri,
            f"{cat}.warehouse": self.warehouse,
            f"{cat}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
            f"{cat}.client.region": self.s3_region,
            "spark.sql.defaultCatalog": spark_job.CATALOG,
            "spark.sql.session.timeZone": "UTC",
        }
        if self.s3_endpoint:  # MinIO and other S3-compatible stores
            conf[f"{cat}.s3.endpoint"] = self.s3_endpoint
            conf[f"{cat}.s3.path-style-access"] = "true"
        if self.packages.strip() not in ("", "none"):
            conf["spark.jars.packages"] = self.packages
            conf["spark.jars.ivy"] = "/tmp/.ivy2"  # the Spark image's home is read-only
        return conf

    def application(
        self, name: str, sql_path: Path, target: str, inputs: list[str], window: Window | None
    ) -> dict:
        """The SparkApplication of one build (schema: ``tests/schemas/sparkapplication.json``)."""
        arguments = ["--sql-name", sql_path.name, "--sql-text", sql_path.read_text()]
        arguments += ["--target", target, "--catalog", spark_job.CATALOG]
        for identifier in inputs:
            arguments += ["--input", identifier]
        if window is not None:
            fmt = "%Y-%m-%d %H:%M:%S"
            arguments += ["--window", window.column, f"{window.start:{fmt}}", f"{window.end:{fmt}}"]
        labels = {
            "app.kubernetes.io/part-of": "asgard",
            "asgard/target": target,
            **({"dagster/run-id": self._run_id} if self._run_id else {}),
        }
        env_from = [
            {"secretRef": {"name": s.strip()}} for s in self.env_secrets.split(",") if s.strip()
        ]
        pod = {"labels": labels, **({"envFrom": env_from} if env_from else {})}
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SparkApplication",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "type": "Python",
                "pythonVersion": "3",
                "mode": "cluster",
                "image": self.image,
                "imagePullPolicy": "IfNotPresent",
                "mainApplicationFile": self.job_file,
                "arguments": arguments,
                "sparkVersion": self.spark_version,
                "sparkConf": self.spark_conf(),
                "restartPolicy": {"type": "Never"},  # Dagster owns retries
                "timeToLiveSeconds": self.ttl_seconds,
                "driver": {
                    "cores": self.driver_cores,
                    "memory": self.driver_memory,
                    "serviceAccount": self.service_account,
                    **pod,
                },
                "executor": {
                    "instances": self.executor_instances,
                    "cores": self.executor_cores,
                    "memory": self.executor_memory,
                    **pod,
                },
            },
        }

    # --- the Kubernetes API -------------------------------------------------------------

    def _api_client(self):
        from kubernetes import client

        from .kubernetes import KubernetesConnection

        return client.ApiClient(KubernetesConnection(api_url=self.api_url).configuration())

    def build(
        self,
        sql_path: Path,
        target: str,
        inputs: list[str],
        lakehouse: Lakehouse,
        window: Window | None = None,
        *,
        key: str | None = None,
        audit: Audit | None = None,
    ) -> WriteResult:
        """Runs the SQL as a SparkApplication. Known gaps against the local engine: the job
        reads the inputs' rows in the window only (no dedup across days by ``key``), and the
        audit judges the snapshot after the job committed it; a failed blocking check rolls
        the table back to its previous snapshot (readers may have seen it meanwhile)."""
        from kubernetes import client

        self.check_settings()
        log = self._log or dg.get_dagster_logger()
        name = f"asgard-{target.replace('.', '-').replace('_', '-')}-{uuid.uuid4().hex[:8]}"
        body = self.application(name, sql_path, target, inputs, window)
        before = lakehouse.snapshot_id(target)
        api = self._api_client()
        where = _public(api.configuration.host)
        crd, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        try:
            crd.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, _request_timeout=(10, 30)
            )
            log.info(f"submitted SparkApplication {self.namespace}/{name} for {target}")
            status = self._wait(crd, core, name, log)
        except client.ApiException as e:
            raise dg.Failure(_api_error(e, where, self.namespace)) from e
        except urllib3.exceptions.HTTPError as e:  # connection refused, timeouts, TLS
            raise dg.Failure(f"cannot reach the Kubernetes API at {where}: {e}") from e
        state = status.get("applicationState", {})
        if state.get("state") != COMPLETED:
            raise dg.Failure(
                f"SparkApplication {self.namespace}/{name} ({sql_path.name} -> {target}) "
                f"ended {state.get('state')}: {state.get('errorMessage') or 'no error message'}",
                metadata={"spark_application": name, "driver_pod": _driver_pod(status) or ""},
            )
        snapshot = lakehouse.table(target).current_snapshot()
        if snapshot is None or snapshot.snapshot_id == before:
            raise dg.Failure(
                f"SparkApplication {name} completed but {target} has no new snapshot: does the "
                "Spark catalog (ASGARD_CATALOG_URI, ASGARD_WAREHOUSE) match the lakehouse's?"
            )
        added = int((snapshot.summary or {}).get("added-records", 0))
        checks = audit_published(lakehouse, target, before, audit)
        return dataclasses.replace(lakehouse.describe(target, added), checks=tuple(checks))

    def _wait(self, crd, core, name: str, log) -> dict:
        """Poll the application until it ends, following the driver's log once it runs."""
        from kubernetes import client

        submitted = time.monotonic()
        followed = False
        while True:
            app = crd.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=(10, 30)
            )
            status = app.get("status") or {}
            state = (status.get("applicationState") or {}).get("state", "")
            pod = _driver_pod(status)
            if pod and not followed and state in DRIVER_STARTED:
                try:
                    self._follow_log(core, pod, log)
                    followed = True
                except client.ApiException as e:
                    if e.status not in (400, 404):  # not started yet / already gone
                        raise
            if state in TERMINAL:
                return status
            if not state and time.monotonic() - submitted > self.pickup_timeout_s:
                raise dg.Failure(
                    f"SparkApplication {self.namespace}/{name} was not picked up by the Spark "
                    f"Operator within {self.pickup_timeout_s:.0f} s: is the operator running "
                    f"and watching namespace {self.namespace}?"
                )
            time.sleep(self.poll_interval_s)

    def _follow_log(self, core, pod: str, log) -> None:
        stream = core.read_namespaced_pod_log(
            pod, self.namespace, follow=True, _preload_content=False, _request_timeout=(10, None)
        )
        try:
            pending = b""
            for chunk in stream.stream(64 * 1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    log.info(f"[{pod}] {line.decode(errors='replace')}")
            if pending:
                log.info(f"[{pod}] {pending.decode(errors='replace')}")
        finally:
            stream.release_conn()


def _driver_pod(status: dict) -> str | None:
    return (status.get("driverInfo") or {}).get("podName")


def _public(url: str) -> str:
    """The URL without credentials or query (safe for messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _api_error(e, where: str, namespace: str) -> str:
    if e.status == 404:
        return (
            f"the Kubernetes API at {where} has no SparkApplication resource in namespace "
            f"{namespace} (is the Spark Operator's CRD {PLURAL}.{GROUP} installed?): {e.reason}"
        )
    if e.status in (401, 403):
        return (
            f"the Kubernetes API at {where} refused the request ({e.status} {e.reason}): the "
            f"code location's service account needs create/get on {PLURAL}.{GROUP} and get on "
            f"pods/log in namespace {namespace}"
        )
    return f"the Kubernetes API at {where} answered {e.status} {e.reason}: {e.body}"


def spark_operator_from_env() -> SparkOperatorEngine:
    """The k8s profile's engine, every setting from its environment variable (``ENV``); a
    required one is an EnvVar set or not, so the profile's settings check names it when it
    is missing, with the others missing, before a run starts."""
    settings = {}
    for field, var in ENV.items():
        if os.environ.get(var):
            settings[field] = (
                dg.EnvVar.int(var) if field == "executor_instances" else dg.EnvVar(var)
            )
        elif field in REQUIRED:
            settings[field] = dg.EnvVar(var)
    return SparkOperatorEngine(**settings)

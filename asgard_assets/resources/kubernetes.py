"""Kubernetes, behind one connection: ``KubernetesDeployer`` serves a model version as one
stable Deployment + Service per model (the k8s profile's ``Deployer``); the image builder
(``resources/image_builder.py``) uses the same connection.

The API is the one named by ``api_url`` when set (a ``kubectl proxy``, or a test's fake
server), else the in-cluster service account, else the kubeconfig.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import yaml

from ..deployments.bundle import VERSION_LABEL, app_name
from .deployer import Deployer, Deployment

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api

APPLY_PATCH = "application/apply-patch+yaml"


class KubernetesConnection(dg.ConfigurableResource):
    """Where the Kubernetes API is and how long to wait for it."""

    api_url: str = ""  # empty: in-cluster service account, else the kubeconfig
    kubeconfig: str = ""  # a kubeconfig file; empty: $KUBECONFIG or ~/.kube/config
    namespace: str = "asgard"
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0

    def configuration(self):
        """The client configuration: ``api_url``, else the pod's service account, else the
        kubeconfig; none of them fails naming what to set."""
        from kubernetes import client, config

        cfg = client.Configuration(host=self.api_url) if self.api_url else client.Configuration()
        if not self.api_url:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                try:
                    config.load_kube_config(
                        config_file=self.kubeconfig or None, client_configuration=cfg
                    )
                except (config.ConfigException, OSError) as e:
                    raise dg.Failure(
                        "no Kubernetes API configured: not in a pod, and no usable kubeconfig "
                        f"({e}); set ASGARD_K8S_API_URL or KUBECONFIG"
                    ) from None
        cfg.retries = 1  # urllib3 retries 3 times by default: 4 connect timeouts in all
        return cfg

    def api_client(self) -> ApiClient:
        """A client for the API, checked to answer: an unreachable API fails here, within
        ~2 connect timeouts, naming the API URL (never credentials)."""
        from kubernetes import client

        cfg = self.configuration()
        api = client.ApiClient(cfg)
        try:
            client.VersionApi(api).get_code(_request_timeout=self.timeout)
        except client.ApiException as e:
            raise dg.Failure(
                f"the Kubernetes API at {cfg.host} answered {e.status} {e.reason}"
            ) from None
        except Exception as e:  # urllib3 and socket errors: the API is not reachable
            raise dg.Failure(
                f"cannot reach the Kubernetes API at {cfg.host}: {_reason(e)}"
            ) from None
        return api

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.read_timeout_s)


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or e  # urllib3's MaxRetryError wraps the cause
    return f"{type(reason).__name__}: {str(reason).split(': ', 1)[-1]}"


def api_message(e) -> str:
    """The API server's own message in an ``ApiException`` (its body is a Status)."""
    try:
        return json.loads(e.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(e.body or "")[:500]


def last_pod_event(core: CoreV1Api, namespace: str, selector: str, timeout) -> str:
    """The newest event of the pods ``selector`` picks ('none' when there is none yet): why
    a rollout or a build is stuck (image pull, scheduling, crash loop, probe failures)."""
    pods = {
        p.metadata.name
        for p in core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=timeout
        ).items
    }
    events = [
        e
        for e in core.list_namespaced_event(
            namespace, field_selector="involvedObject.kind=Pod", _request_timeout=timeout
        ).items
        if e.involved_object.name in pods
    ]
    if not events:
        return f"none ({len(pods)} pods)"
    epoch = datetime.min.replace(tzinfo=UTC)
    e = max(
        events,
        key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp or epoch,
    )
    return f"pod {e.involved_object.name}: {e.reason}: {e.message}"


class KubernetesDeployer(Deployer, KubernetesConnection):
    """k8s profile: one Deployment + Service per model (stable names, so a new version is a
    rolling update behind the same URL and nothing is left behind), applied server-side
    from the bundle's manifests, the version a label. ``deploy`` returns once the new
    ReplicaSet's pods are all ready; if they are not within ``rollout_timeout_s`` it fails
    naming the last pod event (with maxUnavailable 0 the previous version keeps serving)."""

    field_manager: str = "asgard"
    rollout_timeout_s: float = 600.0
    poll_s: float = 2.0

    def _apis(self):
        from kubernetes import client

        api = self.api_client()
        return client.AppsV1Api(api), client.CoreV1Api(api)

    def current(self, model: str) -> Deployment | None:
        apps, core = self._apis()
        return self._live(apps, core, model)

    def _live(self, apps, core, model: str) -> Deployment | None:
        from kubernetes.client import ApiException

        name = app_name(model)
        try:
            live = apps.read_namespaced_deployment(
                name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        version = (live.metadata.labels or {}).get(VERSION_LABEL, "")
        created = live.metadata.creation_timestamp
        return Deployment(
            model,
            version,
            self._url(core, name),
            started_at=created.isoformat() if created else "",
        )

    def _url(self, core, name: str) -> str:
        """The Service's address ('' when it is gone): the cluster DNS name, or a load
        balancer's ingress."""
        from kubernetes.client import ApiException

        try:
            svc = core.read_namespaced_service(name, self.namespace, _request_timeout=self.timeout)
        except ApiException as e:
            if e.status == 404:
                return ""
            raise
        port = svc.spec.ports[0].port
        balancer = svc.status.load_balancer if svc.status else None
        ingress = (balancer.ingress if balancer else None) or []
        if svc.spec.type == "LoadBalancer" and ingress:
            host = ingress[0].ip or ingress[0].hostname
        else:
            host = f"{name}.{self.namespace}.svc.cluster.local"
        return f"http://{host}" + ("" if port == 80 else f":{port}")

    def deploy(self, model: str, version: str, bundle: Path) -> tuple[Deployment, bool]:
        from kubernetes.client import ApiException

        apps, core = self._apis()
        name = app_name(model)
        previous = self._live(apps, core, model)
        if previous and previous.version == version and self._rolled_out(apps, name) is None:
            return previous, False
        objects = {}
        for path in sorted((bundle / "k8s").glob("*.yaml")):
            obj = yaml.safe_load(path.read_text())
            obj["metadata"]["namespace"] = self.namespace  # the deployer's namespace wins
            objects[obj["kind"]] = obj
        missing = {"Deployment", "Service"} - objects.keys()
        if missing:
            raise dg.Failure(f"bundle {bundle} has no {', '.join(sorted(missing))} manifest")
        apply = {
            "Deployment": apps.patch_namespaced_deployment,
            "Service": core.patch_namespaced_service,
        }
        for kind in ("Service", "Deployment"):  # the URL first: it never changes
            obj = objects[kind]
            try:
                apply[kind](
                    obj["metadata"]["name"],
                    self.namespace,
                    obj,
                    field_manager=self.field_manager,
                    force=True,  # Asgard owns these fields, even if someone kubectl-edited them
                    _content_type=APPLY_PATCH,
                    _request_timeout=self.timeout,
                )
            except ApiException as e:
                raise dg.Failure(
                    f"applying {kind} {self.namespace}/{obj['metadata']['name']} was refused: "
                    f"{e.status} {e.reason}: {api_message(e)}"
                ) from None
        self._wait(apps, core, name, version)
        return self._live(apps, core, model), True

    def _rolled_out(self, apps, name: str) -> str | None:
        """None when the Deployment's current generation is fully rolled out, else what it
        is waiting for (as ``kubectl rollout status`` judges it)."""
        d = apps.read_namespaced_deployment_status(
            name, self.namespace, _request_timeout=self.timeout
        )
        want, s = d.spec.replicas, d.status
        if (s.observed_generation or 0) < d.metadata.generation:
            return "the controller has not seen the new spec yet"
        for cond in s.conditions or []:
            if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                return f"progress deadline exceeded: {cond.message}"
        if (s.updated_replicas or 0) < want:
            return f"{s.updated_replicas or 0} of {want} replicas updated"
        if (s.replicas or 0) > (s.updated_replicas or 0):
            return f"{s.replicas - s.updated_replicas} old replicas pending termination"
        if (s.ready_replicas or 0) < want or (s.available_replicas or 0) < want:
            return f"{s.ready_replicas or 0} of {want} updated replicas ready"
        return None

    def _wait(self, apps, core, name: str, version: str) -> None:
        deadline = time.monotonic() + self.rollout_timeout_s
        while (waiting := self._rolled_out(apps, name)) is not None:
            if "progress deadline exceeded" in waiting or time.monotonic() > deadline:
                event = last_pod_event(
                    core,
                    self.namespace,
                    f"app.kubernetes.io/name={name},{VERSION_LABEL}={version}",
                    self.timeout,
                )
                raise dg.Failure(
                    f"{name} v{version} was not rolled out within {self.rollout_timeout_s:g} s "
                    f"({waiting}); last pod event: {event}. The previous version keeps "
                    "serving (RollingUpdate, maxUnavailable 0)."
                )
            time.sleep(self.poll_s)

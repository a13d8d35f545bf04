"""The k8s profile at its boundary (no live cluster here): every manifest Asgard ships or
renders, validated against the Kubernetes schema; the deployer and the image builder
driven against a loopback fake API server that answers with the kubernetes client's own
models; the build context on a real S3 server (moto)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import dagster as dg
import httpx
import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s

from asgard_assets.contracts.model import MODEL_NAME
from asgard_assets.deployments.bundle import (
    MODEL_DIR,
    VERSION_LABEL,
    BundleSpec,
    manifests,
    write_bundle,
)
from asgard_assets.resources.deployer import free_port
from asgard_assets.resources.image_builder import (
    KANIKO_IMAGE,
    KubernetesImageBuilder,
    LocalImageBuilder,
)
from asgard_assets.resources.kubernetes import KubernetesDeployer
from asgard_assets.serving.model import MODEL_FILE, MODEL_META, ServedModel

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.30.0"  # the cluster version docs/kubernetes.md asks for
APP = "operator-efficiency-predictor"
IMAGE = f"registry.local/asgard/{APP}:v7"
NS = "asgard"


def valid(obj: dict) -> dict:
    kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)
    return obj


def with_model(bundle: Path) -> Path:
    """``bundle`` with the files the deploy step's ``ServedModel.save`` adds (their content
    matters only to the service, which ``test_the_image_serves_its_own_copy`` starts)."""
    (bundle / MODEL_DIR).mkdir()
    for name in (MODEL_FILE, MODEL_META):
        (bundle / MODEL_DIR / name).write_text("{}")
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    spec = BundleSpec(MODEL_NAME, "7", image=IMAGE, replicas=2)
    return with_model(write_bundle(spec, tmp_path_factory.mktemp("bundle") / "v7"))


def image_env(bundle: Path) -> dict[str, str]:
    """The Dockerfile's ENV, with the image's /app being ``bundle``."""
    text = (bundle / "Dockerfile").read_text().replace("\\\n", " ")
    pairs = [p for line in text.splitlines() if line.startswith("ENV ") for p in line.split()[1:]]
    return {k: v.replace("/app", str(bundle)) for k, v in (p.split("=", 1) for p in pairs)}


# --- manifests -----------------------------------------------------------------------------


def test_every_shipped_manifest_is_valid_kubernetes():
    kinds = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            kinds.append(valid(obj)["kind"])
    assert sorted(kinds) == ["ConfigMap", "Role", "RoleBinding", "ServiceAccount"]


def test_rbac_allows_what_runs_do():
    objs = {o["kind"]: o for o in yaml.safe_load_all((ROOT / "deploy/k8s/rbac.yaml").read_text())}
    allowed = {
        (group, res, verb)
        for rule in objs["Role"]["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        ("apps", "deployments", "patch"),  # server-side apply
        ("apps", "deployments", "get"),
        ("", "services", "patch"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "list"),
        ("sparkoperator.k8s.io", "sparkapplications", "create"),
        ("", "pods/log", "get"),
        ("", "events", "list"),
    }
    assert needed <= allowed
    sa = objs["ServiceAccount"]["metadata"]["name"]
    assert objs["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": NS}
    ]
    values = yaml.safe_load((ROOT / "deploy/dagster-values.yaml").read_text())
    run_pod = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert run_pod["serviceAccountName"] == sa


def test_bundle_manifests_are_valid_and_stable(bundle):
    kinds = [
        valid(yaml.safe_load(p.read_text()))["kind"]
        for p in sorted((bundle / "k8s").glob("*.yaml"))
    ]
    assert kinds == ["Deployment", "Service"]
    deployment, service = manifests(BundleSpec(MODEL_NAME, "7", image=IMAGE, replicas=2))
    v8, _ = manifests(BundleSpec(MODEL_NAME, "8", image=IMAGE.replace("v7", "v8")))
    # one Deployment and Service per model: the name never carries the version, the label does
    assert (
        deployment["metadata"]["name"]
        == v8["metadata"]["name"]
        == service["metadata"]["name"]
        == APP
    )
    assert deployment["metadata"]["labels"][VERSION_LABEL] == "7"
    assert v8["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] == "8"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 2


def test_model_pod_is_locked_down_and_has_what_operator_ids_needs(bundle):
    deployment = yaml.safe_load((bundle / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ASGARD_PROFILE"] == "k8s" and env["ASGARD_MODEL_URI"] == f"models:/{MODEL_NAME}/7"
    assert container["image"] == IMAGE
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    # the online store and the model store: endpoints from the ConfigMap, secrets by reference
    config = yaml.safe_load((ROOT / "deploy/k8s/config.yaml").read_text())
    refs = [next(iter(e.values()))["name"] for e in container["envFrom"]]
    assert refs[0] == config["metadata"]["name"]
    for key in (
        "ASGARD_FEAST_REGISTRY",
        "FEAST_S3_ENDPOINT_URL",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_S3_ENDPOINT_URL",
    ):
        assert config["data"][key]
    assert (bundle / "feature_repo" / "features.py").is_file()
    assert (bundle / "feature_repo" / "feature_store.k8s.yaml").is_file()
    assert not (bundle / "feature_repo" / "data").exists()


def test_every_secret_the_manifests_name_is_created_by_the_guide(bundle):
    """A secret referenced but never created stops a pod from starting."""
    text = "\n".join(
        p.read_text()
        for p in [
            *sorted((bundle / "k8s").glob("*.yaml")),
            ROOT / "deploy/dagster-values.yaml",
            *sorted((ROOT / "deploy/templates").glob("build-*.yaml")),
        ]
    )
    named = set(re.findall(r"\basgard-(?:s3|source|redis|mlflow|airbyte|registry)\b", text))
    guide = (ROOT / "docs" / "kubernetes.md").read_text()
    created = set(re.findall(r"kubectl -n asgard create secret \S+ (asgard-[a-z0-9-]+)", guide))
    assert named and named <= created, named - created
    assert "dagster-postgresql-secret" in guide


def test_the_guide_and_the_config_map_set_what_the_k8s_profile_requires():
    """Following docs/kubernetes.md gives the k8s profile every setting it refuses to start
    without: the Airbyte secret's variables, Spark's required settings in the ConfigMap."""
    from asgard_assets.resources import spark_operator

    guide = (ROOT / "docs" / "kubernetes.md").read_text()
    airbyte = guide.split("create secret generic asgard-airbyte", 1)[1].split("\n#", 1)[0]
    for var in (
        "AIRBYTE_REST_API_URL",
        "AIRBYTE_CONFIGURATION_API_URL",
        "AIRBYTE_WORKSPACE_ID",
        "AIRBYTE_CONNECTION_ID",
    ):
        assert f"--from-literal={var}=" in airbyte, var
    config = yaml.safe_load((ROOT / "deploy/k8s/config.yaml").read_text())["data"]
    for field in spark_operator.REQUIRED:
        assert config.get(spark_operator.ENV[field]), spark_operator.ENV[field]
    # every endpoint in the ConfigMap is a service of the namespaces the guide creates
    hosts = re.findall(r"//([a-z0-9-]+)\.([a-z0-9-]+)\.svc", "\n".join(config.values()))
    assert hosts and {ns for _, ns in hosts} == {"data-platform"}, hosts


def test_the_config_maps_settings_load_the_k8s_resources(monkeypatch):
    """deploy/k8s/config.yaml as the pods' environment (and the guide's secrets, here
    stand-ins): every resource of the k8s profile builds with its values, the image builder
    with the ConfigMap's executor; an executor it does not know is refused by name."""
    from asgard_assets.resources import profile_settings, resource, resources_for

    config = yaml.safe_load((ROOT / "deploy/k8s/config.yaml").read_text())["data"]
    for var, value in config.items():
        monkeypatch.setenv(var, value)
    for var in profile_settings("k8s") - set(config):  # the secrets' variables
        monkeypatch.setenv(var, "https://stand-in.example" if var.endswith("_URL") else "x")
    assert set(resources_for("k8s")) >= {"image_builder", "spark", "dbt", "deployer"}
    assert resource("image_builder", "k8s").executor == config["ASGARD_IMAGE_BUILDER"]
    monkeypatch.setenv("ASGARD_IMAGE_BUILDER", "buildkit")
    assert resource("image_builder", "k8s").executor == "buildkit"
    monkeypatch.setenv("ASGARD_IMAGE_BUILDER", "docker")
    with pytest.raises(ValueError, match="ASGARD_IMAGE_BUILDER='docker': must be one of kaniko"):
        resources_for("k8s")


def test_images_install_the_runtime_lock_without_dev_tools(bundle):
    runtime = (ROOT / "requirements.runtime.lock").read_text()
    pins = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", runtime, re.M))
    assert {"dagster-k8s", "dagster-postgres", "boto3", "feast", "onnxruntime"} <= pins.keys()
    assert not {"pytest", "playwright", "hypothesis", "pyspark", "moto", "ruff"} & pins.keys()
    full = dict(
        re.findall(r"^([a-z0-9_.-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    )
    assert all(full[name] == version for name, version in pins.items())  # the same pins
    assert "requirements.runtime.lock" in (ROOT / "deploy" / "Dockerfile").read_text()
    assert (bundle / "requirements.txt").read_text() == runtime
    dockerfile = (bundle / "Dockerfile").read_text()
    assert f"ASGARD_MODEL_URI=models:/{MODEL_NAME}/7" in dockerfile
    assert "COPY feature_repo" in dockerfile and "USER 10001" in dockerfile
    assert f"COPY {MODEL_DIR} ./{MODEL_DIR}" in dockerfile  # the version is in the image
    assert image_env(bundle)["ASGARD_MODEL_DIR"] == str(bundle / MODEL_DIR)
    tag = yaml.safe_load((ROOT / "deploy/dagster-values.yaml").read_text())[
        "dagster-user-deployments"
    ]["deployments"][0]["image"]["tag"]
    assert tag and tag != "latest"


def test_a_manifest_kubernetes_would_reject_is_caught():
    deployment, _ = manifests(BundleSpec(MODEL_NAME, "1", image="x"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        valid(deployment)


def test_the_image_serves_its_own_copy_of_the_version(journey_home, tmp_path):
    """What the image runs: the service started from the bundle's copy of the package and of
    the model version (the Dockerfile's ENV, /app being the bundle; MLflow unreachable)
    answers /predict by operator_ids, which needs the Feast repo inside the bundle."""
    copy = ServedModel.save(f"models:/{MODEL_NAME}@champion", tmp_path / "resolved")
    version = json.loads((copy / MODEL_META).read_text())["version"]
    bundle = write_bundle(BundleSpec(MODEL_NAME, version, image=IMAGE), tmp_path / "bundle")
    shutil.copytree(copy, bundle / MODEL_DIR)
    assert LocalImageBuilder().build(bundle, IMAGE) == f"models:/{MODEL_NAME}/{version}"
    image = image_env(bundle)
    assert image["ASGARD_MODEL_DIR"] == str(bundle / MODEL_DIR)
    port = free_port()
    env = {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": image["PYTHONPATH"],
        "ASGARD_HOME": str(journey_home),  # the local online store (the image's is Redis)
        "ASGARD_MODEL_URI": image["ASGARD_MODEL_URI"],
        "ASGARD_MODEL_DIR": image["ASGARD_MODEL_DIR"],
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # nothing listens: never asked
        "HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "asgard_assets.serving.app:app", "--port", str(port)],
        cwd=bundle.parent,  # not the repository: only the bundle's copy is importable
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        r = httpx.post(f"{url}/predict", json={"operator_ids": ["EMP-001", "EMP-999"]}, timeout=300)
        assert r.status_code == 200, r.text
        assert r.json()["operator_ids"] == ["EMP-001"] and r.json()["unknown_operator_ids"] == [
            "EMP-999"
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the fake Kubernetes API ---------------------------------------------------------------

API = k8s.ApiClient()
FORBIDDEN = (
    'deployments.apps "x" is forbidden: User "system:serviceaccount:asgard:default" cannot patch'
)
BUILD_LOG = "error building image: RUN pip install -r requirements.txt: exit status 1"


def to_model(data: dict, klass: str):
    """A request body as the client's model (required fields are checked on the way)."""

    class Response:
        pass

    r = Response()
    r.data = json.dumps(data)
    return API.deserialize(r, klass)


def meta(name: str, **kw) -> k8s.V1ObjectMeta:
    return k8s.V1ObjectMeta(name=name, namespace=NS, **kw)


def container_status(state: k8s.V1ContainerState) -> k8s.V1ContainerStatus:
    return k8s.V1ContainerStatus(
        name="c", image="i", image_id="", ready=False, restart_count=0, state=state
    )


class FakeKubernetes(ThreadingHTTPServer):
    """The endpoints Asgard calls. ``rollout``: 'ready' (ready on the second status read) or
    'stuck' (never ready); ``build``: 'succeeded' or 'failed' (on the second read)."""

    def __init__(self, rollout: str = "ready", build: str = "succeeded"):
        super().__init__(("127.0.0.1", 0), Handler)
        self.rollout, self.build = rollout, build
        self.requests: list[dict] = []
        self.objects: dict[tuple[str, str], object] = {}  # (kind, name) -> model
        self.reads: dict[tuple[str, str], int] = {}
        self.pods: list[k8s.V1Pod] = []
        self.events: list[k8s.CoreV1Event] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def deployment_status(self, d: k8s.V1Deployment) -> k8s.V1DeploymentStatus:
        n = self.reads[("Deployment", d.metadata.name)] = (
            self.reads.get(("Deployment", d.metadata.name), 0) + 1
        )
        want = d.spec.replicas
        if self.rollout == "ready" and n > 1:
            return k8s.V1DeploymentStatus(
                observed_generation=d.metadata.generation,
                replicas=want,
                updated_replicas=want,
                ready_replicas=want,
                available_replicas=want,
            )
        # rolling: the new ReplicaSet's pods exist but are not ready
        return k8s.V1DeploymentStatus(
            observed_generation=d.metadata.generation,
            replicas=want + 1,
            updated_replicas=1 if n > 1 else 0,
            ready_replicas=want,
            available_replicas=want,
        )

    def job_status(self, job: k8s.V1Job) -> k8s.V1JobStatus:
        n = self.reads[("Job", job.metadata.name)] = (
            self.reads.get(("Job", job.metadata.name), 0) + 1
        )
        if n == 1:
            return k8s.V1JobStatus(active=1)
        if self.build == "succeeded":
            return k8s.V1JobStatus(succeeded=1)
        return k8s.V1JobStatus(
            failed=1,
            conditions=[
                k8s.V1JobCondition(
                    type="Failed",
                    status="True",
                    reason="BackoffLimitExceeded",
                    message="Job has reached the specified backoff limit",
                )
            ],
        )


class Handler(BaseHTTPRequestHandler):
    server: FakeKubernetes

    def log_message(self, *args):  # quiet
        pass

    def send(self, status: int, obj) -> None:
        body = json.dumps(API.sanitize_for_serialization(obj)).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def fail(self, code: int, reason: str, message: str) -> None:
        status = k8s.V1Status(
            kind="Status",
            api_version="v1",
            status="Failure",
            reason=reason,
            code=code,
            message=message,
        )
        self.send(code, status)

    def not_found(self, what: str) -> None:
        self.fail(404, "NotFound", f"{what} not found")

    def route(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        s = self.server
        s.requests.append(
            {
                "method": method,
                "path": url.path,
                "query": query,
                "content_type": self.headers.get("content-type"),
                "body": body,
            }
        )
        p = url.path
        if p in ("/version", "/version/"):
            return self.send(
                200,
                k8s.VersionInfo(
                    major="1",
                    minor="30",
                    git_version="v1.30.0",
                    build_date="",
                    compiler="gc",
                    git_commit="",
                    git_tree_state="clean",
                    go_version="go1.22",
                    platform="linux/amd64",
                ),
            )
        if m := re.fullmatch(rf"/apis/apps/v1/namespaces/{NS}/deployments/([^/]+)(/status)?", p):
            key = ("Deployment", m[1])
            if method == "PATCH" and s.rollout == "forbidden":
                return self.fail(403, "Forbidden", FORBIDDEN)
            if method == "PATCH":
                new = to_model(body, "V1Deployment")
                old = s.objects.get(key)
                new.metadata.generation = (old.metadata.generation + 1) if old else 1
                new.metadata.creation_timestamp = datetime(2026, 1, 1, tzinfo=UTC)
                s.objects[key] = new
                s.reads.pop(key, None)
                return self.send(200, new)
            if key not in s.objects:
                return self.not_found(f'deployments.apps "{m[1]}"')
            d = s.objects[key]
            if m[2]:
                d.status = s.deployment_status(d)
            return self.send(200, d)
        if m := re.fullmatch(rf"/api/v1/namespaces/{NS}/services/([^/]+)", p):
            key = ("Service", m[1])
            if method == "PATCH":
                s.objects[key] = to_model(body, "V1Service")
            if key not in s.objects:
                return self.not_found(f'services "{m[1]}"')
            return self.send(200, s.objects[key])
        if p == f"/api/v1/namespaces/{NS}/pods":
            wanted = dict(kv.split("=") for kv in query.get("labelSelector", "").split(",") if kv)
            pods = [x for x in s.pods if wanted.items() <= (x.metadata.labels or {}).items()]
            return self.send(200, k8s.V1PodList(items=pods))
        if p == f"/api/v1/namespaces/{NS}/events":
            kind = query.get("fieldSelector", "").removeprefix("involvedObject.kind=")
            return self.send(
                200,
                k8s.CoreV1EventList(
                    items=[e for e in s.events if not kind or e.involved_object.kind == kind]
                ),
            )
        if p == f"/apis/batch/v1/namespaces/{NS}/jobs":
            if method == "POST":
                job = to_model(body, "V1Job")
                job.metadata.name = job.metadata.generate_name + f"x{len(s.objects)}"
                job.status = k8s.V1JobStatus()
                s.objects[("Job", job.metadata.name)] = job
                if s.build == "failed":  # its pod ends with the executor's log tail
                    state = k8s.V1ContainerState(
                        terminated=k8s.V1ContainerStateTerminated(
                            exit_code=1, reason="Error", message=BUILD_LOG
                        )
                    )
                    s.pods.append(
                        k8s.V1Pod(
                            metadata=meta(
                                f"{job.metadata.name}-pod", labels={"job-name": job.metadata.name}
                            ),
                            status=k8s.V1PodStatus(container_statuses=[container_status(state)]),
                        )
                    )
                return self.send(201, job)
            digest = query.get("labelSelector", "").partition("=")[2]
            jobs = [
                o
                for (kind, _), o in s.objects.items()
                if kind == "Job" and o.metadata.labels.get("asgard/context-digest") == digest
            ]
            return self.send(200, k8s.V1JobList(items=jobs))
        if m := re.fullmatch(rf"/apis/batch/v1/namespaces/{NS}/jobs/([^/]+)/status", p):
            job = s.objects[("Job", m[1])]
            job.status = s.job_status(job)
            return self.send(200, job)
        return self.not_found(p)

    def do_GET(self):
        self.route("GET")

    def do_PATCH(self):
        self.route("PATCH")

    def do_POST(self):
        self.route("POST")


@pytest.fixture
def fake_api(request):
    server = FakeKubernetes(**getattr(request, "param", {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def s3():
    """A real S3 API (moto's server) on loopback, with a bucket for build contexts."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    ).create_bucket(Bucket="contexts")
    yield endpoint
    server.stop()


def builder(fake_api, s3, **kw) -> KubernetesImageBuilder:
    return KubernetesImageBuilder(
        api_url=fake_api.url,
        namespace=NS,
        image_repository="registry.local/asgard",
        context_uri="s3://contexts/asgard",
        s3_endpoint=s3,
        s3_access_key_id="k",
        s3_secret_access_key="s",
        poll_s=0.01,
        **kw,
    )


# --- the deployer --------------------------------------------------------------------------


def test_rollout_applies_one_deployment_and_waits_until_ready(fake_api, bundle, tmp_path):
    deployer = KubernetesDeployer(api_url=fake_api.url, namespace=NS, poll_s=0.01)
    assert deployer.current(MODEL_NAME) is None
    deployment, changed = deployer.deploy(MODEL_NAME, "7", bundle)
    assert changed and deployment.version == "7"
    assert deployment.url == f"http://{APP}.{NS}.svc.cluster.local"
    applies = [r for r in fake_api.requests if r["method"] == "PATCH"]
    assert [r["path"].rsplit("/", 2)[1] for r in applies] == ["services", "deployments"]
    for r in applies:  # server-side apply, Asgard's field manager
        assert r["content_type"] == "application/apply-patch+yaml"
        assert r["query"] == {"fieldManager": "asgard", "force": "True"}
        valid(r["body"])
    # it waited: the first status read was not ready, the second was
    assert fake_api.reads[("Deployment", APP)] == 2
    live = deployer.current(MODEL_NAME)
    assert (live.version, live.url) == ("7", deployment.url)

    # the same version again: nothing applied
    n = len(fake_api.requests)
    again, changed = deployer.deploy(MODEL_NAME, "7", bundle)
    assert not changed and again.version == "7"
    assert all(r["method"] == "GET" for r in fake_api.requests[n:])

    # a new version: the same Deployment, rolled to the new label and image
    v8 = write_bundle(BundleSpec(MODEL_NAME, "8", image=IMAGE.replace("v7", "v8")), tmp_path / "v8")
    new, changed = deployer.deploy(MODEL_NAME, "8", v8)
    assert changed and new.version == "8" and new.url == deployment.url
    assert [k for k in fake_api.objects if k[0] == "Deployment"] == [("Deployment", APP)]
    live = fake_api.objects[("Deployment", APP)]
    assert live.metadata.generation == 2
    assert live.spec.template.spec.containers[0].image.endswith(":v8")
    assert deployer.current(MODEL_NAME).version == "8"


@pytest.mark.parametrize("fake_api", [{"rollout": "stuck"}], indirect=True)
def test_rollout_that_never_gets_ready_fails_naming_the_last_pod_event(fake_api, bundle):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pod = k8s.V1Pod(
        metadata=meta(
            f"{APP}-6f7c9-abcde", labels={"app.kubernetes.io/name": APP, VERSION_LABEL: "7"}
        )
    )
    old_pod = k8s.V1Pod(
        metadata=meta(
            f"{APP}-5d4b1-zyxwv", labels={"app.kubernetes.io/name": APP, VERSION_LABEL: "6"}
        )
    )
    fake_api.pods += [pod, old_pod]

    def event(name, obj, kind, reason, message, minutes):
        return k8s.CoreV1Event(
            metadata=meta(name),
            involved_object=k8s.V1ObjectReference(kind=kind, name=obj),
            reason=reason,
            message=message,
            last_timestamp=t0 + timedelta(minutes=minutes),
        )

    fake_api.events += [
        event("e1", pod.metadata.name, "Pod", "Scheduled", "Successfully assigned", 0),
        event(
            "e2",
            pod.metadata.name,
            "Pod",
            "Failed",
            f'Failed to pull image "{IMAGE}": not found',
            2,
        ),
        event(
            "e3", old_pod.metadata.name, "Pod", "Killing", "Stopping container", 3
        ),  # the old version's
        event("e4", "node-1", "Node", "NodeNotReady", "Node is not ready", 4),
    ]
    deployer = KubernetesDeployer(
        api_url=fake_api.url, namespace=NS, poll_s=0.01, rollout_timeout_s=0.2
    )
    with pytest.raises(dg.Failure) as failure:
        deployer.deploy(MODEL_NAME, "7", bundle)
    message = failure.value.description
    assert f"{APP} v7 was not rolled out" in message
    assert (
        f'last pod event: pod {pod.metadata.name}: Failed: Failed to pull image "{IMAGE}": not found'
        in message
    )


@pytest.mark.parametrize("fake_api", [{"rollout": "forbidden"}], indirect=True)
def test_a_refused_apply_fails_with_the_api_servers_message(fake_api, bundle):
    deployer = KubernetesDeployer(api_url=fake_api.url, namespace=NS)
    with pytest.raises(dg.Failure) as failure:
        deployer.deploy(MODEL_NAME, "7", bundle)
    assert failure.value.description == (
        f"applying Deployment {NS}/{APP} was refused: 403 Forbidden: {FORBIDDEN}"
    )


def test_unreachable_api_fails_naming_its_url(bundle):
    url = f"http://127.0.0.1:{free_port()}"
    deployer = KubernetesDeployer(api_url=url, connect_timeout_s=2)
    with pytest.raises(dg.Failure, match=f"cannot reach the Kubernetes API at {url}: .*refused"):
        deployer.deploy(MODEL_NAME, "7", bundle)
    builder = KubernetesImageBuilder(api_url=url, context_uri="s3://b/p", connect_timeout_s=2)
    with pytest.raises(dg.Failure, match=f"cannot reach the Kubernetes API at {url}"):
        builder.build(bundle, IMAGE)


# --- the image builder ---------------------------------------------------------------------


def test_build_job_uploads_the_context_and_pushes_the_image(fake_api, s3, bundle):
    b = builder(fake_api, s3)
    assert b.image_for(MODEL_NAME, "7") == IMAGE
    assert b.build(bundle, IMAGE) == IMAGE
    (post,) = [r for r in fake_api.requests if r["method"] == "POST"]
    job = valid(post["body"])
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == KANIKO_IMAGE
    args = dict(zip(container["args"][::2], container["args"][1::2], strict=True))
    assert args["--destination"] == IMAGE and args["--dockerfile"] == "Dockerfile"
    # the context Kaniko reads is on S3, and it is the bundle
    bucket, _, key = args["--context"].removeprefix("s3://").partition("/")
    assert bucket == "contexts" and key.startswith("asgard/v7-") and key.endswith(".tar.gz")
    data = b._s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
    assert {
        "Dockerfile",
        "requirements.txt",
        "feature_repo/features.py",
        "asgard_assets/serving/app.py",
        "k8s/deployment.yaml",
    } <= names
    assert {"name": "S3_ENDPOINT", "value": s3} in container["env"]
    assert job["spec"]["backoffLimit"] == 0
    # the same bundle again: already built, no second Job
    assert b.build(bundle, IMAGE) == IMAGE
    assert len([r for r in fake_api.requests if r["method"] == "POST"]) == 1


def test_buildkit_job_is_valid_and_reads_the_same_context(fake_api, s3, bundle):
    b = builder(fake_api, s3, executor="buildkit")
    job = valid(b.job("s3://contexts/asgard/v7-abc.tar.gz", "abc", IMAGE))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["buildctl-daemonless.sh"]
    context = next(a for a in container["args"] if a.startswith("context="))
    assert context.startswith(f"context={s3}/contexts/asgard/v7-abc.tar.gz?")  # presigned
    assert f"type=image,name={IMAGE},push=true" in container["args"]


@pytest.mark.parametrize("fake_api", [{"build": "failed"}], indirect=True)
def test_failed_build_names_the_jobs_and_the_pods_message(fake_api, s3, bundle):
    with pytest.raises(dg.Failure) as failure:
        builder(fake_api, s3).build(bundle, IMAGE)
    message = failure.value.description
    assert f"image build Job {NS}/build-{APP}-v7-" in message and f"for {IMAGE} failed" in message
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in message
    assert f"Error (exit 1): {BUILD_LOG}" in message


def test_local_builder_checks_the_bundle(bundle, tmp_path):
    assert LocalImageBuilder().build(bundle, IMAGE) == f"models:/{MODEL_NAME}/7"
    with pytest.raises(dg.Failure, match="runs image .*:v7, not other:v1"):
        LocalImageBuilder().build(bundle, "other:v1")
    broken = write_bundle(BundleSpec(MODEL_NAME, "7", image=IMAGE), tmp_path / "broken")
    (broken / "feature_repo" / "features.py").unlink()
    with pytest.raises(dg.Failure, match=r"lacks feature_repo/features.py \(the Feast definitions"):
        LocalImageBuilder().build(broken, IMAGE)
    # written, but the deploy step has not resolved the version into it: the image's
    # COPY would fail in the cluster, so it is refused here
    unresolved = write_bundle(BundleSpec(MODEL_NAME, "7", image=IMAGE), tmp_path / "unresolved")
    with pytest.raises(dg.Failure, match=r"lacks model/model.onnx \(the model version's ONNX"):
        LocalImageBuilder().build(unresolved, IMAGE)


def test_no_api_configured_says_how_to_configure_one(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    deployer = KubernetesDeployer(kubeconfig=str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(
        dg.Failure, match="no Kubernetes API configured: not in a pod.*ASGARD_K8S_API_URL"
    ):
        deployer.current(MODEL_NAME)

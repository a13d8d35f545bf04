"""The deploy bundle of one model version: what the k8s profile builds and applies.

``<ASGARD_HOME>/deployments/<model>/v<version>/`` holds the Dockerfile, the pinned runtime
requirements, a copy of the package and of the Feast repo (``/predict`` by ``operator_ids``
reads the online store through it), the version itself in ``model/`` (its ONNX form and
input contract, ``ServedModel.save``: the service starts from it without MLflow), and the
Deployment + Service manifests rendered from the templates in ``deploy/templates/``. The
manifests name one stable Deployment and Service per model; the version is a label.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

from ..serving.model import MODEL_FILE, MODEL_META

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TEMPLATES = DEPLOY / "templates"
RUNTIME_LOCK = ROOT / "requirements.runtime.lock"
VERSION_LABEL = "asgard/model-version"
MODEL_DIR = "model"  # the version's copy (serving/model.ServedModel.save)
# what the image must hold for every /predict form (bundle path -> what it is)
REQUIRED = {
    "Dockerfile": "the image's Dockerfile",
    "requirements.txt": "the pinned runtime requirements",
    "asgard_assets/serving/app.py": "the inference service",
    "feature_repo/features.py": "the Feast definitions (operator_ids)",
    "feature_repo/feature_store.k8s.yaml": "the Feast k8s store configuration (operator_ids)",
    f"{MODEL_DIR}/{MODEL_FILE}": "the model version's ONNX form",
    f"{MODEL_DIR}/{MODEL_META}": "the model version's input contract",
    "k8s/deployment.yaml": "the Deployment manifest",
    "k8s/service.yaml": "the Service manifest",
}


class BundleError(ValueError):
    """A bundle that cannot become a working image; the message names what is wrong."""


def app_name(model: str) -> str:
    """The stable Kubernetes name of a model's Deployment, Service and image."""
    return model.replace("_", "-")[:63]


@dataclass(frozen=True)
class BundleSpec:
    model: str
    version: str
    image: str
    namespace: str = "asgard"
    replicas: int = 1
    service_type: str = "ClusterIP"

    @property
    def app(self) -> str:
        return app_name(self.model)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}/{self.version}"

    def values(self) -> dict:
        return {
            "APP": self.app,
            "NAMESPACE": self.namespace,
            "VERSION": self.version,
            "REPLICAS": self.replicas,
            "IMAGE": self.image,
            "MODEL_URI": self.model_uri,
            "SERVICE_TYPE": self.service_type,
        }


def render(template: str, values: dict) -> dict:
    """The object of ``deploy/templates/<template>`` with each ``${NAME}`` replaced by the
    JSON form of its value (JSON scalars are YAML: strings stay strings, whatever they hold)."""
    text = (TEMPLATES / template).read_text()
    return yaml.safe_load(Template(text).substitute({k: json.dumps(v) for k, v in values.items()}))


def manifests(spec: BundleSpec) -> list[dict]:
    """The Kubernetes objects for ``spec``: a Deployment and a Service."""
    return [render(name, spec.values()) for name in ("model-deployment.yaml", "model-service.yaml")]


def write_bundle(spec: BundleSpec, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    dockerfile = (DEPLOY / "model.Dockerfile").read_text().replace("${MODEL_URI}", spec.model_uri)
    (out / "Dockerfile").write_text(dockerfile)
    shutil.copy(RUNTIME_LOCK, out / "requirements.txt")
    ignore = shutil.ignore_patterns("__pycache__", "data")
    for folder in ("asgard_assets", "feature_repo"):
        shutil.copytree(ROOT / folder, out / folder, dirs_exist_ok=True, ignore=ignore)
    k8s = out / "k8s"
    k8s.mkdir(exist_ok=True)
    for obj in manifests(spec):
        (k8s / f"{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    return out


def check_bundle(bundle: Path, image: str) -> str:
    """Check that ``bundle`` holds everything its image needs and that its Deployment runs
    ``image``; returns the model URI it serves. Raises ``BundleError`` naming what is wrong."""
    missing = [
        f"{path} ({what})" for path, what in REQUIRED.items() if not (bundle / path).is_file()
    ]
    if missing:
        raise BundleError(f"deploy bundle {bundle} lacks " + ", ".join(missing))
    deployment = yaml.safe_load((bundle / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if container["image"] != image:
        raise BundleError(f"deploy bundle {bundle} runs image {container['image']}, not {image}")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if not env.get("ASGARD_MODEL_URI"):
        raise BundleError(f"deploy bundle {bundle}: the Deployment sets no ASGARD_MODEL_URI")
    return env["ASGARD_MODEL_URI"]

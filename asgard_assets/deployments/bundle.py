"""The deploy bundle of one model version: what the k8s profile ships and builds.

``<ASGARD_HOME>/deployments/<model>/v<version>/`` holds the Dockerfile, the pinned
requirements, a copy of the package, and the Deployment + Service manifests rendered from
the templates in ``deploy/``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "deploy"


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
        return f"{self.model.replace('_', '-')}-v{self.version}"[:63]

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}/{self.version}"

    def values(self) -> dict[str, str]:
        return {
            "APP": self.app,
            "NAMESPACE": self.namespace,
            "VERSION": self.version,
            "REPLICAS": str(self.replicas),
            "IMAGE": self.image,
            "MODEL_URI": self.model_uri,
            "SERVICE_TYPE": self.service_type,
        }


def manifests(spec: BundleSpec) -> list[dict]:
    """The Kubernetes objects for ``spec``: a Deployment and a Service."""
    out = []
    for name in ("model-deployment.yaml", "model-service.yaml"):
        text = Template((TEMPLATES / "k8s" / name).read_text()).substitute(spec.values())
        out.append(yaml.safe_load(text))
    return out


def write_bundle(spec: BundleSpec, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    dockerfile = (
        (TEMPLATES / "model.Dockerfile").read_text().replace("${MODEL_URI}", spec.model_uri)
    )
    (out / "Dockerfile").write_text(dockerfile)
    shutil.copy(ROOT / "requirements.lock", out / "requirements.txt")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, out / name)
    shutil.copytree(
        ROOT / "asgard_assets",
        out / "asgard_assets",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    k8s = out / "k8s"
    k8s.mkdir(exist_ok=True)
    for obj in manifests(spec):
        (k8s / f"{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    return out

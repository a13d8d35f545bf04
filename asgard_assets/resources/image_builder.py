"""Model images, behind one resource: an ``ImageBuilder`` turns a deploy bundle into the
reference the deployer runs.

``LocalImageBuilder`` builds nothing (the local deployer runs the service from this
checkout): it checks the bundle is complete and returns the model URI it serves.
``KubernetesImageBuilder`` builds and pushes the image in the cluster: the bundle goes to
S3 as a tar.gz build context, a build Job (Kaniko-compatible executor, or rootless BuildKit)
turns it into ``<image_repository>/<model>:v<version>``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import dagster as dg

from ..deployments.bundle import BundleError, app_name, check_bundle, render
from .kubernetes import KubernetesConnection, api_message, last_pod_event

# Upstream Kaniko (GoogleContainerTools) was archived in June 2025. The osscontainertools
# fork is maintained by former contributors, fixes bugs and publishes versioned images;
# Chainguard's fork only publishes `latest` for free. Pinned: the image never moves.
KANIKO_IMAGE = "ghcr.io/osscontainertools/kaniko:v1.28.2"
BUILDKIT_IMAGE = "moby/buildkit:v0.19.0-rootless"
DIGEST_LABEL = "asgard/context-digest"


class ImageBuilder(dg.ConfigurableResource, ABC):
    image_repository: str = "asgard"  # registry and path the images are pushed under

    def image_for(self, model: str, version: str) -> str:
        """``<image_repository>/<model>:v<version>``, the image a version's bundle runs."""
        return f"{self.image_repository.rstrip('/')}/{app_name(model)}:v{version}"

    @abstractmethod
    def build(self, bundle: Path, image: str) -> str:
        """Build ``bundle`` (its Dockerfile and context) as ``image``; returns the reference
        that was pushed (or, locally, what the deployer runs)."""


class LocalImageBuilder(ImageBuilder):
    """Local profile: no image is built (there is no container runtime to run it; the
    ``LocalDeployer`` serves the version from this checkout). Checks that the bundle holds
    everything the image needs and runs ``image``; returns the model URI served."""

    def build(self, bundle: Path, image: str) -> str:
        try:
            return check_bundle(bundle, image)
        except BundleError as e:
            raise dg.Failure(str(e)) from None


def context_tarball(bundle: Path) -> bytes:
    """The bundle as a reproducible tar.gz (sorted, no times or owners): the same bundle
    gives the same bytes, so its digest says whether an image was built from it already."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(bundle)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return gzip.compress(raw.getvalue(), mtime=0)


class KubernetesImageBuilder(ImageBuilder, KubernetesConnection):
    """k8s profile: uploads the bundle to ``context_uri`` (S3) and runs a build Job that
    pushes ``image``. A bundle already built (a succeeded Job with its digest) is not built
    again. Fails with the Job's and the pod's message (the log tail of a failed build)."""

    context_uri: str  # s3://bucket/prefix the build contexts go to
    executor: Literal["kaniko", "buildkit"] = "kaniko"
    kaniko_image: str = KANIKO_IMAGE
    buildkit_image: str = BUILDKIT_IMAGE
    s3_endpoint: str = ""  # empty: AWS S3
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_secret: str = "asgard-s3"  # k8s secret with the executor's S3 credentials
    registry_secret: str = "asgard-registry"  # k8s dockerconfigjson secret to push with
    build_timeout_s: int = 1800
    poll_s: float = 5.0

    def _s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint or None,
            region_name=self.s3_region,
            aws_access_key_id=self.s3_access_key_id or None,
            aws_secret_access_key=self.s3_secret_access_key or None,
        )

    def upload(self, name: str, data: bytes, digest: str) -> str:
        """Puts a build context (tar.gz) on S3; returns its ``s3://`` URI."""
        url = urlparse(self.context_uri)
        if url.scheme != "s3" or not url.netloc:
            raise dg.Failure(f"context_uri {self.context_uri!r} is not s3://<bucket>/<prefix>")
        key = "/".join(p for p in (url.path.strip("/"), f"{name}-{digest[:16]}.tar.gz") if p)
        try:
            self._s3().put_object(Bucket=url.netloc, Key=key, Body=data)
        except Exception as e:  # botocore's errors name the bucket and the cause, no secrets
            raise dg.Failure(
                f"cannot upload the build context to s3://{url.netloc}/{key}: {e}"
            ) from None
        return f"s3://{url.netloc}/{key}"

    def job(self, context: str, digest: str, image: str) -> dict:
        """The build Job (batch/v1) that turns ``context`` into ``image``."""
        name, _, tag = image.rpartition("/")[2].partition(":")
        values = {
            "JOB_PREFIX": f"build-{name}-{tag or 'latest'}-".replace(".", "-")[:50].lower(),
            "NAMESPACE": self.namespace,
            "DIGEST": digest[:63],
            "TIMEOUT": self.build_timeout_s,
            "IMAGE": image,
            "REGISTRY_SECRET": self.registry_secret,
        }
        if self.executor == "kaniko":
            return render(
                "build-kaniko.yaml",
                {
                    **values,
                    "BUILDER_IMAGE": self.kaniko_image,
                    "CONTEXT": context,
                    "S3_ENDPOINT": self.s3_endpoint,
                    "S3_REGION": self.s3_region,
                    "S3_SECRET": self.s3_secret,
                },
            )
        bucket, _, key = context.removeprefix("s3://").partition("/")
        url = self._s3().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.build_timeout_s
        )
        return render(
            "build-buildkit.yaml",
            {
                **values,
                "BUILDER_IMAGE": self.buildkit_image,
                "CONTEXT_OPT": f"context={url}",
                "OUTPUT": f"type=image,name={image},push=true",
            },
        )

    def build(self, bundle: Path, image: str) -> str:
        from kubernetes import client

        try:
            check_bundle(bundle, image)
        except BundleError as e:
            raise dg.Failure(str(e)) from None
        batch = client.BatchV1Api(self.api_client())
        core = client.CoreV1Api(batch.api_client)
        data = context_tarball(bundle)
        digest = hashlib.sha256(data).hexdigest()
        jobs = batch.list_namespaced_job(
            self.namespace,
            label_selector=f"{DIGEST_LABEL}={digest[:63]}",
            _request_timeout=self.timeout,
        ).items
        if any(j.status.succeeded for j in jobs):
            return image  # this very bundle was built and pushed already
        running = [j for j in jobs if not _failed(j) and not j.status.succeeded]
        if running:
            name = running[0].metadata.name
        else:
            context = self.upload(bundle.name, data, digest)
            try:
                created = batch.create_namespaced_job(
                    self.namespace, self.job(context, digest, image), _request_timeout=self.timeout
                )
            except client.ApiException as e:
                raise dg.Failure(
                    f"creating the build Job in {self.namespace} was refused: "
                    f"{e.status} {e.reason}: {api_message(e)}"
                ) from None
            name = created.metadata.name
        self._wait(batch, core, name, image)
        return image

    def _wait(self, batch, core, name: str, image: str) -> None:
        deadline = time.monotonic() + self.build_timeout_s + 60
        while True:
            job = batch.read_namespaced_job_status(
                name, self.namespace, _request_timeout=self.timeout
            )
            if job.status.succeeded:
                return
            failed = _failed(job)
            if failed or time.monotonic() > deadline:
                why = (
                    f"{failed.reason}: {failed.message}"
                    if failed
                    else f"not finished after {self.build_timeout_s} s"
                )
                raise dg.Failure(
                    f"image build Job {self.namespace}/{name} for {image} failed ({why}); "
                    + _pod_message(core, self.namespace, name, self.timeout)
                )
            time.sleep(self.poll_s)


def _failed(job):
    """The Job's Failed condition, or None."""
    return next(
        (c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"),
        None,
    )


def _pod_message(core, namespace: str, job: str, timeout) -> str:
    """What the build pod said: its container's termination (with the log tail, as the
    Job asks), else its waiting reason, else the last pod event."""
    selector = f"job-name={job}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=timeout)
    for pod in pods.items:
        for status in pod.status.container_statuses or []:
            if status.state.terminated:
                t = status.state.terminated
                tail = (t.message or "").strip()[-1500:]
                return f"pod {pod.metadata.name}: {t.reason} (exit {t.exit_code}): {tail}"
            if status.state.waiting and status.state.waiting.reason:
                w = status.state.waiting
                return f"pod {pod.metadata.name}: {w.reason}: {w.message or ''}"
    return "last pod event: " + last_pod_event(core, namespace, selector, timeout)

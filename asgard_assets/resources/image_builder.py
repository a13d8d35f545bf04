"""Model images, behind one resource: an ``ImageBuilder`` turns a deploy bundle into an
image reference the deployer can run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg


class ImageBuilder(dg.ConfigurableResource, ABC):
    @abstractmethod
    def build(self, bundle: Path, image: str) -> str:
        """Build ``bundle`` (its Dockerfile and context) as ``image``; returns the reference
        that was pushed (or, locally, what the deployer runs)."""

"""The ``Ingestion`` resource, whoever does the loading: what the bronze assets and the
sensors ask of it, and what a load returns. ``EmbeddedIngestion`` (``ingestion.py``) reads
the source database itself; ``AirbyteIngestion`` (``airbyte.py``) has Airbyte do it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from ..partitions import Window
from .lakehouse import Lakehouse
from .write_audit import Audit
from .write_results import WriteResult


@dataclass(frozen=True)
class IngestResult:
    write: WriteResult
    mode: str  # "incremental", "full_refresh" or "partition_overwrite"
    cursor_from: datetime | None
    source: str
    quarantined: int = 0
    attempts: int = 1


class Ingestion(dg.ConfigurableResource, ABC):
    """Copies one source table into ``bronze.<table>``; returns what it wrote."""

    @abstractmethod
    def source_cursor(self, table: str) -> datetime | None:
        """The greatest ``updated_at`` in the source table that is not in the future (what a
        sensor compares)."""

    @abstractmethod
    def days(self, table: str, updated_after: datetime | None = None) -> list[str]:
        """Days (``YYYY-MM-DD`` of the partition column) holding rows (updated after
        ``updated_after``, when given)."""

    @abstractmethod
    def ingest(
        self,
        table: str,
        lakehouse: Lakehouse,
        *,
        full_refresh: bool = False,
        window: Window | None = None,
        audit: Audit | None = None,
    ) -> IngestResult:
        """Without a window: rows past the bronze cursor (all of them on ``full_refresh``).
        With one: the source's rows in the window, and every row of their keys, replace
        bronze's rows in the window and of those keys. ``audit`` judges the staged table
        before it is published."""

    def unchanged(self, table: str, lakehouse: Lakehouse, window: Window) -> bool:
        """Whether bronze already holds the source's rows of ``window`` (so a run of it
        has nothing to do). Unknown is False: the run loads."""
        return False

"""Bronze through Airbyte (the ``k8s`` profile): one Airbyte connection copies the source
tables into the Iceberg catalog, and its output tables are ``bronze.<table>``.

Airbyte syncs a whole connection at once, so the first bronze step of a Dagster run
triggers the sync and waits for it (dagster-airbyte's ``AirbyteClient.sync_and_poll``),
and every other bronze step of the same run reuses that job. A daily-partition run
reports the rows bronze holds in its days after the sync; an unpartitioned one the rows
Airbyte committed to its stream. What the sensor and ``asgard demo`` ask (the source's
cursor, the days holding rows) is read from the source itself, as in the embedded path.
See docs/airbyte.md for the connection's settings (Incremental | Append on ``updated_at``,
destination namespace ``bronze``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
import duckdb
from dagster_airbyte import AirbyteWorkspace
from dagster_airbyte.resources import AirbyteClient
from dagster_airbyte.translator import AirbyteConnection
from pydantic import Field, PrivateAttr

from ..partitions import Window
from .ingestion import EmbeddedIngestion
from .ingestion_interface import Ingestion, IngestResult
from .lakehouse import Lakehouse
from .write_audit import Audit, audit_published

MODE = "airbyte_sync"
# AirbyteWorkspace settings for Asgard: an unreachable Airbyte fails the step after 3 tries
# of at most 10 s each (not 4 x 15 s), and a run that finds the connection already syncing
# (another run's, or a parallel step's) waits for that job instead of failing
REQUESTS = {"request_timeout": 10, "request_max_retries": 2, "poll_previous_running_sync": True}
# dagster-airbyte's sync_and_poll ends a failed or cancelled job with this message
_JOB_ENDED = re.compile(r"Job (failed|was cancelled): (\d+)")


@dataclass(frozen=True)
class Sync:
    """One finished Airbyte job: its id, the connection it synced, rows per stream."""

    job_id: int
    connection: AirbyteConnection
    rows: dict[str, int]


class AirbyteIngestion(Ingestion):
    """Triggers and awaits the Airbyte connection's sync; bronze is Airbyte's output."""

    workspace: AirbyteWorkspace
    connection_id: str
    source_url: str = Field(
        description="The source Airbyte reads, for the sensor's cursor and the days with rows."
    )
    streams: dict[str, str] = Field(
        default_factory=dict,
        description="Airbyte stream name -> source table, where they differ (a stream prefix).",
    )
    _run_id: str | None = PrivateAttr(default=None)
    _syncs: dict[str | None, Sync | dg.Failure] = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_id = context.run_id

    def _source(self) -> EmbeddedIngestion:
        return EmbeddedIngestion(source_url=self.source_url)

    def source_cursor(self, table: str) -> datetime | None:
        return self._source().source_cursor(table)

    def days(self, table: str, updated_after: datetime | None = None) -> list[str]:
        return self._source().days(table, updated_after)

    def stream(self, table: str) -> str:
        return next((s for s, t in self.streams.items() if t == table), table)

    def where(self, failed_url: str = "") -> str:
        """Airbyte's API a request went to (its configuration API or its REST API)."""
        api = self.workspace.configuration_api_base_url
        if not (api and failed_url.startswith(api)):
            api = self.workspace.rest_api_base_url
        return f"Airbyte at {api} (connection {self.connection_id})"

    def sync(self) -> Sync:
        """The connection's sync for this run: started and awaited once, then reused (a
        failed one fails every bronze step of the run without being tried again)."""
        if self._run_id not in self._syncs:
            try:
                self._syncs[self._run_id] = self._sync_and_poll()
            except dg.Failure as failure:
                self._syncs[self._run_id] = failure
        found = self._syncs[self._run_id]
        if isinstance(found, dg.Failure):
            raise found
        return found

    def _sync_and_poll(self) -> Sync:
        client = self.workspace.get_client()
        try:
            output = client.sync_and_poll(self.connection_id)
        except dg.Failure as e:
            raise self._failure(client, e) from e
        job_id = int(output.job_details["jobId"])
        stats = _last_attempt(_job_info(client, job_id)).get("streamStats") or []
        rows = {s["streamName"]: int(s["stats"].get("recordsCommitted") or 0) for s in stats}
        return Sync(
            job_id, AirbyteConnection.from_connection_details(output.connection_details), rows
        )

    def _failure(self, client: AirbyteClient, error: dg.Failure) -> dg.Failure:
        """The failure with what Airbyte says about it: the job's own message when a job
        ended badly, the URL when Airbyte could not be reached (never a credential)."""
        message = error.description or ""
        ended = _JOB_ENDED.search(message)
        if ended is None:
            prefix = "cannot reach " if message.startswith("Max retries") else ""
            failed = re.search(r"with url: (\S+)", message)
            return dg.Failure(f"{prefix}{self.where(failed.group(1) if failed else '')}: {message}")
        job_id = int(ended.group(2))
        failures = (_last_attempt(_job_info(client, job_id)).get("failureSummary") or {}).get(
            "failures"
        ) or [{}]
        reason = failures[0].get("externalMessage") or "no reason given"
        return dg.Failure(
            f"Airbyte sync job {job_id} of connection {self.connection_id} "
            f"{ended.group(1)}: {reason}",
            metadata={"airbyte_job_id": job_id, "airbyte_connection_id": self.connection_id},
            allow_retries=False,  # Airbyte already retried its attempts; the step must not
        )

    def ingest(
        self,
        table: str,
        lakehouse: Lakehouse,
        *,
        full_refresh: bool = False,
        window: Window | None = None,
        audit: Audit | None = None,
    ) -> IngestResult:
        if full_refresh:
            raise dg.Failure(
                f"full_refresh is not run through Asgard with Airbyte: refresh the stream "
                f"{self.stream(table)} of connection {self.connection_id} in Airbyte instead",
                allow_retries=False,
            )
        sync = self.sync()
        stream = self.stream(table)
        selected = [s.name for s in sync.connection.streams.values() if s.selected]
        if stream not in selected:
            raise dg.Failure(
                f"Airbyte connection {sync.connection.name} ({self.connection_id}) does not "
                f"sync stream {stream} for bronze.{table}; its streams: {', '.join(selected)}",
                allow_retries=False,
            )
        identifier = f"bronze.{table}"
        if not lakehouse.exists(identifier):
            raise dg.Failure(
                f"Airbyte job {sync.job_id} succeeded but {identifier} is not in the Iceberg "
                "catalog: the connection's destination must write namespace 'bronze' of it",
                allow_retries=False,
            )
        # a partition run: the rows bronze now holds in its days (the sync is not per day)
        rows = (
            sync.rows.get(stream, 0) if window is None else _rows_in(lakehouse, identifier, window)
        )
        source = f"{self.where()} job {sync.job_id}"
        # Airbyte committed already: its snapshot is judged after the fact (no rollback: the
        # sync wrote every stream at once)
        checks = audit_published(lakehouse, identifier, None, audit)
        written = dataclasses.replace(lakehouse.describe(identifier, rows), checks=tuple(checks))
        return IngestResult(written, MODE, None, source)


def _job_info(client: AirbyteClient, job_id: int) -> dict[str, Any]:
    """The configuration API's JobInfoRead (attempts with per-stream stats and failure
    reasons); the REST API's job has only totals. dagster-airbyte reads the same
    ``attempts[-1]...streamStats`` in ``dagster_airbyte.utils.generate_materializations``."""
    return client._single_request(  # noqa: SLF001 - the client's own retrying request
        method="POST",
        url=f"{client.configuration_api_base_url}/jobs/get",
        data={"id": job_id},
    )


def _last_attempt(job_info: dict[str, Any]) -> dict[str, Any]:
    attempts = job_info.get("attempts") or [{}]
    return attempts[-1].get("attempt") or attempts[-1]


def _rows_in(lakehouse: Lakehouse, identifier: str, window: Window) -> int:
    con = duckdb.connect()
    lakehouse.attach(con, [identifier], window)
    return con.execute(f"SELECT count(*) FROM {identifier}").fetchone()[0]

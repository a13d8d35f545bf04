"""Schedules: daily ingestion (the sensors carry new data on through the journey)."""

import dagster as dg

from .jobs import ingest_job

daily_ingest = dg.ScheduleDefinition(
    name="daily_ingest",
    job=ingest_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Incremental load of every source table at 02:00 UTC.",
)

schedules = [daily_ingest]

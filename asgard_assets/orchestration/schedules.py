"""Schedules: at 02:00 UTC, ingest the day that just ended (the daily partition of work
orders and machine logs) and the rows past the cursor of the other tables, into bronze and
silver. The automation and sensors carry it on through the journey."""

import dagster as dg

from .jobs import ingest_job

daily_ingest = dg.build_schedule_from_partitioned_job(
    ingest_job,
    name="daily_ingest",
    hour_of_day=2,
    description="Yesterday's partition of every source table at 02:00 UTC.",
)

schedules = [daily_ingest]

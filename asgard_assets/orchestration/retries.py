"""Retries for the steps that talk to an external system (source database, MLflow, the
deployment target): a blip there should not fail a run. Bad input is not retried: those
steps raise ``dg.Failure(..., allow_retries=False)``, which Dagster fails at once."""

import dagster as dg

EXTERNAL_SYSTEM_RETRY = dg.RetryPolicy(
    max_retries=2, delay=3, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

"""What the demo journey built, printed at its end."""

from __future__ import annotations

import json
from collections.abc import Iterator

# what printing needs, imported with this module (on the demo's warm-up thread, while the
# run's last steps go): the Dagster instance's storage and the SQL catalog (~0.4 s)
import pyiceberg.catalog.sql  # noqa: F401

from .contracts.model import MODEL_NAME
from .orchestration import dagster_instance  # noqa: F401
from .resources import resource
from .resources.deployer import LocalDeployer
from .resources.lakehouse import Lakehouse
from .settings import home_prefix, venv_command


def print_run_end(run_id: str, reported: set[str], succeeded: bool) -> bool:
    """The run's end, from its own events: the step lines the demo did not see, then what
    the run built (it succeeded) or why each step failed. True when a failure was explained."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return report_run_end(instance, run_id, reported, succeeded)


def report_run_end(instance, run_id: str, reported: set[str], succeeded: bool) -> bool:
    print_unreported(instance, run_id, reported)
    if succeeded:
        print_summary(instance, run_id)
        return False
    return print_failures(instance, run_id)


def print_unreported(instance, run_id: str, reported: set[str]) -> None:
    """The step ends `asgard demo` did not see in Dagster's stdout. Dagster mirrors the
    output of a run's steps to stdout through `tail -F` on its captured log and stops that
    tail as soon as the steps end: under load the last lines never reach the file."""
    import dagster as dg

    from .run_log import StepLines, took_of

    kinds = {
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    ended = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    missed = {e.step_key for e in instance.all_logs(run_id, of_type=ended)} - reported
    if not missed:  # the usual case: the run's many materializations are not read
        return
    out = StepLines()
    for entry in instance.all_logs(run_id, of_type=kinds):
        step, event = entry.step_key, entry.dagster_event
        if step not in missed:
            continue
        if event.is_step_materialization:
            mat = event.step_materialization_data.materialization
            out.materialized(step, mat.asset_key.to_user_string())
            if "skipped" in mat.metadata:
                out.skipped(step)
        elif event.is_step_success:
            out.succeeded(step, took_of(event.message))
        elif event.is_step_failure:
            out.failed(step)


def failure_reason(failure) -> str:
    """A step failure in one message: a `dg.Failure`'s description, else the first
    exception under Dagster's wrappers (the step's own error, named by its type)."""
    if failure.user_failure_data is not None and failure.user_failure_data.description:
        return failure.user_failure_data.description.strip()
    error = failure.error
    if error is None:
        return "failed (Dagster recorded no error)"
    while error.cause is not None and (
        error.cls_name.startswith("Dagster") or error.cls_name == "RetryRequestedFromPolicy"
    ):
        error = error.cause
    return error.message.strip()


def print_failures(instance, run_id: str) -> bool:
    """Each failed step and why; False when no step failed."""
    import dagster as dg

    from .run_log import asset_name

    failed = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    if failed:
        print("\nWhy:")
    blocked = failed_checks(instance, run_id) if failed else {}
    for entry in failed:
        failure = entry.dagster_event.event_specific_data
        if failure.error and failure.error.cls_name == "DagsterAssetCheckFailedError":
            # "1 blocking asset check failed": the checks' own descriptions say why
            for line in blocked.get(entry.step_key, []):
                print(f"  {line}")
            if entry.step_key in blocked:
                continue
        print(f"  {asset_name(entry.step_key)}: {failure_reason(failure)}")
    if not_run := abandoned_steps(instance, run_id):
        names = ", ".join(asset_name(step) for step in not_run)
        print(f"Not run, as a step before them failed: {names}")
    return bool(failed)


def abandoned_steps(instance, run_id: str) -> list[str]:
    """The steps Dagster did not start because one they depend on failed (it says so only
    in a log line per step: "Dependencies for step ... failed: [...]. Not executing.")."""
    return [
        entry.step_key
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is None
        and entry.step_key
        and entry.user_message.startswith(f"Dependencies for step {entry.step_key}")
        and entry.user_message.endswith("Not executing.")
    ]


def failed_checks(instance, run_id: str) -> dict[str, list[str]]:
    """The run's failed ERROR-severity checks by step, each as ``asset check: why``."""
    out: dict[str, list[str]] = {}
    for step, check in check_evaluations(instance, run_id):
        if outcome(check) == "failed":
            why = check.description or "failed"
            out.setdefault(step, []).append(
                f"{check.asset_key.to_user_string()} {check.check_name}: {why}"
            )
    return out


def check_evaluations(instance, run_id: str) -> Iterator[tuple[str, object]]:
    """(step, ``AssetCheckEvaluation``) of each check the run evaluated."""
    import dagster as dg

    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        yield entry.step_key, entry.dagster_event.event_specific_data


def outcome(check) -> str:
    """passed, warned (a failed WARN check) or failed (a failed ERROR check)."""
    import dagster as dg

    if check.passed:
        return "passed"
    return "warned" if check.severity == dg.AssetCheckSeverity.WARN else "failed"


def stop_command() -> str:
    """`asgard stop`, for this home (another home's service would be stopped instead)."""
    return f"{home_prefix()}{venv_command('asgard')} stop"


def check_results(instance, run_id: str) -> dict[str, list[str]]:
    """The run's asset checks by outcome: passed, warned, failed (``asset:check`` names)."""
    outcomes: dict[str, list[str]] = {"passed": [], "warned": [], "failed": []}
    for _, check in check_evaluations(instance, run_id):
        outcomes[outcome(check)].append(f"{check.asset_key.to_user_string()}:{check.check_name}")
    return {k: sorted(v) for k, v in outcomes.items()}


def print_checks(instance, run_id: str) -> None:
    results = check_results(instance, run_id)
    print(
        f"\nAsset checks: {len(results['passed'])} passed, {len(results['warned'])} warned, "
        f"{len(results['failed'])} failed"
    )
    for outcome in ("warned", "failed", "passed"):
        if results[outcome]:
            print(f"  {outcome}: {', '.join(results[outcome])}")


def trained_metrics(instance, version: str) -> dict[str, float] | None:
    """The test metrics a model version was trained with, from the materialization that
    registered it (Dagster's own records: no MLflow import, ~2 s)."""
    from .models.checks import MODEL_KEY

    for record in instance.fetch_materializations(MODEL_KEY, limit=100).records:
        metadata = record.asset_materialization.metadata
        trained = metadata.get("model_version")
        if trained is not None and str(trained.value) == version and "accuracy" in metadata:
            return {k: metadata[k].value for k in ("accuracy", "f1", "roc_auc")}
    return None


def champion_before(instance, run_id: str) -> str | None:
    """The champion version when the run's quality gate ran (None: no gate, or none yet)."""
    for _, check in check_evaluations(instance, run_id):
        if check.check_name == "quality_gate":
            before = check.metadata["previous_champion"].value
            return None if before == "none" else str(before)
    return None


def print_summary(instance, run_id: str) -> None:
    """Tables, the served model, the service, the run's check results."""
    lakehouse: Lakehouse = resource("lakehouse")
    catalog = lakehouse.catalog()
    print("\nIceberg tables (current snapshot):")
    for namespace in ("bronze", "silver", "gold"):
        for ident in sorted(catalog.list_tables(namespace)):
            result = lakehouse.describe(".".join(ident))
            print(
                f"  {result.identifier:<28} {result.total_rows:>8,} rows  snapshot {result.snapshot_id}"
            )

    # the deployment serves the champion: the deploy step deploys nothing else
    deployment = LocalDeployer().current(MODEL_NAME)
    if deployment is not None:
        metrics = trained_metrics(instance, deployment.version)
        scores = (
            f": accuracy {metrics['accuracy']:.3f}, f1 {metrics['f1']:.3f}, "
            f"roc_auc {metrics['roc_auc']:.3f}"
            if metrics
            else ""
        )
        print(
            f"\nModel {MODEL_NAME} v{deployment.version} (champion){scores}  "
            f"[MLflow store {resource('mlflow_tracking').uri()}]"
        )
        if (before := champion_before(instance, run_id)) not in (None, deployment.version):
            print(f"  replacing v{before}, the champion before this run")
        body = json.dumps({"operator_ids": ["EMP-001", "EMP-002"]})
        print(
            f"\nInference service: {deployment.url}  (pid {deployment.pid}, docs {deployment.url}/docs)"
        )
        print(
            f"  curl -s -X POST {deployment.url}/predict -H 'content-type: application/json' -d '{body}'"
        )
        print(f"  stop it with: {stop_command()}")
    print_checks(instance, run_id)

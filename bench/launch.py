"""A launched run, from its launch to its end: in a warm process (``warm_worker: true``,
Asgard's default) against Dagster's way, a new process from the code server per run
(``warm_worker: false``), in the same bench run.

Builds a home with `asgard demo`, then for each setting starts `asgard ui` on it and
launches runs through the GraphQL API as a click on Materialize does (the daemon's queue
hands them to the run launcher), one after another with a pause between (as a sensor's
runs come: the next warm process has time to import). Each run's times come from its
events: launched (STARTING) to started (RUN_START, the run's process ready) and started to
ended. The runs: `bronze/materials` (the source has nothing new) and
`models/operator_efficiency_predictor` (gold unchanged: MLflow is asked and no model is
trained), so the steps do the little that a day's runs do besides their work.

    .venv/bin/python bench/launch.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
from journey import ROOT, remove, run_demo, settle

from asgard_assets.resources.deployer import free_port

LOCATION = "asgard_assets.definitions"
ASSETS = (["bronze", "materials"], ["models", "operator_efficiency_predictor"])
LAUNCH = """mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""
STATUS = "query S($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def graphql(url: str, query: str, variables: dict) -> dict:
    response = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60
    )
    response.raise_for_status()
    body = response.json()
    if "errors" in body:
        raise SystemExit(f"GraphQL: {body['errors']}")
    return body["data"]


def start_ui(env: dict, port: int) -> subprocess.Popen:
    ui = subprocess.Popen(
        [str(Path(sys.executable).with_name("asgard")), "ui", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            nodes = graphql(f"http://127.0.0.1:{port}", "{ assetNodes { id } }", {})["assetNodes"]
            if len(nodes) >= 13:
                return ui
        except (requests.RequestException, SystemExit):
            pass
        if ui.poll() is not None:
            raise SystemExit(f"asgard ui exited with {ui.returncode}")
        time.sleep(1)
    raise SystemExit("asgard ui did not load the definitions in 300 s")


def stop_ui(ui: subprocess.Popen) -> None:
    """Stop `asgard ui` and wait for every process it started: a warm process still
    importing when the UI stops ends only once its imports are done (and would write into
    the home the bench then removes)."""
    try:
        tree = psutil.Process(ui.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # it had exited already
        tree = []
    ui.send_signal(signal.SIGTERM)  # asgard ui stops dagster dev and all it started
    try:
        ui.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait()
    # and any process of its session started meanwhile (a warm process as the UI stopped)
    tree += [p for p in psutil.process_iter() if _session(p) == ui.pid and p not in tree]
    _, alive = psutil.wait_procs(tree, timeout=60)
    for process in alive:
        process.kill()


def _session(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except OSError:
        return None


def launch_and_wait(url: str, key: list[str]) -> str:
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": key}],
        }
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise SystemExit(f"launch failed: {launched}")
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            if status != "SUCCESS":
                raise SystemExit(f"run {run_id} of {'/'.join(key)}: {status}")
            return run_id
        time.sleep(0.2)
    raise SystemExit(f"run {run_id} did not end in 300 s")


def phases(dagster_home: Path, run_id: str) -> tuple[float, float]:
    """(launched to started, started to ended) of a run, from its events."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        at = {}
        for event in instance.all_logs(run_id):
            kind = event.dagster_event.event_type if event.dagster_event else None
            if kind in (
                DagsterEventType.RUN_STARTING,
                DagsterEventType.RUN_START,
                DagsterEventType.RUN_SUCCESS,
            ):
                at.setdefault(kind, event.timestamp)
    return (
        at[DagsterEventType.RUN_START] - at[DagsterEventType.RUN_STARTING],
        at[DagsterEventType.RUN_SUCCESS] - at[DagsterEventType.RUN_START],
    )


def measure(env: dict, home: Path, warm: bool, runs: int, pause: float) -> dict:
    config = home / "dagster" / "dagster.yaml"
    text = (ROOT / "dagster.yaml").read_text()
    config.write_text(text.replace("warm_worker: true", f"warm_worker: {str(warm).lower()}"))
    port = free_port()
    ui = start_ui(env, port)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, list[tuple[float, float]]] = {"/".join(k): [] for k in ASSETS}
    try:
        # a first run each: its process (warm or not) starts with the launch
        launch_and_wait(url, list(ASSETS[0]))
        for _ in range(runs):
            for key in ASSETS:
                time.sleep(pause)
                out["/".join(key)].append(phases(home / "dagster", launch_and_wait(url, key)))
    finally:
        stop_ui(ui)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="runs of each asset per setting")
    parser.add_argument("--pause", type=float, default=15.0, help="seconds between runs")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="asgard-launch-"))
    home = base / "asgard"
    env = {**os.environ, "ASGARD_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    try:
        run_demo(env)
        settle(home / "dagster")
        results = {warm: measure(env, home, warm, args.runs, args.pause) for warm in (False, True)}
    finally:
        from asgard_assets.contracts.model import MODEL_NAME
        from asgard_assets.resources.deployer import LocalDeployer

        os.environ["ASGARD_HOME"] = str(home)
        LocalDeployer().stop(MODEL_NAME)
        remove(base)
    print(f"launched runs through `asgard ui` (GraphQL), median of {args.runs} each (s)")
    print(f"{'run':<40}{'launcher':<20}{'to start':>10}{'start to end':>14}{'total':>8}")
    totals = {}
    for key in (("/".join(k)) for k in ASSETS):
        for warm in (False, True):
            start = statistics.median(p[0] for p in results[warm][key])
            work = statistics.median(p[1] for p in results[warm][key])
            totals[(key, warm)] = start + work
            name = "warm process" if warm else "code server (spawn)"
            print(f"{key:<40}{name:<20}{start:>10.2f}{work:>14.2f}{start + work:>8.2f}")
    for key in (("/".join(k)) for k in ASSETS):
        ratio = totals[(key, True)] / totals[(key, False)]
        print(f"{key}: warm / spawn = {ratio:.2f}")


if __name__ == "__main__":
    main()

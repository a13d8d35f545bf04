"""The Dagster UI, for real: `asgard ui` (what `make ui` runs) on the instance `make demo`
filled, headless Chromium on the lineage graph (its picture is the README's
``docs/asset-graph.png``), and a materialization launched through the GraphQL API."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import ROOT, clean_env

from asgard_assets.resources.deployer import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root, on a machine whose network is closed (see the machine notes)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GROUPS = ["bronze", "silver", "gold", "features", "models", "deployments"]
LOCATION = "asgard_assets.definitions"
SCREENSHOT = ROOT / "docs" / "asset-graph.png"


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


ASSET_KEYS = "{ assetNodes { assetKey { path } } }"


def _wait_until_loaded(url: str, process: subprocess.Popen, log: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if len(graphql(url, ASSET_KEYS)["assetNodes"]) >= 13:
                return
        except (requests.RequestException, AssertionError):
            pass
        time.sleep(1)
    pytest.fail(
        f"dagster dev did not load the definitions in {timeout}s:\n{log.read_text()[-3000:]}"
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (Ctrl-C) is how `dagster dev` shuts down its webserver, daemon and code
    server; the group is killed if anything is left (SIGTERM to the group leaves them
    running)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ui_process(demo_clone, tmp_path_factory):
    """`asgard ui` in the repository copy where `make demo` ran, nothing exported, started
    as a script's `cmd &` starts it (SIGINT ignored): (its URL, the process)."""
    clone, _ = demo_clone
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("ui") / "dagster_dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [".venv/bin/asgard", "ui", "--port", str(port)],
            cwd=clone,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to stop it whole
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        _wait_until_loaded(url, process, log)
        yield url, process
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def dagster_ui(ui_process) -> str:
    return ui_process[0]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is required in CI (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _shown_as(label: str, name: str) -> bool:
    """The graph shortens long names at low zoom (``operat…_efficiency``)."""
    if "…" not in label:
        return label == name
    head, tail = label.split("…")
    return name.startswith(head) and name.endswith(tail)


def test_lineage_graph_shows_every_asset_of_the_journey(dagster_ui, browser):
    expected = sorted(n["assetKey"]["path"][-1] for n in graph_nodes(dagster_ui))
    assert len(expected) == 13
    # wide enough for every group expanded: the graph renders only the nodes in view
    page = browser.new_page(viewport={"width": 2400, "height": 900})
    # the first-visit newsletter dialog, marked as seen (it would cover the picture)
    page.add_init_script("window.localStorage.setItem('communityNux', '1')")
    page.goto(f"{dagster_ui}/asset-groups")
    page.get_by_text("deployments", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("Hide navigation").click()  # room for the graph in the picture
    for group in GROUPS:  # one collapsed box per group at first
        assert page.get_by_text(group, exact=True).count() >= 1
    page.mouse.click(1200, 820)  # empty canvas: focus for the shortcut
    page.keyboard.press("Alt+e")  # the graph's "Expand all groups"
    names = page.locator("[class*=AssetNode_assetName]")
    names.nth(len(expected) - 1).wait_for(timeout=30_000)
    labels = names.all_inner_texts()
    # the README's picture, kept current here; node colours (materialized: green) arrive
    # with the asset status query after the names
    page.wait_for_timeout(3000)
    page.screenshot(path=str(SCREENSHOT))
    unmatched = list(expected)
    for label in labels:
        match = next((n for n in unmatched if _shown_as(label, n)), None)
        assert match, f"graph node {label!r} is not an asset of the journey"
        unmatched.remove(match)
    assert not unmatched, f"missing from the graph: {unmatched}"


def graph_nodes(url: str) -> list[dict]:
    return graphql(url, ASSET_KEYS)["assetNodes"]


STATUS_OF_ASSETS = """
{ assetNodes { assetKey { path } isPartitioned
    partitionStats { numMaterialized numPartitions numFailed }
    assetMaterializations(limit: 1) { runId } } }
"""


def test_after_the_demo_nothing_is_missing(dagster_ui):
    """Every asset materialized; every day of the partitioned ones (no "Missing" days): the
    demo database's 181, one more when the README's `asgard add-day` ran before the UI
    loaded its definitions."""
    nodes = graphql(dagster_ui, STATUS_OF_ASSETS)["assetNodes"]
    assert len(nodes) >= 13
    for node in nodes:
        name = "/".join(node["assetKey"]["path"])
        assert node["assetMaterializations"], f"{name} is not materialized"
        if node["isPartitioned"]:
            stats = node["partitionStats"]
            assert stats["numPartitions"] in (181, 182), name
            assert stats["numMaterialized"] == stats["numPartitions"], (name, stats)


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { status tags { key value } } }
}
"""
MATERIALIZED = """
query Latest($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries { label } } }
  }
}
"""


def launch_and_wait(dagster_ui: str, params: dict) -> tuple[str, dict]:
    launched = graphql(dagster_ui, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = graphql(dagster_ui, STATUS, {"runId": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    return run_id, run


def test_graphql_launches_a_materialization_that_succeeds(dagster_ui):
    key = {"path": ["bronze", "materials"]}
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [key],
        },
    }
    # the first launch after the UI started goes to the code server (no warm process is
    # ready yet: one starts importing); once one is, a run is handed to it (Asgard's run
    # launcher, dagster.yaml). Runs of either kind succeed.
    for _ in range(6):
        run_id, run = launch_and_wait(dagster_ui, params)
        assert run["status"] == "SUCCESS"
        if {t["key"]: t["value"] for t in run["tags"]}.get("asgard/run_worker_pid"):
            break
        time.sleep(5)  # a bound on the waiting process's imports, not a timing assertion
    else:
        raise AssertionError("no run was handed to a warm process")
    (latest,) = graphql(dagster_ui, MATERIALIZED, {"key": key})["assetOrError"][
        "assetMaterializations"
    ]
    assert latest["runId"] == run_id
    assert {"dagster/row_count", "iceberg_snapshot_id"} <= {
        e["label"] for e in latest["metadataEntries"]
    }


def test_kill_stops_the_ui_and_everything_it_started(ui_process):
    """Last in this module: `kill <asgard ui>` (SIGTERM), on a UI started from a script,
    stops dagster dev and its webserver, daemon and code server (each a process)."""
    import psutil

    _, process = ui_process
    tree = psutil.Process(process.pid).children(recursive=True)
    assert len(tree) >= 4, [p.cmdline() for p in tree]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert alive == [], [p.cmdline() for p in alive]

"""The README, executed: every ```bash block runs as written, in order, in a copy of the
repository after ``make demo``, with nothing exported (so the document cannot drift).

Convention: a bash block whose previous line is ``<!-- readme-test: skip (why) -->`` is not
run (a server that runs until Ctrl-C, the test suite itself, writes to shared servers).
The Quick start's ``make demo`` block is run once by the shared ``demo_clone`` fixture.
Output blocks (```` ``` ```` without a language) are not commands.
"""

import json
import re
import subprocess
from pathlib import Path

import dagster as dg
import psutil
import pytest
from conftest import ROOT, asgard_home_env, clean_env

SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->")
BLOCK = re.compile(r"^```bash\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
DEMO = "make demo"


def bash_blocks(text: str) -> list[tuple[str, str | None]]:
    """(commands, why skipped or None) of every bash block, in order."""
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        marker = SKIP.fullmatch(before[-1].strip()) if before else None
        blocks.append((match["body"], marker["why"] if marker else None))
    return blocks


README = (ROOT / "README.md").read_text()
BLOCKS = bash_blocks(README)
RUN = [body for body, why in BLOCKS if why is None]


def test_the_convention_is_parsed():
    text = "x\n<!-- readme-test: skip (a server) -->\n```bash\nserve\n```\n\n```bash\nls\n```\n"
    assert bash_blocks(text) == [("serve\n", "a server"), ("ls\n", None)]
    skipped = [why for _, why in BLOCKS if why]
    assert len(RUN) >= 5 and skipped, (len(RUN), skipped)
    assert RUN[0].startswith(DEMO), "the README's first command block is make demo"


def test_links_point_into_the_repository():
    for target in re.findall(r"\]\((?!https?://|#)([^)\s]+)\)", README):
        assert (ROOT / target).exists(), f"README links to {target}, which the repository lacks"
        assert not target.startswith(".."), f"README links outside the repository: {target}"


def test_make_demo_prints_the_command_it_runs_and_ends_with_the_checks(demo_clone):
    _, out = demo_clone
    command = (
        ".venv/bin/dagster asset materialize -m asgard_assets.definitions --select '*' "
        "--partition-range 2025-01-01...2025-06-30"
    )
    assert f"$ {command}" in out
    assert command in README  # the README shows the same command
    assert " - DEBUG - " not in out and "Warning" not in out, out[-3000:]
    log = re.search(r"Dagster's event log: (\S+)", out)
    assert log and " - DEBUG - " in Path(log[1]).read_text()
    # the model served, with the scores it was trained with
    assert re.search(
        r"Model operator_efficiency_predictor v1 \(champion\): accuracy \d\.\d{3}, "
        r"f1 \d\.\d{3}, roc_auc \d\.\d{3}",
        out,
    ), out[-3000:]
    summary = out[out.index("Asset checks:") :]
    counts = re.match(r"Asset checks: (\d+) passed, (\d+) warned, 0 failed\n", summary)
    assert counts, summary
    named = dict(re.findall(r"^  (passed|warned): (.*)$", summary, re.MULTILINE))
    assert [len(named.get(k, "").split(", ")) for k in ("passed", "warned")] == [
        int(counts[1]),
        int(counts[2]),
    ]
    # the demo source's real defects, kept raw in bronze
    for check in ("bronze/machine_logs:log_id_unique", "bronze/work_orders:work_order_id_not_null"):
        assert check in named["warned"]
    assert summary.rstrip().splitlines()[-1].startswith("  passed: ")


@pytest.fixture(scope="module")
def ran_blocks(demo_clone) -> list[subprocess.CompletedProcess]:
    """Every runnable block after make demo, in the README's order, each in a new bash."""
    clone, _ = demo_clone
    return [
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=clone,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        for block in RUN[1:]
    ]


@pytest.mark.parametrize("index", range(len(RUN) - 1), ids=lambda i: f"block{i + 2}")
def test_readme_block_runs_as_written(ran_blocks, index):
    done = ran_blocks[index]
    block = RUN[index + 1]
    assert done.returncode == 0, f"{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_the_demo_again_with_nothing_changed_starts_no_run(demo_clone, ran_blocks):
    clone, first = demo_clone
    (again,) = [i for i, block in enumerate(RUN) if block.startswith(".venv/bin/asgard demo")]
    assert RUN[again - 1].startswith(DEMO), "the re-run follows make demo directly"
    out = ran_blocks[again - 1].stdout
    assert "Nothing to run: the source, the code, the settings and the days are those of run " in (
        out
    ), out[-3000:]
    assert "dagster asset materialize" not in out
    assert first[first.index("\nIceberg tables (current snapshot):") :] in out  # its summary
    # every store the stamp watches is one the demo wrote (a store moved elsewhere would
    # otherwise go unwatched)
    from asgard_assets.journey_stamp import STAMP, STORES

    stamp = json.loads((clone / ".asgard" / STAMP).read_text())
    assert set(STORES) <= set(stamp["left"]["stores"]), stamp["left"]


def test_every_run_landed_in_the_instance_make_ui_shows(demo_clone, ran_blocks):
    """The demo and the README's dagster commands, all in .asgard/dagster; every day of the
    partitioned assets materialized (nothing Missing in the UI)."""
    clone, _ = demo_clone
    dagster_runs = sum(
        block.count(".venv/bin/dagster asset materialize") for block in RUN if DEMO not in block
    )
    with dg.DagsterInstance.from_config(str(clone / ".asgard" / "dagster")) as instance:
        runs = instance.get_runs()
        assert len(runs) >= 1 + dagster_runs
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        from asgard_assets.partitions import daily_partitions

        with asgard_home_env(clone / ".asgard"):  # the demo's days, and the README's new one
            days = set(daily_partitions().get_partition_keys())
        assert len(days) == 181 + sum(block.count(".venv/bin/asgard add-day") for block in RUN)
        for table in ("work_orders", "machine_logs"):
            for layer in ("bronze", "silver"):
                key = dg.AssetKey([layer, table])
                assert instance.get_materialized_partitions(key) == days, key


def test_asgard_stop_stopped_the_demo_service(demo_clone, ran_blocks):
    from asgard_assets.contracts.model import MODEL_NAME
    from asgard_assets.resources.deployer import LocalDeployer

    clone, out = demo_clone
    (stop,) = [i for i, block in enumerate(RUN) if ".venv/bin/asgard stop" in block]
    assert "stopped the inference service at http://127.0.0.1:" in ran_blocks[stop - 1].stdout
    pid = int(re.search(r"Inference service: \S+  \(pid (\d+)", out)[1])
    with asgard_home_env(clone / ".asgard"):
        # later README blocks may deploy again; the demo's service is not what serves
        now = LocalDeployer().current(MODEL_NAME)
        assert now is None or now.pid != pid
    # gone, or a zombie waiting for a parent that is not ours to reap it
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

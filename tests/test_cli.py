"""The commands a user types: `asgard`, and this venv's `dagster` with Asgard's defaults
(asgard.pth), and the daily partitions' bounds they run over."""

import logging
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import clean_env

from asgard_assets import child_signals, cli, demo_data, run_log
from asgard_assets.days import all_days_range, partition_bounds

BIN = Path(sys.executable).parent


def test_help_is_plain_and_no_command_shows_it(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text
    for command in ("demo", "ui", "stop", "load-demo"):
        assert f"\n    {command}" in text or f"  {command} " in text, command
    assert cli.main([]) == 2
    assert "usage: asgard" in capsys.readouterr().out


def test_stop_with_nothing_running_says_so(home, capsys):
    assert cli.main(["stop"]) == 0
    assert "no inference service" in capsys.readouterr().out


def test_load_demo_into_mysql_says_where_the_tables_go(mysql_url, capsys):
    assert cli.main(["load-demo", mysql_url]) == 0
    out = capsys.readouterr().out
    assert "production.work_orders" in out and "inventory.materials" in out
    assert f"URL, {sa.engine.make_url(mysql_url).database}, only opens the connection" in out


def test_demo_partitions_are_exactly_the_demo_days(home, monkeypatch):
    monkeypatch.delenv("ASGARD_SOURCE_URL", raising=False)
    monkeypatch.delenv("ASGARD_PARTITION_START", raising=False)
    monkeypatch.delenv("ASGARD_PARTITION_END", raising=False)
    assert partition_bounds() == ("2025-01-01", "2025-07-01")  # end exclusive: 181 days
    monkeypatch.setenv("ASGARD_PARTITION_END", "2025-03-31")
    assert partition_bounds() == ("2025-01-01", "2025-04-01")


def test_add_day_grows_the_demo_by_its_last_day_and_the_partitions_follow(
    home, monkeypatch, capsys
):
    monkeypatch.delenv("ASGARD_PARTITION_START", raising=False)
    monkeypatch.delenv("ASGARD_PARTITION_END", raising=False)
    assert partition_bounds() == ("2025-01-01", "2025-07-01")
    for day in ("2025-07-01", "2025-07-02"):
        assert cli.main(["add-day"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"added {day} to the demo database {home / 'demo_factory.sqlite'}: ")
        assert (
            f"ASGARD_HOME={home} .venv/bin/dagster asset materialize -m asgard_assets.definitions"
            " --select 'bronze/work_orders,silver/work_orders,bronze/machine_logs,"
            f"silver/machine_logs' --partition {day}\n"
        ) in out
    with closing(sqlite3.connect(home / "demo_factory.sqlite")) as conn:
        for table, key, column in (
            ("work_orders", "work_order_id", "start_time"),
            ("machine_logs", "log_id", "event_time"),
        ):

            def rows(where: str, what: str = "count(*)", table: str = table):
                return conn.execute(f"SELECT {what} FROM {table} WHERE {where}").fetchone()

            last = rows(f"date({column}) = '2025-06-30'")[0]
            assert last > 0
            for day in ("2025-07-01", "2025-07-02"):  # the last day again, each time
                assert rows(f"date({column}) = '{day}'")[0] == last
            # new ids (blank ones stay blank), never stacked suffixes; updated after all else
            new = f"date({column}) > '2025-06-30'"
            assert rows(f"{new} AND {key} LIKE '%-day%-day%'")[0] == 0
            clash = f"{new} AND TRIM({key}) <> '' AND {key} IN (SELECT {key} FROM {table} WHERE NOT {new})"
            assert rows(clash)[0] == 0
            stamped = rows(new, "min(updated_at)")[0]
            assert stamped > rows(f"NOT {new}", "max(updated_at)")[0]
            # written as the table writes timestamps (a text cursor compares them)
            assert rows(new, f"count(*) FILTER (WHERE length({column}) <> 26)")[0] == 0
            assert len(stamped) == 26
    assert partition_bounds() == ("2025-01-01", "2025-07-03")
    assert all_days_range() == "2025-01-01...2025-07-02"


def test_add_day_leaves_your_own_database_alone(home, monkeypatch, capsys):
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://postgres@127.0.0.1/factory")
    assert cli.main(["add-day"]) == 1
    assert "only the demo database grows this way" in capsys.readouterr().err
    assert not (home / "demo_factory.sqlite").exists()


def _dagster_range() -> str:
    from asgard_assets.partitions import daily_partitions

    keys = daily_partitions().get_partition_keys()
    return f"{keys[0]}...{keys[-1]}"


def test_the_demo_range_is_dagsters_partitions_worked_out_without_dagster(monkeypatch):
    """``asgard demo`` works out its --partition-range before launching the run, without
    importing Dagster (a second of every journey): the same days as Dagster's partitions,
    bounded or running up to yesterday."""
    monkeypatch.delenv("ASGARD_SOURCE_URL", raising=False)
    monkeypatch.delenv("ASGARD_PARTITION_START", raising=False)
    monkeypatch.delenv("ASGARD_PARTITION_END", raising=False)
    assert all_days_range() == _dagster_range() == "2025-01-01...2025-06-30"
    monkeypatch.setenv("ASGARD_PARTITION_END", "2025-03-31")
    assert all_days_range() == _dagster_range() == "2025-01-01...2025-03-31"
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("ASGARD_PARTITION_START", "2026-01-01")
    monkeypatch.delenv("ASGARD_PARTITION_END")
    assert all_days_range() == _dagster_range()  # up to yesterday
    yesterday = f"{datetime.now(UTC) - timedelta(days=1):%Y-%m-%d}"
    assert all_days_range().endswith(yesterday)
    # an end in the future: Dagster's partitions still stop at yesterday
    monkeypatch.setenv("ASGARD_PARTITION_END", f"{datetime.now(UTC) + timedelta(days=30):%Y-%m-%d}")
    assert all_days_range() == _dagster_range() == f"2026-01-01...{yesterday}"
    monkeypatch.setenv("ASGARD_PARTITION_START", f"{datetime.now(UTC):%Y-%m-%d}")
    with pytest.raises(ValueError, match="no complete day"):
        all_days_range()

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, asgard_assets.cli as c; c.journey_command(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'sqlalchemy')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**clean_env(), "ASGARD_SOURCE_URL": ""},
    ).stdout
    assert loaded.strip() == "[]"


def test_a_real_source_starts_on_its_first_day_and_runs_to_yesterday(own_source, monkeypatch):
    monkeypatch.delenv("ASGARD_PARTITION_START", raising=False)
    monkeypatch.delenv("ASGARD_PARTITION_END", raising=False)
    engine = sa.create_engine(own_source)
    logs = demo_data.TABLES["machine_logs"]
    with engine.begin() as conn:
        row = conn.execute(sa.select(logs).limit(1)).mappings().one()
        conn.execute(
            logs.insert(), {**row, "log_id": "LOG-EARLY", "event_time": datetime(2024, 11, 3, 7)}
        )
    engine.dispose()
    assert partition_bounds() == ("2024-11-03", None)
    monkeypatch.setenv("ASGARD_PARTITION_START", "2025-02-01")
    assert partition_bounds() == ("2025-02-01", None)


def test_an_unreachable_source_still_loads_and_says_why(home, monkeypatch, caplog):
    monkeypatch.delenv("ASGARD_PARTITION_START", raising=False)
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://nobody:pw@127.0.0.1:1/none")
    with caplog.at_level(logging.WARNING, logger="asgard"):
        assert partition_bounds() == ("2025-01-01", None)
    assert "cannot read the source (connection to server at" in caplog.text
    assert "Connection refused" in caplog.text and "until it can be read" in caplog.text


@pytest.mark.parametrize(
    "url, says",
    [
        ("postgresql+psycopg2://nobody:pw@127.0.0.1:1/none", "port 1 failed: Connection refused"),
        ("postgres://nobody:pw@127.0.0.1/none", "SQLAlchemy has no dialect 'postgres'"),
        ("sqlite:///{tmp}/nope.sqlite", "the file {tmp}/nope.sqlite does not exist"),
    ],
)
def test_demo_from_a_source_it_cannot_read_says_why_and_runs_nothing(
    home, tmp_path, monkeypatch, capsys, url, says
):
    monkeypatch.delenv("ASGARD_PARTITION_START", raising=False)
    monkeypatch.setenv("ASGARD_SOURCE_URL", url.format(tmp=tmp_path))
    assert cli.main(["demo"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, (out, err)  # one line
    assert err.startswith("asgard demo: cannot read the source database (ASGARD_SOURCE_URL=")
    assert says.format(tmp=tmp_path) in err and ":pw@" not in err
    assert not (home / "logs").exists()  # no run was launched


def run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env={**clean_env(), **env}, capture_output=True, text=True, timeout=600
    )


def test_venv_dagster_defaults_to_the_asgard_instance_and_exports_win(tmp_path):
    done = run([str(BIN / "dagster"), "instance", "info"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"$DAGSTER_HOME: {tmp_path / '.asgard' / 'dagster'}" in done.stdout
    assert (tmp_path / ".asgard" / "dagster" / "dagster.yaml").exists()  # telemetry off
    mine = tmp_path / "mine"
    mine.mkdir()
    done = run([str(BIN / "dagster"), "instance", "info"], tmp_path, DAGSTER_HOME=str(mine))
    assert f"$DAGSTER_HOME: {mine}" in done.stdout


def test_whole_graph_without_days_fails_in_one_line(tmp_path):
    done = run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "asgard_assets.definitions"]
        + ["--select", "*"],
        tmp_path,
    )
    assert done.returncode == 1
    # nothing else: no traceback, no warning from loading the definitions
    assert done.stderr.strip().splitlines() == [
        "error: the selection has daily-partitioned assets: add --partition-range "
        "2025-01-01...2025-06-30 (every day, one run) or --partition DAY"
    ]


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        (
            ["--select", "silver/work_order"],
            'did you mean one of the following?\n\t["silver", "work_orders"]',
        ),
        (
            ["--select", "silver/work_orders", "--partition", "2031-01-01"],
            "partition key `2031-01-01` or have no PartitionsDefinition. The daily partitions are "
            "2025-01-01...2025-06-30.",
        ),
        (
            ["--select", "silver/work_orders", "--partition-range", "2025-01-01..2025-01-03"],
            "error: --partition-range takes FIRST...LAST, three dots: e.g. 2025-01-01...2025-06-30",
        ),
        (
            ["--select", "silver/work_orders", "--partition-range=2025-03-03...2025-03-01"],
            "error: the partition range 2025-03-03...2025-03-01 is reversed (its first day is "
            "after its last): did you mean 2025-03-01...2025-03-03?",
        ),
    ],
    ids=["unknown key", "day outside", "two dots", "reversed"],
)
def test_a_typing_mistake_on_the_dagster_cli_is_said_without_a_traceback(tmp_path, typed, said):
    _typed_on_the_dagster_cli(tmp_path, typed, said)


def test_a_typing_mistake_with_partitions_that_have_no_day_says_why(tmp_path):
    _typed_on_the_dagster_cli(
        tmp_path,
        ["--select", "silver/work_orders", "--partition", "2031-01-01"],
        "And the daily partitions have no day: the first day, 2025-08-01, is after the last, "
        "2025-06-30 (the demo data's last day).",
        ASGARD_PARTITION_START="2025-08-01",
    )


def _typed_on_the_dagster_cli(tmp_path, typed: list[str], said: str, **env) -> None:
    done = run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "asgard_assets.definitions", *typed],
        tmp_path,
        **env,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert said in done.stderr
    assert "Traceback" not in done.stderr


def _line(step: str, event: str, message: str = "") -> str:
    run = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    return f"2026-11-29 22:00:00 +0000 - dagster - DEBUG - __ASSET_JOB - {run} - 42 - {step} - {event} - {message}\n"


def test_the_demo_follows_dagsters_log_and_imports_the_summary_once_past_gold(capsys, monkeypatch):
    """One line per materialized step (`same` when it found nothing to do), a failure named,
    the run's end returned at once; the summary's imports start on a thread at the first
    step after gold, once."""
    run = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    log = [
        _line("silver__work_orders", "STEP_START"),
        f"2026-11-29 22:00:00 +0000 - dagster - INFO - __ASSET_JOB - {run} - silver__work_orders"
        " - skipped: bronze.work_orders unchanged since this snapshot was written\n",
        _line(
            "silver__work_orders", "ASSET_MATERIALIZATION", "Materialized value silver work_orders."
        ),
        _line("silver__work_orders", "STEP_SUCCESS", 'Finished execution of step "x" in 0.2s.'),
        _line("gold_dbt_assets", "STEP_START"),
        _line(
            "gold_dbt_assets", "ASSET_MATERIALIZATION", "Materialized value gold operator_features."
        ),
        _line(
            "gold_dbt_assets",
            "STEP_SUCCESS",
            'Finished execution of step "gold_dbt_assets" in 6.1s.',
        ),
        _line("features__operator_efficiency", "STEP_START"),
        _line("features__operator_efficiency_feature_drift", "STEP_START"),
        _line("models__operator_efficiency_predictor", "STEP_FAILURE", "MLflow unreachable"),
        _line("models__operator_efficiency_predictor", "RUN_FAILURE", "the run failed"),
        _line("never", "STEP_START"),
    ]
    started = []
    warm = cli._SummaryImport()
    real_start = cli.threading.Thread.start

    def recording(self):
        started.append(self)
        return real_start(self)

    monkeypatch.setattr(cli.threading.Thread, "start", recording)
    run_id, ended, reported = run_log.follow(iter(log), warm.on_start)
    warm.join()
    assert (run_id, ended) == ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "RUN_FAILURE")
    out = capsys.readouterr().out
    assert "ok    gold/operator_features" in out and "6.1s" in out  # the asset, not the op
    assert "same  silver/work_orders" in out
    assert "  FAIL  models/operator_efficiency_predictor\n" in out  # why: from the run's events
    assert reported == {
        "silver__work_orders",
        "gold_dbt_assets",
        "models__operator_efficiency_predictor",
    }
    assert started == [warm.thread]  # one import thread, started at the features step
    assert warm.error is None and "asgard_assets.summary" in sys.modules

    monkeypatch.setattr(cli, "__package__", "no_such_package")  # an import that fails
    failing = cli._SummaryImport()
    failing.on_start("features__operator_efficiency")
    failing.join()
    assert isinstance(failing.error, ModuleNotFoundError)


def test_the_runs_end_is_told_from_its_events_when_stdout_lost_its_lines(home, capsys):
    """Dagster mirrors a step's output to stdout through a `tail` it stops when the steps end,
    so `asgard demo` may never see the last step's line: the run's end prints, from the
    run's own events, each step the demo did not report (`ok` when it did work, `same` when
    it found nothing to do) and none twice."""
    import dagster as dg
    from conftest import materialize
    from test_contract import ASSETS

    from asgard_assets.summary import report_run_end

    instance = dg.DagsterInstance.ephemeral()
    selection = "bronze/materials bronze/quality_checks"
    first = materialize(selection, assets=ASSETS, instance=instance)
    assert report_run_end(instance, first.run_id, {"bronze__quality_checks"}, True) is False
    out = capsys.readouterr().out
    assert "  ok    bronze/materials " in out and "bronze/quality_checks " not in out
    assert "bronze.materials                2,323 rows" in out  # then the summary

    again = materialize(selection, assets=ASSETS, instance=instance)
    report_run_end(instance, again.run_id, set(), True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("  same ")] == [
        ["same", "bronze/materials"],
        ["same", "bronze/quality_checks"],
    ]


def test_ui_passes_ctrl_c_kill_and_hangup_on_to_dagster_dev_once(monkeypatch):
    """Each becomes one SIGINT to dagster dev (its own shutdown), which runs in its own
    process group with SIGINT at its default; the real stop is test_ui's last test."""
    import signal

    sent, started = [], {}
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    class DagsterDev:
        def __init__(self, cmd, **kw):
            started.update(kw, cmd=cmd)

        def send_signal(self, signum):
            sent.append(signum)

        def poll(self):
            return None

        def wait(self):
            for signum in signals:  # what the user or a supervisor sends asgard
                handler = signal.getsignal(signum)
                if callable(handler):
                    handler(signum, None)
            return 0

    before = {s: signal.getsignal(s) for s in signals}
    monkeypatch.setattr(child_signals.subprocess, "Popen", DagsterDev)
    try:
        assert cli.ui(3999) == 0
        assert sent == [signal.SIGINT] * 3
        sent.clear()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it: stays ignored
        assert cli.ui(3999) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert sent == [signal.SIGINT] * 2
    assert started["process_group"] == 0 and started["preexec_fn"] is child_signals.interruptible
    assert started["cmd"][1:] == ["dev", "-w", str(cli.ROOT / "workspace.yaml"), "-p", "3999"]


def test_an_interrupted_run_that_goes_on_is_interrupted_again():
    """After the first signal, each step Dagster starts or retries (it retries an interrupted
    step that has a retry policy) gets SIGINT again; before any signal, none."""
    import signal

    sent = []

    class Run:
        def poll(self):
            return None

        def send_signal(self, signum):
            sent.append(signum)

    forwarded = child_signals.Forwarded()
    forwarded.child = Run()
    lines = [
        _line("bronze__work_orders", "STEP_START"),
        _line("bronze__work_orders", "STEP_UP_FOR_RETRY", "failed and has requested a retry"),
        _line("bronze__work_orders", "STEP_RESTARTED"),
        _line("bronze__materials", "STEP_SUCCESS"),
        _line("bronze__materials", "STEP_START"),
    ]
    assert list(forwarded.insisting(iter(lines[:1]))) == lines[:1] and sent == []
    forwarded(signal.SIGTERM, None)
    assert list(forwarded.insisting(iter(lines[1:]))) == lines[1:]
    assert sent == [signal.SIGINT] * 4  # the signal's own, retry, restart, a new step
    assert forwarded.received == signal.SIGTERM


def test_a_child_left_waiting_as_it_exits_gets_sigint_until_it_does():
    """After a stop was asked for, a child that has not exited within the grace period
    (its interpreter waiting on a thread a late SIGINT left behind) gets SIGINT until it
    exits; a child that exits by itself gets none."""
    import signal

    waits_for_sigint = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(7))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    forwarded = child_signals.Forwarded()
    forwarded.start([sys.executable, "-c", waits_for_sigint], stdout=subprocess.PIPE, text=True)
    assert forwarded.child.stdout.readline() == "ready\n"
    forwarded.received = signal.SIGTERM
    assert forwarded.wait(grace=0.5) == 7  # it ended on the SIGINT, not by itself
    forwarded.child.stdout.close()

    forwarded = child_signals.Forwarded()
    forwarded.start([sys.executable, "-c", "import sys; sys.exit(3)"])
    forwarded.received = signal.SIGTERM
    assert forwarded.wait(grace=60) == 3


def test_killing_the_demo_stops_its_run_and_says_so(tmp_path, monkeypatch):
    """`kill <asgard demo>` mid-run: the run's process (its own process group) gets SIGINT
    until it exits (one is not enough: Dagster retries the interrupted step when it has a
    retry policy) and the run ends as failed, instead of going on alone (and starting a
    service) after asgard is gone; asgard says it was interrupted."""
    from asgard_assets.contracts.model import MODEL_NAME
    from asgard_assets.resources.deployer import LocalDeployer

    home = tmp_path / "asgard"
    monkeypatch.setenv("ASGARD_HOME", str(home))
    # the demo's own last day, set: the printed command names it
    env = {**clean_env(), "ASGARD_HOME": str(home), "ASGARD_PARTITION_END": "2025-06-30"}
    try:
        _kill_a_demo_mid_run(home, env)
        assert LocalDeployer().current(MODEL_NAME) is None  # no service started after the kill
    finally:  # were the run to go on, its service would outlive the test's home
        LocalDeployer().stop(MODEL_NAME)


def _kill_a_demo_mid_run(home: Path, env: dict[str, str]) -> None:
    import signal
    import time

    import dagster as dg
    import psutil

    asgard = subprocess.Popen(
        [str(BIN / "asgard"), "demo"],
        cwd=home.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = None
    try:
        deadline = time.monotonic() + 300
        while not any("STEP_START" in p.read_text() for p in (home / "logs").glob("demo-*.log")):
            assert asgard.poll() is None and time.monotonic() < deadline, asgard.communicate()
            time.sleep(0.2)
        (run,) = psutil.Process(asgard.pid).children()
        asgard.send_signal(signal.SIGTERM)
        out, err = asgard.communicate(timeout=120)
        assert asgard.returncode == 128 + signal.SIGTERM, (out, err)
        assert "Interrupted (SIGTERM): the run stopped (RUN_FAILURE, exit" in err, (out, err)
        assert "\n  with ASGARD_PARTITION_END as set here (export them to run it" in out, out
        assert not run.is_running() or run.status() == psutil.STATUS_ZOMBIE
    finally:  # nothing of the test's left running, whatever failed
        if asgard.poll() is None:
            asgard.kill()
        if run is not None and run.is_running():
            run.kill()
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE


def test_load_demo_into_a_database_that_does_not_exist_says_how_to_create_it(capsys):
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/asgard_no_such_database"
    assert cli.main(["load-demo", url]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f'asgard load-demo: cannot load into {url}: connection to server at "127.0.0.1", '
        'port 5432 failed: FATAL:  database "asgard_no_such_database" does not exist (create it '
        "first, e.g. psql -h HOST -U USER -c 'CREATE DATABASE asgard_no_such_database')"
    ]


def test_load_demo_into_a_mysql_database_that_does_not_exist_says_how_to_create_it(
    mysql_url, capsys
):
    url = mysql_url.rsplit("/", 1)[0] + "/asgard_no_such_database"
    assert cli.main(["load-demo", url]) == 1
    err = capsys.readouterr().err
    assert "Unknown database 'asgard_no_such_database'" in err
    assert err.rstrip().endswith(
        "(create it first, e.g. mysql -h HOST -u USER -e 'CREATE DATABASE asgard_no_such_database')"
    )


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"ASGARD_PROFILE": "K8S"}, "ASGARD_PROFILE='K8S' is not one of local, k8s"),
        (
            {"ASGARD_PARTITION_START": "2025-02-30"},
            "ASGARD_PARTITION_START='2025-02-30' is not a day: YYYY-MM-DD, e.g. 2025-02-01",
        ),
        (
            {"ASGARD_PARTITION_END": "garbage"},
            "ASGARD_PARTITION_END='garbage' is not a day: YYYY-MM-DD, e.g. 2025-02-01",
        ),
        (
            {"ASGARD_PARTITION_START": "2025-05-01", "ASGARD_PARTITION_END": "2025-04-1"},
            "ASGARD_PARTITION_START=2025-05-01 is after ASGARD_PARTITION_END=2025-04-01",
        ),
        (
            {"ASGARD_PROFILE": "k8s"},
            "ASGARD_PROFILE=k8s needs these environment variables, unset: "
            "AIRBYTE_CONFIGURATION_API_URL (ingestion)",
        ),
    ],
    ids=["profile", "no such day", "not a day", "start after end", "k8s unset"],
)
def test_a_setting_that_cannot_work_is_named_before_a_run_starts(
    home, monkeypatch, capsys, settings, said
):
    for name in ("AIRBYTE_REST_API_URL", "ASGARD_CATALOG_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"asgard demo: {said}") and err.count("\n") == 1, err
    assert not (home / "logs").exists()  # no run was started


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://u:pw@127.0.0.1:59999/x", "SQLAlchemy has no dialect 'postgres' (expected "),
        ("sqlite:///{tmp}/nodir/copy.sqlite", "the folder {tmp}/nodir does not exist"),
        ("not a url", "not a database URL (expected "),
    ],
)
def test_load_demo_into_a_url_that_cannot_work_says_why(tmp_path, capsys, url, says):
    url = url.format(tmp=tmp_path)
    assert cli.main(["load-demo", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("asgard load-demo: cannot load into "), err
    assert says.format(tmp=tmp_path) in err and ":pw@" not in err and "psql" not in err
    assert not (tmp_path / "nodir").exists()


def test_the_stop_hint_names_a_home_that_is_not_the_default(home, monkeypatch, tmp_path):
    from asgard_assets.summary import stop_command

    assert stop_command() == f"ASGARD_HOME={home} .venv/bin/asgard stop"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASGARD_HOME", ".asgard")
    # outside the repository, the command's full path: .venv/bin is not there
    assert stop_command() == f"{Path(sys.executable).with_name('asgard')} stop"


def test_demo_warns_that_the_profile_chooses_golds_dbt_target(home, monkeypatch, capsys):
    monkeypatch.setenv("ASGARD_DBT_TARGET", "trino")
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://nobody:pw@127.0.0.1:1/none")
    assert cli.main(["demo"]) == 1  # the source is unreachable: the warning came before
    assert capsys.readouterr().err.startswith(
        "asgard demo: warning: ASGARD_DBT_TARGET=trino is not used by the gold asset: "
        "ASGARD_PROFILE=local builds gold with dbt's duckdb target (ASGARD_PROFILE=k8s builds "
        "it with trino); it only sets the default target of dbt commands typed by hand\n"
    )


def test_demo_reads_the_source_even_with_its_first_day_set(home, monkeypatch, capsys):
    monkeypatch.setenv("ASGARD_PARTITION_START", "2025-01-01")
    monkeypatch.setenv("ASGARD_SOURCE_URL", "postgresql+psycopg2://nobody:pw@127.0.0.1:1/none")
    assert partition_bounds() == ("2025-01-01", None)  # the definitions need no source
    assert cli.main(["demo"]) == 1
    assert "port 1 failed: Connection refused" in capsys.readouterr().err

"""asgard: the demo journey, the demo database anywhere, the UI and stopping what the demo
started.

  asgard demo              materialize the whole lineage graph (every day, one run);
                           nothing runs when nothing changed since the last one (--force)
  asgard ui                the Dagster UI on the same instance
  asgard stop              stop the inference service the demo started
  asgard load-demo URL     load the demo factory data into any SQLAlchemy database
  asgard add-day           one more day in the demo database, to watch it flow through

State lives in $ASGARD_HOME (default ./.asgard); the Dagster instance in
$ASGARD_HOME/dagster unless DAGSTER_HOME says otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from . import journey_stamp, settings
from .child_signals import forwarded_signals
from .instance import ROOT, instance_env
from .run_log import follow, lines_of
from .settings import asgard_home, home_prefix, venv_command


def materialize_command(selection: str, *days: str) -> list[str]:
    """``dagster asset materialize`` of ``selection`` on Asgard's definitions (``days``: the
    partition options, e.g. ``--partition DAY``)."""
    cmd = [venv_command("dagster"), "asset", "materialize", "-m", "asgard_assets.definitions"]
    return [*cmd, "--select", selection, *days]


def journey_days() -> str:
    """Every day of the daily partitions, as ``FIRST...LAST`` (a source that cannot be read
    raises ValueError, saying why)."""
    from .days import all_days_range

    return all_days_range(strict=True)


def journey_command(days: str | None = None) -> list[str]:
    """The whole lineage graph, ingestion to deployment, as one run over every day."""
    return materialize_command("*", "--partition-range", days or journey_days())


# Once the run is past gold (its memory peak at scale: dbt's process beside Dagster's), the
# summary's imports (Dagster, pyiceberg, the lakehouse: ~1.5 s) load on a thread beside the
# last steps instead of after the run.
SUMMARY_WARMS_AT = "features__"


class _SummaryImport:
    """The summary's module, imported on a thread once ``on_start`` sees the first step
    after gold. A failed import is kept (the summary's own import then fails in view)."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def on_start(self, step: str) -> None:
        if self.thread is None and step.startswith(SUMMARY_WARMS_AT):
            self.thread = threading.Thread(target=self._import, name="asgard-summary-import")
            self.thread.start()

    def _import(self) -> None:
        try:
            importlib.import_module(f"{__package__}.summary")
        except BaseException as e:  # noqa: BLE001 - kept for the caller
            self.error = e

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


# settings the printed command acts on besides ASGARD_HOME: where the rows come from and go,
# which days there are
SHAPING = (
    "ASGARD_PROFILE",
    "ASGARD_SOURCE_URL",
    "ASGARD_PARTITION_START",
    "ASGARD_PARTITION_END",
    "ASGARD_CATALOG_URI",
    "ASGARD_WAREHOUSE",
    "ASGARD_S3_ENDPOINT",
    "MLFLOW_TRACKING_URI",
)


def demo(force: bool = False) -> int:
    env = instance_env()
    try:
        settings.check()
        missing_settings()
        if unused := settings.dbt_target_unused(settings.profile()):
            print(f"asgard demo: warning: {unused}", file=sys.stderr)
        days = journey_days()
    except ValueError as e:  # a setting, the source cannot be read, no day has ended yet
        print(f"asgard demo: {e}", file=sys.stderr)
        return 1
    print(f"ASGARD_HOME={env['ASGARD_HOME']}  (Dagster instance: {env['DAGSTER_HOME']})")
    ran_on = _stamp_inputs(days)
    if force:
        print("--force: every step runs, and each skips what it finds unchanged.")
    elif ran_on is not None and _nothing_changed(ran_on):
        return 0
    journey_stamp.forget()
    cmd = journey_command(days)
    logs = asgard_home() / "logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    print(f"$ {home_prefix()}{shlex.join(cmd)}", flush=True)
    if shaping := [name for name in SHAPING if os.environ.get(name)]:
        # not printed with their values: a source URL may hold a password
        print(f"  with {', '.join(shaping)} as set here (export them to run it yourself)")
    print(f"Dagster's event log: {log_path}", flush=True)
    with log_path.open("w") as log, forwarded_signals() as signals:
        # Dagster writes its event log there itself
        process = signals.start(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,  # out of the terminal's foreground group: never reads it
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        warm_summary = _SummaryImport()
        try:
            followed = follow(signals.insisting(lines_of(log_path, process)), warm_summary.on_start)
        finally:  # never leave the interpreter with an import half done
            warm_summary.join()
    succeeded, explained, printed = followed.ended == "RUN_SUCCESS", False, None
    if followed.run_id is not None:
        try:
            from .summary import print_run_end

            with _kept_output() as printed:
                explained = print_run_end(followed.run_id, followed.reported, succeeded)
        except Exception as e:  # noqa: BLE001 - the run's end is still told by its log below
            print(f"\n(the run's record could not be read: {type(e).__name__}: {e})")
    if succeeded and ran_on is not None and printed is not None:
        try:
            journey_stamp.record(followed.run_id, ran_on, printed.getvalue())
        except Exception as e:  # noqa: BLE001 - without a stamp the next demo just runs
            print(f"\n(no stamp of this run: {type(e).__name__}: {e}; the next demo runs again)")
    if succeeded:
        # the run is recorded as ended: the Dagster process's own exit (its interpreter's
        # teardown of dagster, dbt, Feast, MLflow: ~2 s) is not waited for
        return 0
    code = signals.wait()
    if signals.received is not None:
        ended = "before it started" if followed.run_id is None else followed.ended or "ended"
        print(
            f"\nInterrupted ({signals.received.name}): the run stopped ({ended}, exit {code}). "
            f"Each table is at its last committed snapshot; `{home_prefix()}{venv_command('asgard')} "
            "demo` runs again what is left.",
            file=sys.stderr,
        )
        return 128 + signals.received  # as a shell reports a command its signal stopped
    if explained:
        print(
            f"\nThe run failed (exit {code}). Each step's traceback: run {followed.run_id} in "
            f"`{home_prefix()}{venv_command('asgard')} ui`; Dagster's log: {log_path}",
            file=sys.stderr,
        )
    else:  # no step failed: the run did not start, or failed around its steps
        print(f"\nThe run failed (exit {code}); the last lines of {log_path}:", file=sys.stderr)
        print("".join(log_path.read_text().splitlines(keepends=True)[-25:]), file=sys.stderr)
    return code or 1


def _stamp_inputs(days: str) -> dict | None:
    """What this run will run on, to stamp it with once it succeeds; None where that cannot
    be told from here (state in services, a source table that is not there: the run says
    which)."""
    if journey_stamp.checkable() is not None:
        return None
    import sqlalchemy as sa

    try:
        return journey_stamp.inputs(days)
    except sa.exc.SQLAlchemyError:  # the run's bronze step reports what is wrong with it
        return None


class _Tee(io.StringIO):
    """Text written to it goes to ``out`` too."""

    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.out.flush()


@contextmanager
def _kept_output() -> Iterator[io.StringIO]:
    """What is printed inside, printed and kept (the run's summary, for its stamp)."""
    out = sys.stdout
    sys.stdout = tee = _Tee(out)
    try:
        yield tee
    finally:
        sys.stdout = out


def _nothing_changed(ran_on: dict) -> bool:
    """True, with the last run's summary printed, when it ran on the same inputs and the
    stores and service are as it left them."""
    last = journey_stamp.last()
    if last is None:
        return False
    if (why := journey_stamp.changed(last, ran_on)) is not None:
        print(f"Changed since run {last.run_id[:8]} ({last.when()}): {why}.")
        return False
    print(
        f"Nothing to run: the source, the code, the settings and the days are those of run "
        f"{last.run_id[:8]} ({last.when()}), and the tables, the model registry, the feature "
        f"store and the inference service are as it left them (`{home_prefix()}{venv_command('asgard')} "
        f"demo --force` runs every step anyway).\nThat run's summary:"
    )
    print(last.summary, end="")
    return True


def stop() -> int:
    from .contracts.model import MODEL_NAME
    from .resources.deployer import LocalDeployer

    deployer = LocalDeployer()
    current = deployer.current(MODEL_NAME)
    if current is None:
        print(f"no inference service of {MODEL_NAME} is running (ASGARD_HOME={asgard_home()})")
        return 0
    deployer.stop(MODEL_NAME)
    print(f"stopped the inference service at {current.url} (pid {current.pid})")
    return 0


def load_demo(url: str) -> int:
    import sqlalchemy as sa

    from . import demo_data
    from .contracts.sources import table_name
    from .source_url import SourceUrlError, error_line, redact

    try:
        counts = demo_data.load(url)
    except (sa.exc.DBAPIError, SourceUrlError) as e:
        reason = error_line(e)
        database = sa.engine.make_url(url).database if isinstance(e, sa.exc.DBAPIError) else None
        hint = ""
        if database and f'database "{database}" does not exist' in reason:  # PostgreSQL's
            hint = f" (create it first, e.g. psql -h HOST -U USER -c 'CREATE DATABASE {database}')"
        elif database and "Unknown database" in reason:  # MySQL's and MariaDB's
            hint = f" (create it first, e.g. mysql -h HOST -u USER -e 'CREATE DATABASE {database}')"
        print(f"asgard load-demo: cannot load into {redact(url)}: {reason}{hint}", file=sys.stderr)
        return 1
    parsed = sa.engine.make_url(url)
    dialect = parsed.get_backend_name()
    where = sorted({table_name(t, dialect) for t in counts})
    print(f"loaded {sum(counts.values()):,} rows into {redact(url)}: {counts}")
    if dialect in ("mysql", "mariadb"):
        print(
            f"tables: {', '.join(where)} (in MySQL a schema is a database: the database in the "
            f"URL, {parsed.database or '(none)'}, only opens the connection)"
        )
    else:
        print(f"tables: {', '.join(where)}")
    return 0


def add_day() -> int:
    from . import demo_data
    from .contracts.sources import PARTITIONED_TABLES
    from .settings import demo_source_path, source_url

    if source_url() is not None:
        print(
            "asgard add-day: ASGARD_SOURCE_URL is set; only the demo database grows this way "
            "(your own database gets its new rows from its application)",
            file=sys.stderr,
        )
        return 1
    path = demo_source_path()
    demo_data.ensure_sqlite(path)
    day, added = demo_data.add_day(path)
    rows = ", ".join(f"{n:,} {table.replace('_', ' ')}" for table, n in added.items())
    print(f"added {day} to the demo database {path}: {rows} (its last day again, new ids)")
    tables = ",".join(f"{layer}/{t}" for t in PARTITIONED_TABLES for layer in ("bronze", "silver"))
    # selections quoted as the README types them
    that_day = " ".join(materialize_command(f"'{tables}'", "--partition", day))
    onwards = " ".join(materialize_command("'gold/operator_features*'"))
    print(
        f"that day only, then gold and what follows it (a new model version when gold "
        f"changed, swapped into the running service):\n"
        f"  {home_prefix()}{that_day}\n  {home_prefix()}{onwards}\n"
        f"or every day again: {home_prefix()}{venv_command('asgard')} demo; in `asgard ui` (its "
        f"definitions reloaded) the new_source_rows sensor and the automation do the same"
    )
    return 0


def missing_settings() -> None:
    """Outside the local profile, every environment variable the profile needs, named at
    once before a run starts (MissingSettings, a ValueError), not inside its first step."""
    if settings.profile() != "local":
        from .resources import resources_for

        resources_for()  # builds them: raises MissingSettings naming every unset one


def ui(port: int) -> int:
    try:
        settings.check()
    except ValueError as e:
        print(f"asgard ui: {e}", file=sys.stderr)
        return 1
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "dev", "-w", str(ROOT / "workspace.yaml"), "-p", str(port)]
    # its own shutdown of its webserver, daemon and code server, not an orphaned tree
    with forwarded_signals() as signals:
        return signals.start(cmd, env=instance_env(), cwd=ROOT).wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asgard", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_p = sub.add_parser(
        "demo", help="materialize the whole lineage graph, every day in one run"
    )
    demo_p.add_argument(
        "--force",
        action="store_true",
        help="run even when nothing changed since the last successful demo",
    )
    ui_p = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on the same instance")
    ui_p.add_argument("--port", type=int, default=3000, help="the UI's port (default: 3000)")
    sub.add_parser("stop", help="stop the inference service the demo started")
    load = sub.add_parser("load-demo", help="load the demo factory database into a SQLAlchemy URL")
    load.add_argument("url", help="e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/factory")
    sub.add_parser("add-day", help="one more day in the demo database (its last day again)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        return demo(args.force)
    if args.command == "stop":
        return stop()
    if args.command == "load-demo":
        return load_demo(args.url)
    if args.command == "add-day":
        return add_day()
    return ui(args.port)


if __name__ == "__main__":
    sys.exit(main())

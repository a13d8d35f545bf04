"""Following a run's Dagster event log as it is written: one line per asset as its step
ends (``ok``, ``same`` or ``FAIL``), the run's id and how it ended. ``asgard demo`` reads
the log of the run it started; the summary prints the step ends the log never showed."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

# a Dagster log line: "<time> - dagster - <LEVEL> - <job> - <run id> - <pid> - <step> - <EVENT> - <message>"
EVENT_LINE = re.compile(
    r" - dagster - \w+ - [^ ]+ - (?P<run>[0-9a-f-]{36}) - \d+ - (?:(?P<step>[\w.]+) - )?"
    r"(?P<event>[A-Z_]+) - (?P<message>.*)"
)
STEP_TIME = re.compile(r" in (?P<time>[\d.]+m?s)\.?$")
MATERIALIZED = re.compile(r"^Materialized value (?P<key>.+?)\.?$")
# a step's own log line saying it found nothing to do (metadata.skipped writes it)
SKIPPED = re.compile(r" - dagster - INFO - [^ ]+ - [0-9a-f-]{36} - (?P<step>[\w.]+) - skipped: ")


RUN_ENDED = {"RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"}


class Followed(NamedTuple):
    run_id: str | None
    ended: str | None  # the run's last event, None when the log ended before it
    reported: set[str]  # the steps whose end was seen (and printed when it has assets)


def asset_name(step: str) -> str:
    """A step's asset as a user names it (``bronze__work_orders`` -> ``bronze/work_orders``)."""
    return step.replace("__", "/")


def took_of(message: str) -> str:
    """The duration in Dagster's STEP_SUCCESS message ("... in 6.1s."), as written there."""
    took = STEP_TIME.search(message)
    return took["time"] if took else ""


class StepLines:
    """One line per asset as its step ends: ``ok`` (it did work), ``same`` (it found nothing
    to do), ``FAIL``; fed live from Dagster's log lines, or from the run's stored events."""

    def __init__(self) -> None:
        self.assets: dict[str, dict[str, None]] = {}  # step -> its assets, in order
        self.same: set[str] = set()
        self.reported: set[str] = set()

    def materialized(self, step: str, key: str) -> None:
        self.assets.setdefault(step, {})[key] = None

    def skipped(self, step: str) -> None:
        self.same.add(step)

    def succeeded(self, step: str, took: str) -> None:
        word = "same" if step in self.same else "ok"
        for key in self.assets.get(step, ()):
            print(f"  {word:<6}{key:<44} {took}", flush=True)
        self.reported.add(step)

    def failed(self, step: str) -> None:  # why: printed from the run's events at its end
        print(f"  FAIL  {asset_name(step)}", flush=True)
        self.reported.add(step)


def lines_of(path: Path, process: subprocess.Popen) -> Iterator[str]:
    """The lines ``process`` writes to ``path``, as it writes them, until it exits."""
    with path.open() as file:
        partial = ""
        while True:
            partial += file.readline()
            if partial.endswith("\n"):
                yield partial
                partial = ""
            elif process.poll() is None:
                time.sleep(0.05)
            elif not (rest := file.read()):
                if partial:
                    yield partial
                return
            else:
                partial += rest


def follow(lines: Iterable[str], on_start: Callable[[str], None] = lambda step: None) -> Followed:
    """Print one line per materialized asset (named by its key: the dbt step is
    ``gold/operator_features``) and per failed step from Dagster's event stream
    (``on_start`` is told of each step as it starts). Returns once the run has ended."""
    run_id, out = None, StepLines()
    for line in lines:
        match = EVENT_LINE.search(line)
        if not match:
            if skipped := SKIPPED.search(line):
                out.skipped(skipped["step"])
            continue
        run_id = run_id or match["run"]
        step, event = match["step"], match["event"]
        if event == "STEP_START":
            on_start(step)
        elif event == "ASSET_MATERIALIZATION":
            named = MATERIALIZED.match(match["message"])
            out.materialized(step, named["key"].replace(" ", "/") if named else asset_name(step))
        elif event == "STEP_SUCCESS":
            out.succeeded(step, took_of(match["message"]))
        elif event == "STEP_FAILURE":
            out.failed(step)
        elif event in RUN_ENDED:
            return Followed(run_id, event, out.reported)
    return Followed(run_id, None, out.reported)

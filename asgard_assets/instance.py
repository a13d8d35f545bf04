"""Where the Dagster instance lives: ``$DAGSTER_HOME``, by default ``$ASGARD_HOME/dagster``.

``asgard``'s commands set it for what they start. ``make install`` also puts ``asgard.pth``
into the venv, which runs :func:`apply_defaults` when one of this venv's ``dagster``,
``feast`` or ``mlflow`` commands starts: variables the user did not set default to the
same home (``./.asgard``, absolute) and instance, so ``.venv/bin/dagster asset materialize``
lands its runs where ``make ui`` looks, and ``.venv/bin/feast -c feature_repo`` finds the
feature store. Anything the user exports wins. The Dagster CLI creates its instance before
it imports the code, so this cannot live in the code itself.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import warnings
from pathlib import Path

from .file_state import write_whole
from .settings import asgard_home, export_absolute_paths

ROOT = Path(__file__).resolve().parent.parent
# commands whose processes get the defaults (their subprocesses inherit them)
COMMANDS = ("dagster", "feast", "mlflow")
PTH_NAME = "asgard.pth"
PTH_LINE = (
    "import sys; sys.argv and __import__('os').path.basename(sys.argv[0]).startswith("
    f"{COMMANDS!r}) and __import__('asgard_assets.instance').instance.apply_defaults()\n"
)


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` or ``$ASGARD_HOME/dagster``, created with the project's
    ``dagster.yaml`` (telemetry off) on first use."""
    home = Path(os.environ.get("DAGSTER_HOME") or asgard_home() / "dagster").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (ROOT / "dagster.yaml").exists():
        # whole or not at all: another process starting on the new home reads it meanwhile
        write_whole(home / "dagster.yaml", (ROOT / "dagster.yaml").read_text())
    return home


def instance_env() -> dict[str, str]:
    """The environment for Dagster commands: ``DAGSTER_HOME`` set, ``ASGARD_HOME`` and a folder
    ``ASGARD_WAREHOUSE`` absolute."""
    os.environ["DAGSTER_HOME"] = str(dagster_home())
    export_absolute_paths()
    return dict(os.environ)


def apply_defaults() -> None:
    """Run by ``asgard.pth`` at the start of this venv's dagster/feast/mlflow commands."""
    instance_env()
    if os.path.basename(sys.argv[0]).startswith("dagster"):
        if sys.argv[1:2] in (["asset"], ["job"]):  # the commands a selection is typed into
            sys.excepthook = _one_line_cli_errors
            if mistake := _reversed_range_typed(sys.argv):
                # Dagster would start the run, and the run fail in its first step. This
                # runs while `site` imports .pth files, where SystemExit is a fatal error:
                # nothing has started yet, so the process ends here
                print(f"error: {mistake}", file=sys.stderr, flush=True)
                os._exit(1)
        # Dagster's own notices on the commands the README uses, not about Asgard's code:
        # `asset materialize` and `dev` are "superseded" by the `dg` tool, and selecting `*` uses a
        # beta parameter inside Dagster
        for message in (
            "Function `asset_materialize_command` is superseded",
            "Function `dev_command` is superseded",
            "Parameter `include_sources` of function `AssetSelection.all` is currently in beta",
        ):
            warnings.filterwarnings("ignore", message=message)
        # `dagster dev` from the repository root warns that the dagster.yaml there is not
        # used: DAGSTER_HOME holds the copy of it that is (dagster_home puts it there)
        logging.getLogger("dagster").addFilter(
            lambda record: "will not be used to configure Dagster" not in record.getMessage()
        )


def _reversed_range_typed(argv: list[str]) -> str | None:
    from .days import typed_range_mistake

    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name == "--partition-range":
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            return typed_range_mistake(value)
    return None


def _one_line_cli_errors(kind, error, tb) -> None:
    """A mistake in what was typed (a selection, a day, a range, run config) is said in one
    line, or in Dagster's own words without its traceback; anything else as usual."""
    line = _typed_mistake(error)
    if line is None:
        sys.__excepthook__(kind, error, tb)
    else:
        print(f"error: {line}", file=sys.stderr)


def _typed_mistake(error: BaseException) -> str | None:
    from dagster._core.errors import DagsterInvalidConfigError, DagsterInvalidSubsetError

    text = str(error)
    if "no '--partition' option was provided" in text:
        # `--select '*'` without days raises a bare CheckError: say what to add
        days, none = _days()
        if days is None:
            return f"the selection has daily-partitioned assets, and {none}"
        return (
            "the selection has daily-partitioned assets: add --partition-range "
            f"{days} (every day, one run) or --partition DAY"
        )
    if "Invalid partition range format" in text:
        days, _ = _days()
        example = f": e.g. {days}" if days else ""
        return f"--partition-range takes FIRST...LAST, three dots{example}"
    if isinstance(error, DagsterInvalidSubsetError):
        if "partition key" in text:  # a day outside the partitions
            days, none = _days()
            return f"{text} The daily partitions are {days}." if days else f"{text} And {none}."
        return text  # an unknown asset key, with Dagster's "did you mean"
    if isinstance(error, DagsterInvalidConfigError):
        return text
    return None


def _days() -> tuple[str | None, str]:
    """(every day as FIRST...LAST, "") or (None, why there is no day: the settings). Only
    for a mistake about days: with a real source it asks the source for its first day."""
    from . import settings
    from .days import all_days_range

    try:
        settings.check()
        return all_days_range(), ""
    except ValueError as e:
        return None, f"the daily partitions have no day: {e}"


def install_pth() -> Path:
    """Write ``asgard.pth`` into this interpreter's site-packages (``make install``)."""
    path = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    path.write_text(PTH_LINE)
    return path


if __name__ == "__main__":
    print(f"wrote {install_pth()}")

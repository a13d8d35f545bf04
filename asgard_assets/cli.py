"""``asgard``: the demo journey, the demo database anywhere, and the UI, from one command.

asgard demo                 materialize the whole journey on the embedded default
asgard load-demo URL        load the demo factory data into any SQLAlchemy database
asgard ui                   dagster dev on the same instance as ``asgard demo``
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .settings import asgard_home

ROOT = Path(__file__).resolve().parent.parent


def dagster_env() -> dict[str, str]:
    """DAGSTER_HOME defaults to ``$ASGARD_HOME/dagster`` so the CLI's runs show in the UI."""
    env = dict(os.environ)
    home = Path(env.get("DAGSTER_HOME") or asgard_home() / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (ROOT / "dagster.yaml").exists():
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(home)
    env["ASGARD_HOME"] = str(asgard_home())
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def journey_command() -> list[str]:
    """The whole journey as one run: the ``journey`` job over the days the source has rows
    on (a single-run backfill of those daily partitions)."""
    from .partitions import range_tags, source_days
    from .resources import resource

    return [
        _bin("dagster"),
        "job",
        "execute",
        "-m",
        "asgard_assets.definitions",
        "-j",
        "journey",
        "--tags",
        json.dumps(range_tags(source_days(resource("ingestion")))),
    ]


def demo() -> int:
    env = dagster_env()
    cmd = journey_command()
    print(f"ASGARD_HOME={env['ASGARD_HOME']}  DAGSTER_HOME={env['DAGSTER_HOME']}")
    print("$ " + shlex.join(cmd), flush=True)
    code = subprocess.call(cmd, env=env, cwd=ROOT)
    if code == 0:
        from .summary import print_summary

        print_summary()
    return code


def load_demo(url: str) -> int:
    from . import demo_data
    from .resources.ingestion import redact

    counts = demo_data.load(url)
    print(f"loaded {sum(counts.values()):,} rows into {redact(url)}: {counts}")
    return 0


def ui(port: int) -> int:
    cmd = [_bin("dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-p", str(port)]
    return subprocess.call(cmd, env=dagster_env(), cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asgard", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="materialize the whole journey on the embedded default")
    load = sub.add_parser("load-demo", help="load the demo factory database into a SQLAlchemy URL")
    load.add_argument("url", help="e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/factory")
    ui_p = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on this instance")
    ui_p.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    if args.command == "load-demo":
        return load_demo(args.url)
    return ui(args.port)


if __name__ == "__main__":
    sys.exit(main())

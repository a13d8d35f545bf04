"""Where Asgard keeps its state and which profile it runs under: read from the environment once."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

PROFILES = ("local", "k8s")
# gold's dbt target in each profile (dbt_project/profiles.yml): the profile chooses it
DBT_TARGETS = {"local": "duckdb", "k8s": "trino"}


def asgard_home() -> Path:
    """All local state (catalog, warehouse, dbt target, Feast, MLflow, deployments)."""
    home = Path(os.environ.get("ASGARD_HOME", ".asgard")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    # absolute, so dbt, Feast and the inference service (other working directories) agree
    os.environ["ASGARD_HOME"] = str(home)
    return home


def rest_catalog(catalog_uri: str) -> bool:
    """An Iceberg REST catalog (``http(s)://``); any other URI is a SQL catalog."""
    from urllib.parse import urlparse

    return urlparse(catalog_uri).scheme in ("http", "https")


def local_warehouse(warehouse: str, catalog_uri: str) -> str:
    """A warehouse that is a bare folder (no scheme) as an absolute ``file://`` URI, as
    ASGARD_HOME is made absolute: the catalog records the tables' paths, and relative ones
    would resolve against each reader's working directory. A REST catalog's warehouse may
    be a name, not a folder: left as it is."""
    if not warehouse or "://" in warehouse or rest_catalog(catalog_uri):
        return warehouse
    return Path(warehouse).expanduser().resolve().as_uri()


def export_absolute_paths() -> None:
    """ASGARD_HOME and a folder ASGARD_WAREHOUSE made absolute in the environment, for the
    processes this one starts in other working directories (`dagster dev` runs in the
    repository)."""
    asgard_home()
    if warehouse := os.environ.get("ASGARD_WAREHOUSE"):
        catalog = os.environ.get("ASGARD_CATALOG_URI", "")
        os.environ["ASGARD_WAREHOUSE"] = local_warehouse(warehouse, catalog)


def venv_command(name: str) -> str:
    """This venv's command, as the user would type it from where they stand (the
    repository root: ``.venv/bin/dagster``), else its full path."""
    import sys

    path = Path(sys.executable).with_name(name)
    local = Path(".venv/bin") / name
    return str(local) if local.exists() and local.samefile(path) else str(path)


def home_prefix() -> str:
    """``ASGARD_HOME=<home> `` to put before a command printed for the user to copy, when
    the home is not the default one (the command would otherwise act on ./.asgard)."""
    import shlex

    home = asgard_home()
    return (
        ""
        if home == (Path.cwd() / ".asgard").resolve()
        else f"ASGARD_HOME={shlex.quote(str(home))} "
    )


def profile() -> str:
    name = os.environ.get("ASGARD_PROFILE") or "local"  # empty is unset, as for the others
    if name not in PROFILES:
        raise ValueError(f"ASGARD_PROFILE={name!r} is not one of {', '.join(PROFILES)}")
    return name


def source_url() -> str | None:
    """The operational database to ingest; None means the generated demo database."""
    return os.environ.get("ASGARD_SOURCE_URL") or None


def partition_start() -> str | None:
    """First day of the daily partitions; None: the source's first day."""
    return _day("ASGARD_PARTITION_START")


def partition_end() -> str | None:
    """Last day of the daily partitions; None: the demo data's last day, or yesterday for
    a real source."""
    return _day("ASGARD_PARTITION_END")


def _day(name: str) -> str | None:
    """A day setting as YYYY-MM-DD (2025-02-1 is 2025-02-01); a ValueError naming it when it
    is not a day."""
    value = os.environ.get(name) or None
    if value is None:
        return None
    try:
        return f"{datetime.strptime(value, '%Y-%m-%d'):%Y-%m-%d}"
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a day: YYYY-MM-DD, e.g. 2025-02-01") from None


def dbt_target_unused(profile_name: str) -> str | None:
    """Why an ASGARD_DBT_TARGET other than the profile's target is not what gold is built
    with (Trino writes through the cluster's catalog, DuckDB through Asgard's), or None."""
    typed, target = os.environ.get("ASGARD_DBT_TARGET"), DBT_TARGETS[profile_name]
    if not typed or typed == target:
        return None
    other = next((p for p, t in DBT_TARGETS.items() if t == typed), None)
    switch = f" (ASGARD_PROFILE={other} builds it with {typed})" if other else ""
    return (
        f"ASGARD_DBT_TARGET={typed} is not used by the gold asset: ASGARD_PROFILE="
        f"{profile_name} builds gold with dbt's {target} target{switch}; it only sets the "
        "default target of dbt commands typed by hand"
    )


def check() -> None:
    """The settings read before anything runs, each judged: a ValueError names the first
    that cannot be used."""
    profile()
    start, end = partition_start(), partition_end()
    if start and end and start > end:
        raise ValueError(f"ASGARD_PARTITION_START={start} is after ASGARD_PARTITION_END={end}")


# the embedded stores' files, relative to ASGARD_HOME
CATALOG_DB = "catalog.db"
MLFLOW_DB = "mlflow/mlflow.db"


def embedded_catalog_uri() -> str:
    """The local Iceberg SQL catalog, when ``ASGARD_CATALOG_URI`` names no other."""
    return f"sqlite:///{asgard_home() / CATALOG_DB}"


def embedded_mlflow_uri() -> str:
    """MLflow's local store, when ``MLFLOW_TRACKING_URI`` names no other."""
    return f"sqlite:///{asgard_home() / MLFLOW_DB}"


def deployments_dir() -> Path:
    """The local deployer's state, bundles, service logs and metrics."""
    return asgard_home() / "deployments"


def demo_source_path() -> Path:
    return asgard_home() / "demo_factory.sqlite"

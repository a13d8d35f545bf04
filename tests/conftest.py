"""Shared fixtures: an isolated ASGARD_HOME per test, a demo lakehouse built once, and the
real database servers of the machine (in CI they must be there: a missing one fails)."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import dagster as dg
import hypothesis  # noqa: F401 - see below
import pytest
import sqlalchemy as sa

from asgard_assets import demo_data
from asgard_assets.bronze.assets import bronze_assets
from asgard_assets.bronze.checks import bronze_checks
from asgard_assets.partitions import range_tags
from asgard_assets.resources import resources_for
from asgard_assets.silver.assets import silver_assets

# hypothesis is imported at collection on purpose: its pytest plugin otherwise imports it
# lazily deep inside a running test, where CPython 3.11.7's parser fails with "AST
# constructor recursion depth mismatch" (seen running test_ingestion + test_orchestration).

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = [*bronze_assets, *silver_assets, *bronze_checks]


# `make test` runs the suite on two pytest-xdist workers. The tests that share one of these
# fixtures run on one worker, whole files at a time, so it is built once and no other test
# touches it meanwhile; every other test goes wherever a worker is free.
SHARED = {
    "demo_clone": ("test_readme.py", "test_ui.py"),  # one `make demo` in a repository copy
    # the journey built once, its inference service running (journey_home uses it)
    "_demo_journey": (
        "test_definitions.py",
        "test_estimators.py",
        "test_gold_features.py",
        "test_kubernetes.py",
        "test_models_serving.py",
        "test_orchestration.py",
        "test_serving_fuzz.py",
    ),
    "mysql_url": ("test_cli.py", "test_ingestion.py"),  # the server's production/inventory
}
GROUP_OF_FILE = {file: fixture for fixture, files in SHARED.items() for file in files}


def pytest_collection_modifyitems(items) -> None:
    """A test using a shared fixture from a file not listed with it would run beside the
    others: refused here, naming the list to add the file to."""
    for item in items:
        for fixture, files in SHARED.items():
            if fixture in item.fixturenames and item.path.name not in files:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {fixture}: add {item.path.name} to its files in "
                    "tests/conftest.py SHARED (its tests must run on one xdist worker)"
                )


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's
def pytest_xdist_make_scheduler(config, log):
    """For xdist's default --dist load: scheduling by scope, a scope being a SHARED group's
    files or else one test (xdist's own --dist loadgroup cannot mark tests under pytest 9).
    Another --dist asked for is xdist's own."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return GROUP_OF_FILE.get(file, nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_configure(config) -> None:
    """The dbt manifest parsed once, before any worker loads the definitions: on a new
    clone each worker would otherwise parse it into the same target folder at once."""
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        from asgard_assets.gold.project import dbt_project, prepare

        prepare(dbt_project)


def journey_assets() -> list:
    """Every asset and check of the definitions."""
    from asgard_assets.definitions import defs

    return [*defs.assets, *defs.asset_checks]


# the demo data's days: the range the whole-table fixtures materialize
DEMO_DAYS = range_tags(
    [
        f"{demo_data.START:%Y-%m-%d}",
        f"{demo_data.START + timedelta(days=demo_data.DAYS - 1):%Y-%m-%d}",
    ]
)


def materialize(selection: str = "*", run_config: dict | None = None, assets=None, **kw):
    """Materialize in-process with the local resources of the current ASGARD_HOME; daily
    partitions: all the demo data's days in one run unless ``partition_key`` or ``tags``
    say otherwise."""
    if "partition_key" not in kw:
        kw["tags"] = {**DEMO_DAYS, **kw.get("tags", {})}
    return dg.materialize(
        assets or FOUNDATION,
        resources=resources_for("local"),
        selection=selection if selection == "*" else selection.split(),
        run_config=run_config,
        **kw,
    )


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty ASGARD_HOME for this test."""
    monkeypatch.setenv("ASGARD_HOME", str(tmp_path / "asgard"))
    monkeypatch.delenv("ASGARD_SOURCE_URL", raising=False)
    return tmp_path / "asgard"


@contextmanager
def asgard_home_env(path: Path):
    """ASGARD_HOME set to ``path`` for session fixtures (monkeypatch is function-scoped)."""
    old = os.environ.get("ASGARD_HOME")
    os.environ["ASGARD_HOME"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("ASGARD_HOME", None)
        else:
            os.environ["ASGARD_HOME"] = old


@pytest.fixture(scope="session")
def _demo_foundation(tmp_path_factory) -> Path:
    with asgard_home_env(tmp_path_factory.mktemp("foundation") / "asgard") as path:
        assert materialize().success
    return path


@pytest.fixture(scope="session")
def _demo_journey(tmp_path_factory) -> Path:
    with asgard_home_env(tmp_path_factory.mktemp("journey") / "asgard") as path:
        assert materialize(assets=journey_assets()).success
    yield path
    # the journey started an inference service: stop it by its pid
    from asgard_assets.contracts.model import MODEL_NAME
    from asgard_assets.resources.deployer import LocalDeployer

    with asgard_home_env(path):
        LocalDeployer().stop(MODEL_NAME)


@pytest.fixture
def journey_home(_demo_journey, monkeypatch) -> Path:
    """The home where the whole journey ran once on the demo data. Read-only."""
    monkeypatch.setenv("ASGARD_HOME", str(_demo_journey))
    monkeypatch.delenv("ASGARD_SOURCE_URL", raising=False)
    return _demo_journey


@pytest.fixture
def demo_home(_demo_foundation, monkeypatch) -> Path:
    """The home where bronze and silver were built once from the demo data. Read-only:
    tests that write build their own with ``home``."""
    monkeypatch.setenv("ASGARD_HOME", str(_demo_foundation))
    monkeypatch.delenv("ASGARD_SOURCE_URL", raising=False)
    return _demo_foundation


@pytest.fixture(scope="session")
def _demo_source_file(tmp_path_factory) -> Path:
    """The demo database, generated once (a generation takes about a second)."""
    path = tmp_path_factory.mktemp("demo-source") / "source.sqlite"
    demo_data.ensure_sqlite(path)
    return path


@pytest.fixture
def own_source(home, tmp_path, monkeypatch, _demo_source_file) -> str:
    """A private copy of the demo database as the source, to change rows in."""
    import shutil

    path = tmp_path / "source.sqlite"
    shutil.copyfile(_demo_source_file, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("ASGARD_SOURCE_URL", url)
    return url


def _server(url: str, what: str) -> str:
    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as e:  # noqa: BLE001 - any failure means the server is not usable
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is required in CI but unreachable at {url}: {e}")
        pytest.skip(f"{what} not reachable: {e}")
    return url


@pytest.fixture
def postgres_url() -> str:
    """A fresh database on the machine's PostgreSQL server, dropped afterwards."""
    admin = _server(
        os.environ.get("ASGARD_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
        "PostgreSQL",
    )
    name = f"asgard_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    engine.dispose()


@pytest.fixture
def mysql_url() -> str:
    """The machine's MariaDB server; the demo schemas are databases there, dropped afterwards."""
    url = _server(
        os.environ.get("ASGARD_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"),
        "MariaDB/MySQL",
    )
    yield url
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for db in ("production", "inventory"):
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))
    engine.dispose()


def create_source_table(
    url: str, table: str, rows: list[dict], columns: dict[str, sa.types.TypeEngine] | None = None
) -> None:
    """Create source ``table`` in the database at ``url`` (its schema where the dialect has
    schemas) with the registry's columns, or exactly ``columns`` (name -> SQL type) to
    break the contract, and insert ``rows``; replaces a table of that name."""
    schema, name = demo_data.qualified_name(table, sa.engine.make_url(url).get_backend_name())
    template = demo_data.TABLES[table]
    if columns is None:
        columns = {c.name: c.type for c in template.columns}
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if schema:
            kw = "DATABASE" if conn.dialect.name in ("mysql", "mariadb") else "SCHEMA"
            conn.execute(sa.text(f"CREATE {kw} IF NOT EXISTS {schema}"))
        target = sa.Table(
            name, sa.MetaData(), *(sa.Column(n, t) for n, t in columns.items()), schema=schema
        )
        target.drop(conn, checkfirst=True)
        target.create(conn)
        if rows:
            conn.execute(target.insert(), rows)
    engine.dispose()


def repo_copy(dest: Path) -> Path:
    """What a clone of the repository holds (tracked and new unignored files, with their
    times, so make sees the venv as up to date), with this checkout's .venv linked in."""
    import shutil
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


def clean_env() -> dict[str, str]:
    """The environment of a user who exported nothing of Asgard's, Dagster's or MLflow's."""
    names = ("ASGARD_", "DAGSTER_", "PYICEBERG_", "MLFLOW_")
    # nor a make of their own: `make test` would hand MAKELEVEL/MAKEFLAGS down, and the
    # inner `make demo` would add "Entering/Leaving directory" lines to its output
    make = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    return {k: v for k, v in os.environ.items() if not k.startswith(names) and k not in make}


def imported_after(code: str, home: Path, modules: str) -> list[str]:
    """The modules (sorted) that ``modules``, a predicate on a module's name ``m``, selects
    once ``code`` has run in a fresh interpreter: what a process would import for it."""
    import ast
    import subprocess
    import sys

    script = f"import sys; {code}; print(sorted(m for m in sys.modules if {modules}))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**clean_env(), "ASGARD_HOME": str(home)},
    ).stdout
    return ast.literal_eval(out)


@pytest.fixture(scope="session")
def demo_clone(tmp_path_factory):
    """A copy of the repository where ``make demo`` ran, as a user runs it (state in its
    ``.asgard``); yields (path, make demo's output). Shared by the README and UI tests."""
    import subprocess

    clone = repo_copy(tmp_path_factory.mktemp("clone"))
    done = subprocess.run(
        ["make", "demo"], cwd=clone, env=clean_env(), capture_output=True, text=True, timeout=1800
    )
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield clone, done.stdout
    finally:
        subprocess.run([".venv/bin/asgard", "stop"], cwd=clone, env=clean_env(), check=False)

"""The dbt project: where it lives and how its manifest is prepared. Imported by the gold
assets and by the dbt resource, so neither has to import the other."""

from functools import cached_property
from importlib.metadata import version
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging.version import Version

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_DIR, target="duckdb")


def prepare(project: DbtProject) -> DbtProject:
    """Parse once into a manifest, and again only after the project's files changed
    (`dagster dev` re-parses on every load)."""
    project.prepare_if_dev()
    manifest = project.manifest_path
    root = Path(project.project_dir)
    files = [p for d in ("models", "macros", "tests") for p in (root / d).rglob("*") if p.is_file()]
    if not manifest.exists() or any(
        p.stat().st_mtime > manifest.stat().st_mtime for p in [*files, root / "dbt_project.yml"]
    ):
        project.preparer.prepare(project)
    return project


class AsgardDbtCli(DbtCliResource):
    """dagster-dbt's dbt resource without two costs it pays on every invocation for features
    Asgard does not use: a ``dbt --version`` process to learn the version (a dbt process
    start, seconds; the version is the installed dbt-core's) and an in-process dbt adapter
    (loads the profile's adapters; only dagster-dbt's column-metadata and row-count helpers
    use it). Both are dagster-dbt internals (pinned in requirements.lock); tested by the
    gold tests, which run dbt through this resource."""

    @cached_property
    def _cli_version(self) -> Version:
        return Version(version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        return None

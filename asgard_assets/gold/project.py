"""The dbt project: where it lives and how its manifest is prepared. Imported by the gold
assets and by the dbt resource, so neither has to import the other."""

from pathlib import Path

from dagster_dbt import DbtProject

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

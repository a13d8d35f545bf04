"""The dbt project: where it lives and how its manifest is prepared. Imported by the gold
assets and by the dbt resource, so neither has to import the other."""

import fcntl
import hashlib
import json
import logging
from collections.abc import Sequence
from functools import cached_property
from importlib.metadata import version
from pathlib import Path

from dagster import AssetExecutionContext, OpExecutionContext
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject
from dagster_dbt.asset_utils import (
    extract_runtime_selection_from_args,
    get_updated_cli_invocation_params_for_context,
)
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation
from dagster_dbt.dagster_dbt_translator import validate_opt_translator
from dagster_dbt.dbt_manifest import DbtManifestParam, validate_manifest
from dagster_dbt.errors import DagsterDbtCliRuntimeError
from packaging.version import Version

from ..file_state import files_state, write_whole
from .dbt_in_process import DbtThread

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_DIR, target="duckdb")


# in the target folder, beside the manifest: what it was parsed from
PARSED_FROM = "asgard-parsed-from.json"


def prepare(project: DbtProject) -> DbtProject:
    """Parse into a manifest once, and again only when the project's files (any added,
    removed, renamed or changed) or the dbt packages changed. Not dagster-dbt's
    ``prepare_if_dev``: under `dagster dev` (`asgard ui`) it parses on every load of the
    definitions, which is every run's process too (3.6 s a run here). One process parses at
    a time; the others wait and read its manifest. The parse state left in the project's
    target folder seeds each new home's first build (gold/assets.invocation_target)."""
    manifest = project.manifest_path
    root = Path(project.project_dir)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest.parent / ".asgard-parse.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        inputs = _parse_inputs(root, manifest.parent)
        if _parsed_from(project) == inputs:
            return project
        try:
            project.preparer.prepare(project)
        except DagsterDbtCliRuntimeError as e:
            if not manifest.exists():
                raise
            # one model's typo must not take the whole code location (ingestion, sensors,
            # the UI) down with it: gold is built from its last parse, and its step fails
            # with dbt's own message until the project parses again
            logging.getLogger(__name__).warning(
                f"dbt cannot parse {root}, gold keeps its last parsed models: {e}"
            )
            return project
        write_whole(manifest.parent / PARSED_FROM, json.dumps(inputs))  # read without the lock
    return project


def project_digest(project: DbtProject) -> str:
    """The content of every file of the project (but its target and logs): a model's build
    depends on the macros, tests and configuration besides its own SQL (dagster-dbt's code
    version), and a model dbt cannot parse leaves the manifest, and its code versions, at
    the last good parse."""
    root = Path(project.project_dir)
    digest = hashlib.sha256()
    for name in files_state(root, skip=(project.manifest_path.parent, root / "logs")):
        try:
            digest.update(f"{name}\0".encode() + (root / name).read_bytes() + b"\0")
        except FileNotFoundError:  # removed since it was listed
            continue
    return digest.hexdigest()[:16]


def _parsed_from(project: DbtProject) -> dict | None:
    stamp = project.manifest_path.parent / PARSED_FROM
    if not (project.manifest_path.exists() and stamp.exists()):
        return None
    try:
        return json.loads(stamp.read_text())
    except ValueError:  # a stamp cut short (a crash while writing it): parse again
        return None


def _parse_inputs(root: Path, target: Path) -> dict:
    """Every file of the project (but its target and logs) and the dbt packages' versions:
    what a parse depends on."""
    files = files_state(root, skip=(target, root / "logs"))
    return {"files": files, "dbt": {d: version(d) for d in ("dbt-core", "dbt-duckdb")}}


class AsgardDbtCli(DbtCliResource):
    """dagster-dbt's dbt resource with dbt run in the step's process (``DbtThread``) instead
    of a dbt process per command, and without a ``dbt --version`` process to learn the
    version (the installed dbt-core's) or a second dbt adapter (only dagster-dbt's
    column-metadata and row-count helpers use it). These lean on dagster-dbt internals
    (pinned in requirements.lock); the gold tests run dbt through this resource."""

    def cli(
        self,
        args: Sequence[str],
        *,
        raise_on_error: bool = True,
        manifest: DbtManifestParam | None = None,
        dagster_dbt_translator: DagsterDbtTranslator | None = None,
        context: OpExecutionContext | AssetExecutionContext | None = None,
        target_path: Path | None = None,
    ) -> DbtCliInvocation:
        """``DbtCliResource.cli``: the same selection for the step's assets and checks, the
        same invocation object to stream events from, the command run by ``DbtThread``."""
        args, selects, excludes = extract_runtime_selection_from_args(args)
        params = get_updated_cli_invocation_params_for_context(
            context=context,
            manifest=validate_manifest(manifest) if manifest else {},
            dagster_dbt_translator=validate_opt_translator(dagster_dbt_translator)
            or DagsterDbtTranslator(),
            runtime_selects=selects,
            runtime_excludes=excludes,
        )
        project_dir = Path(
            params.dbt_project.project_dir if params.dbt_project else self.project_dir
        )
        target = Path(target_path or self._get_unique_target_path(context=context))
        target = target if target.is_absolute() else project_dir / target
        # what dagster-dbt puts in its subprocess's environment and working directory, as
        # flags: this process's environment and working directory are not dbt's to change
        flags = ["--project-dir", str(project_dir), "--target-path", str(target)]
        flags += ["--log-path", str(target), "--log-level", "none"]  # events come by callback
        flags += ["--no-send-anonymous-usage-stats"]
        profiles_dir = self.profiles_dir or (
            project_dir if (project_dir / "profiles.yml").exists() else None
        )
        if profiles_dir:
            flags += ["--profiles-dir", str(profiles_dir)]
        if self.profile:
            flags += ["--profile", self.profile]
        if self.target:
            flags += ["--target", self.target]
        if params.indirect_selection:
            flags += ["--indirect-selection", params.indirect_selection]
        command = [*self.global_config_flags, *args, *flags, *params.selection_args]
        return DbtCliInvocation(
            process=DbtThread(command),  # type: ignore[arg-type]  # Popen's used parts
            manifest=params.manifest,
            dagster_dbt_translator=params.dagster_dbt_translator,
            project_dir=project_dir,
            target_path=target,
            raise_on_error=raise_on_error,
            context=context,
            cli_version=self._cli_version,
            project=params.dbt_project,
        )

    @cached_property
    def _cli_version(self) -> Version:
        return Version(version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        return None

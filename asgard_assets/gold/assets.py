"""gold/*: the dbt project, one Dagster asset per dbt model, dbt tests as asset checks."""

import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from .. import judged
from ..built_from import built_from, inputs, record
from ..file_state import write_whole
from ..metadata import skipped, table_metadata
from ..resources.lakehouse import Lakehouse
from ..resources.write_results import described
from ..settings import asgard_home
from .project import DBT_DIR, dbt_project, prepare, project_digest  # noqa: F401 - re-exported


def docs_link(project: DbtProject, unique_id: str) -> dg.MetadataValue:
    """Where a model's dbt docs are: ``ASGARD_DBT_DOCS_URL`` (hosted docs) when set, else the
    local page (a browser will not open file links from the UI, so it is shown as a path)."""
    anchor = f"#!/{unique_id.split('.')[0]}/{unique_id}"
    hosted = os.environ.get("ASGARD_DBT_DOCS_URL")
    if hosted:
        return dg.MetadataValue.url(hosted.rstrip("/") + "/" + anchor)
    return dg.MetadataValue.path(f"{docs_page(project)}{anchor}")


def docs_page(project: DbtProject) -> Path:
    return Path(project.project_dir) / project.target_path / "docs" / "static_index.html"


def docs_current(project: DbtProject) -> bool:
    """The docs page was written since the project last changed (its manifest's parse)."""
    page = docs_page(project)
    return page.exists() and page.stat().st_mtime >= project.manifest_path.stat().st_mtime


def write_docs(project: DbtProject, dbt: DbtCliResource, target: Path) -> None:
    """dbt docs as one self-contained page, from the build just made in ``target`` (its
    compiled manifest, which the build wrote: no second compile)."""
    page = docs_page(project)
    args = ["--quiet", "docs", "generate", "--static", "--empty-catalog", "--no-compile"]
    dbt.cli(args, manifest=project.manifest_path, target_path=target).wait()
    page.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all: two processes may write it at once (a new parse, two homes)
    write_whole(page, (target / page.name).read_bytes())


class AsgardDbtTranslator(DagsterDbtTranslator):
    """Asset key = Iceberg identifier: model gold.operator_features is gold/operator_features,
    source silver.work_orders is the silver/work_orders asset. Docs links point into
    ``project``'s docs page."""

    def __init__(self, project: DbtProject):
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_code_references=False))
        self.project = project

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return dg.AssetKey(
            [dbt_resource_props["config"].get("schema") or "gold", dbt_resource_props["name"]]
        )

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return "gold"

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = dict(super().get_metadata(dbt_resource_props))
        if dbt_resource_props["resource_type"] == "model":
            meta["dbt_docs"] = docs_link(self.project, dbt_resource_props["unique_id"])
        return meta

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        # rebuilt once silver has settled after any update (see transform_automation); days
        # never loaded (no source rows) are no reason to wait
        return dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def model_inputs(
    context: dg.AssetExecutionContext, lakehouse: Lakehouse, key: dg.AssetKey, files: str
) -> str:
    """What a model is built from: its SQL's code version, the project's ``files``
    (``project_digest``) and the current snapshot of each Iceberg table it reads (its silver
    sources)."""
    sources = [".".join(k.path) for k in context.assets_def.asset_deps[key]]
    code = f"{context.assets_def.code_versions_by_key.get(key)}+{files}"
    return inputs(lakehouse, code, sources)


def _name(key: dg.AssetKey) -> str:
    return ".".join(key.path)


def unchanged_output(
    context: dg.AssetExecutionContext, lakehouse: Lakehouse, key: dg.AssetKey
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The model's table as it is, and the dbt tests' results its snapshot was built with
    (those of the checks this run selected)."""
    table = lakehouse.table(_name(key))
    written = described(table, _name(key))
    yield dg.Output(
        None,
        output_name=context.assets_def.get_output_name_for_asset_key(key),
        metadata={
            "dagster/row_count": written.total_rows,
            "iceberg_snapshot_id": str(written.snapshot_id),
            **skipped(
                context,
                "dbt not run: no silver input and no file of the dbt project changed since this "
                "snapshot",
            ),
        },
        data_version=dg.DataVersion(str(written.snapshot_id)),
    )
    selected = context.selected_asset_check_keys
    for check in judged.recorded(table, key) or []:
        if dg.AssetCheckKey(key, check.check_name) in selected:
            yield check


def build_gold_assets(project: DbtProject) -> dg.AssetsDefinition:
    """The dbt assets of ``project`` (a factory, so tests can build them over a copy)."""

    @dbt_assets(
        manifest=project.manifest_path,
        dagster_dbt_translator=AsgardDbtTranslator(project),
        # no project=: dagster-dbt would put the DbtProject object itself into every
        # model's metadata, shown as "[DbtProject] (unserializable)"; the translator and the
        # dbt resource already know the project
    )
    def gold_dbt_assets(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, lakehouse: Lakehouse
    ):
        """dbt build: each model lands as an Iceberg table in `gold`; dbt tests are asset
        checks. A failing model or test fails the step with dbt's own message. When no
        model's silver inputs nor the project's files changed since it was built, dbt is not
        run."""
        files = project_digest(project)
        built = {
            key: model_inputs(context, lakehouse, key, files) for key in context.selected_asset_keys
        }
        if all(built_from(lakehouse, _name(key)) == built[key] for key in built):
            for key in sorted(built, key=lambda k: k.to_user_string()):
                yield from unchanged_output(context, lakehouse, key)
            return
        (asgard_home() / "dbt" / "external").mkdir(
            parents=True, exist_ok=True
        )  # where macros/external_location.sql puts the models' scratch files
        written_keys: list[dg.AssetKey] = []
        checks: dict[dg.AssetKey, list[dg.AssetCheckResult]] = {}
        before = {key: lakehouse.snapshot_id(_name(key)) for key in built}
        docs_due = not docs_current(project)
        with invocation_target(context, project) as target:
            for event in _build(context, dbt, lakehouse, target, written_keys, before, docs_due):
                if isinstance(event, dg.AssetCheckResult):
                    checks.setdefault(event.asset_key, []).append(event)
                yield event
            # only once the build and its tests passed: a failed test means build again;
            # the tests' results are kept for a run that finds nothing to build
            for key in written_keys:
                record(lakehouse, _name(key), built[key], checks.get(key, []))
            if docs_due:
                write_docs(project, dbt, target)
        # dbt-duckdb's external files only carried each model into Iceberg (and to the dbt
        # tests): the Iceberg table is the one copy kept, wherever the warehouse is
        shutil.rmtree(asgard_home() / "dbt" / "external", ignore_errors=True)

    return gold_dbt_assets


def _build(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    lakehouse: Lakehouse,
    target: Path,
    written_keys: list[dg.AssetKey],
    before: dict[dg.AssetKey, int | None],
    write_json: bool,
):
    """``dbt build``'s events; each model's output carries its Iceberg snapshot as data
    version, and its key is added to ``written_keys``. A model whose rows came out as its
    snapshot's (the plugin then commits nothing) says so: its line in `asgard demo` is
    ``same``, as nothing after it changes. dbt writes its JSON artifacts only for the docs
    (``write_json``): the target folder goes after a success (~0.4 s saved a build)."""
    args = ["build"] if write_json else ["build", "--no-write-json"]
    for event in dbt.cli(args, context=context, target_path=target).stream():
        if isinstance(event, dg.Output):
            key = context.asset_key_for_output(event.output_name)
            written = lakehouse.describe(".".join(key.path))
            written_keys.append(key)
            same = (
                skipped(
                    context,
                    f"dbt built {key.to_user_string()} with the same rows as snapshot "
                    f"{written.snapshot_id}: nothing committed",
                )
                if written.snapshot_id == before.get(key)
                else {}
            )
            event = dg.Output(
                None,
                output_name=event.output_name,
                metadata={
                    **event.metadata,
                    **table_metadata(lakehouse, written, written=False),
                    **same,
                },
                data_version=dg.DataVersion(str(written.snapshot_id)),
            )
        yield event


PARSE_STATE = "partial_parse.msgpack"


def _kept_state() -> Path:
    """This home's dbt parse state, kept after each successful build."""
    return asgard_home() / "dbt" / PARSE_STATE


def _seed(project: DbtProject, target: Path) -> None:
    """``target`` gets the parse state a build starts from: this home's, or on a new home
    the one parsing the project left in its own target folder (``invocation_target``)."""
    kept = _kept_state()
    seed = kept if kept.exists() else Path(project.project_dir) / project.target_path / PARSE_STATE
    if seed.exists():
        shutil.copy(seed, target / PARSE_STATE)


@contextmanager
def invocation_target(context: dg.AssetExecutionContext, project: DbtProject) -> Iterator[Path]:
    """A target folder for one dbt invocation, under ASGARD_HOME, seeded with dbt's parse
    state: this home's, kept after each successful build, or on a new home the one parsing
    the project left in its own target folder (the profile names no home, so the state is
    valid in any; dbt re-parses only the files changed since). The folder's artifacts are
    removed after a success and kept after a failure, for a look at dbt's log."""
    state = _kept_state().parent
    state.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="target-", dir=state))
    _seed(project, target)
    try:
        yield target
    except BaseException:
        context.log.error(f"dbt's log and compiled SQL of the failed build: {target}")
        raise
    if (target / PARSE_STATE).exists():
        os.replace(target / PARSE_STATE, _kept_state())
    shutil.rmtree(target, ignore_errors=True)


def warm_up(project: DbtProject, dbt: DbtCliResource) -> None:
    """``dbt ls`` in this process ahead of its first build (a warm run process does it:
    ``warm_worker.fill_caches``). dbt builds some things once per process and keeps them:
    its config classes' JSON schemas, the adapter's behavior flags (which read their own
    source files), the manifest's decoders. The first build in a process took 1.07 s here,
    the next ones 0.40 s; after an ``ls`` (0.64 s) 0.54 s. Nothing is built or written but
    in a scratch target folder, removed after; a failure raises dbt's error. dagster-dbt
    echoes dbt's lines to stdout: kept out of the process's output."""
    target = Path(tempfile.mkdtemp(prefix="asgard-dbt-ls-"))
    try:
        _seed(project, target)
        with redirect_stdout(io.StringIO()):
            dbt.cli(["ls"], manifest=project.manifest_path, target_path=target).wait()
    finally:
        shutil.rmtree(target, ignore_errors=True)


gold_dbt_assets = build_gold_assets(prepare(dbt_project))

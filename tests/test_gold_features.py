"""Gold with dbt and the Feast feature view: values, zero copy at the current snapshot,
point-in-time retrieval, online lookup, and a broken dbt model."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
from conftest import journey_assets, materialize
from dagster_dbt import DbtProject

from asgard_assets.gold.assets import build_gold_assets
from asgard_assets.gold.project import DBT_DIR, PARSED_FROM, AsgardDbtCli, prepare
from asgard_assets.resources import resource, resources_for
from asgard_assets.resources.feature_store import FeatureStoreResource
from asgard_assets.resources.table_reads import to_local_path

GOLD = "gold.operator_features"


def table(identifier: str) -> pd.DataFrame:
    return resource("lakehouse").table(identifier).scan().to_pandas()


def expected_gold(silver: pd.DataFrame) -> pd.DataFrame:
    """The data contract for gold, computed independently with pandas."""
    s = silver[silver["operator_id"] != "UNASSIGNED"].copy()
    s["valid"] = s["quality_flag"] == "VALID"
    s["vc"] = s["valid"] & (s["status"] == "completed")
    rows = []
    for op, g in s.groupby("operator_id"):
        vc = g[g["vc"]]
        total = int(g["valid"].sum())
        if total < 5:
            continue
        hours = vc["duration_hours"].sum()
        uph = vc["quantity"].sum() / hours if hours else None
        rate = len(vc) / total
        rows.append(
            {
                "operator_id": op,
                "total_work_orders": total,
                "completed_orders": len(vc),
                "total_units": int(vc["quantity"].sum()),
                "total_hours": hours,
                "avg_duration_hours": vc["duration_hours"].mean(),
                "units_per_hour": uph,
                "completion_rate": rate,
                "products_handled": g.loc[g["valid"], "product_id"].nunique(),
                "data_quality_score": total / len(g),
                "is_high_performer": int(uph is not None and uph > 75 and rate > 0.9),
                "feature_timestamp": g["updated_at"].max(),
            }
        )
    return pd.DataFrame(rows).sort_values("operator_id").reset_index(drop=True)


def test_gold_matches_the_contract(journey_home):
    gold = table(GOLD).sort_values("operator_id").reset_index(drop=True)
    expected = expected_gold(table("silver.work_orders"))
    assert len(gold) == len(expected) == 142
    assert gold["operator_id"].is_unique and "UNASSIGNED" not in set(gold["operator_id"])
    for col in expected.columns:
        if expected[col].dtype.kind == "f":
            assert ((gold[col] - expected[col]).abs() < 1e-9).all(), col
        else:
            assert (gold[col].astype(str) == expected[col].astype(str)).all(), col
    # both classes well represented, as the demo data intends
    assert 30 <= gold["is_high_performer"].sum() <= 112


def test_dbt_tests_are_asset_checks(journey_home):
    from asgard_assets.definitions import defs

    checks = {
        c.name
        for c in defs.resolve_asset_graph().asset_check_keys
        if c.asset_key.path == ["gold", "operator_features"]
    }
    assert {
        "unique_operator_features_operator_id",
        "not_null_operator_features_operator_id",
    } <= checks
    assert any(c.startswith("between_operator_features_completion_rate") for c in checks)
    assert any(c.startswith("accepted_values_operator_features_is_high_performer") for c in checks)


def test_feature_view_serves_gold_offline_and_online(journey_home):
    fs = resource("feature_store")
    gold = table(GOLD).set_index("operator_id")
    ids = list(gold.index[:3]) + ["EMP-999"]
    asked = pd.DataFrame({"operator_id": ids, "event_timestamp": [datetime.now(UTC)] * 4})
    hist = fs.historical(asked)
    assert len(hist.frame) == 4 and hist.missing == 1
    assert hist.frame.loc[3, "units_per_hour"] != hist.frame.loc[3, "units_per_hour"]  # NaN
    for i, op in enumerate(ids[:3]):
        assert hist.frame.loc[i, "units_per_hour"] == pytest.approx(gold.loc[op, "units_per_hour"])
    online = fs.online(ids)
    assert online.unknown == ["EMP-999"]
    assert online.features[ids[0]]["completion_rate"] == pytest.approx(
        gold.loc[ids[0], "completion_rate"]
    )


def test_feast_cli_sees_the_same_stores(journey_home):
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    out = subprocess.run(
        [feast, "-c", "feature_repo", "feature-views", "list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=DBT_DIR.parent,
        env={**os.environ, "ASGARD_HOME": str(journey_home)},
    )
    assert "operator_efficiency" in out.stdout


def write_gold(frame: pd.DataFrame) -> int:
    lakehouse = resource("lakehouse")
    schema = pa.schema(
        [
            ("operator_id", pa.string()),
            ("units_per_hour", pa.float64()),
            ("completion_rate", pa.float64()),
            ("is_high_performer", pa.int32()),
            ("feature_timestamp", pa.timestamp("us")),
        ]
    )
    data = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return lakehouse.write(GOLD, data.to_reader()).snapshot_id


FEATURES = ["operator_efficiency:units_per_hour", "operator_efficiency:completion_rate"]
T1, T2 = datetime(2025, 3, 1), datetime(2025, 6, 1)


@pytest.fixture
def small_feature_store(home):
    """A hand-built gold table and a feature view over it (same definitions, fewer columns)."""
    return FeatureStoreResource(columns=["units_per_hour", "completion_rate", "is_high_performer"])


FEAST_IMPORT = """
import typeguard
checked = typeguard.typechecked
import asgard_assets.features.feast_import
from feast.feature_view import FeatureView
assert typeguard.typechecked is checked, "typeguard left patched"
print(sorted(set(FeatureView.__init__.__code__.co_names) & {"check_argument_types_internal"}))
"""


def test_feast_loads_without_typeguards_instrumentation_and_typeguard_is_restored():
    """Asgard imports Feast with typeguard's @typechecked off while Feast's modules load
    (its instrumentation is most of Feast's import time); typeguard itself is left as it was
    for everything imported later. A plain `import feast` is instrumented: the check sees
    the difference."""
    ours = subprocess.run([sys.executable, "-c", FEAST_IMPORT], capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.strip() == "[]"
    plain = FEAST_IMPORT.replace("import asgard_assets.features.feast_import\n", "")
    theirs = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True)
    assert theirs.stdout.strip() == "['check_argument_types_internal']", theirs.stderr


def test_dbts_duckdb_is_bounded_like_asgards_own(tmp_path, monkeypatch):
    """The asgard_iceberg plugin gives dbt-duckdb's connection the memory limit and spill
    folder of every other DuckDB connection (DuckDB's own default is 80 % of the RAM)."""
    from asgard_assets.gold.dbt_iceberg_plugin import Plugin
    from asgard_assets.resources.duckdb_bounds import DUCKDB_MEMORY

    monkeypatch.setenv("ASGARD_HOME", str(tmp_path))
    config = {"threads": 1}
    Plugin.update_connection_config(object.__new__(Plugin), None, config)
    assert config == {
        "threads": 1,
        "memory_limit": DUCKDB_MEMORY,
        "temp_directory": str(tmp_path / "tmp" / "duckdb"),
    }


def test_feast_reads_only_the_current_snapshot(small_feature_store):
    first = pd.DataFrame(
        {
            "operator_id": ["A", "B", "C"],
            "units_per_hour": [50.0, 60.0, 70.0],
            "completion_rate": [0.5, 0.6, 0.7],
            "is_high_performer": [0, 0, 0],
            "feature_timestamp": [T1] * 3,
        }
    )
    old_snapshot = write_gold(first)
    small_feature_store.apply_and_materialize()
    # overwrite: same timestamps, changed values, and operator C gone
    second = first.iloc[:2].assign(units_per_hour=[90.0, 95.0], completion_rate=[0.95, 0.97])
    new_snapshot = write_gold(second)
    assert new_snapshot != old_snapshot
    # the old snapshot's file is still in the folder: a glob would read it
    lakehouse = resource("lakehouse")
    warehouse = Path(to_local_path(lakehouse.catalog_properties()["warehouse"]))
    assert len(list(warehouse.rglob("operator_features/data/*.parquet"))) == 2
    asked = pd.DataFrame({"operator_id": ["A", "B", "C"], "event_timestamp": [T2] * 3})
    hist = small_feature_store.historical(asked, FEATURES)
    assert len(hist.frame) == 3  # no duplicated entities
    assert hist.frame["units_per_hour"].tolist()[:2] == [90.0, 95.0]
    assert hist.missing == 1 and pd.isna(hist.frame.loc[2, "units_per_hour"])
    # and the old snapshot stays readable by time travel
    assert lakehouse.table(GOLD).scan(snapshot_id=old_snapshot).to_arrow().num_rows == 3


def test_point_in_time_retrieval(small_feature_store):
    rows = pd.DataFrame(
        {
            "operator_id": ["A", "A", "B", "B"],
            "units_per_hour": [10.0, 20.0, 30.0, 40.0],
            "completion_rate": [0.1, 0.2, 0.3, 0.4],
            "is_high_performer": [0, 0, 0, 1],
            "feature_timestamp": [T1, T2, T1, T2],
        }
    )
    write_gold(rows)
    small_feature_store.apply_and_materialize()
    day = timedelta(days=1)
    asked = pd.DataFrame(
        {
            "operator_id": ["A", "A", "A", "B", "B", "Z"],
            "event_timestamp": [T1 - day, T1 + day, T2 + day, T1, T2 - day, T2 + day],
        }
    )
    hist = small_feature_store.historical(asked, FEATURES)
    got = hist.frame["units_per_hour"].tolist()
    assert pd.isna(got[0])  # before A's first feature row
    assert got[1:5] == [10.0, 20.0, 30.0, 30.0]  # as of each timestamp, never the future
    assert pd.isna(got[5])  # unknown operator
    assert hist.missing == 2
    assert small_feature_store.online(["A", "B", "Z"]).features["B"]["units_per_hour"] == 40.0


def copy_dbt_project(tmp_path: Path) -> Path:
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    return project


def dbt_trino(project: Path, *args: str) -> subprocess.CompletedProcess:
    """The venv's dbt on ``project`` with the trino target (no server needed to parse)."""
    dbt = os.path.join(os.path.dirname(sys.executable), "dbt")
    where = ["--target", "trino", "--profiles-dir", str(project), "--project-dir", str(project)]
    env = {**os.environ, "ASGARD_HOME": str(project.parent)}
    return subprocess.run([dbt, *args, *where], capture_output=True, text=True, env=env)


def test_dbt_parses_for_trino(tmp_path):
    project = copy_dbt_project(tmp_path)
    out = dbt_trino(project, "parse")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (project / "target" / "manifest.json").exists()
    compiled = dbt_trino(project, "ls", "--resource-type", "model")
    assert "asgard.gold.operator_features" in compiled.stdout


def test_broken_dbt_model_fails_with_dbt_message_and_keeps_gold(home, tmp_path):
    """dbt runs in the step's process (AsgardDbtCli): a failing model still fails the step
    with dbt's own message, gold keeps its snapshot, and dbt's DuckDB file is let go."""
    assets = journey_assets()
    assert materialize(
        "bronze/work_orders silver/work_orders gold/operator_features", assets=assets
    ).success
    before = resource("lakehouse").snapshot_id(GOLD)
    assert before is not None
    broken = copy_dbt_project(tmp_path)
    model = broken / "models" / "gold" / "operator_features.sql"
    model.write_text(model.read_text().replace("sum(is_valid)", "sum(no_such_column)", 1))
    project = prepare(DbtProject(project_dir=broken, target="duckdb"))
    broken_gold = build_gold_assets(project)
    resources = {
        **resources_for("local"),
        "dbt": AsgardDbtCli(project_dir=str(broken), target="duckdb"),
    }
    result = dg.materialize([broken_gold], resources=resources, raise_on_error=False)
    assert not result.success
    assert "no_such_column" in failure_message(result)
    assert resource("lakehouse").snapshot_id(GOLD) == before
    # dbt-duckdb would keep its database open until this process ends: closed after the
    # command, failed or not
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    assert DuckDBConnectionManager._ENV is None

    # a model dbt cannot even parse: the definitions still load (from the last parse, here
    # the model as gold was last built from, so its code version says nothing changed), and
    # the gold step is what fails, with dbt's message, instead of skipping
    model.write_text((DBT_DIR / "models" / "gold" / "operator_features.sql").read_text())
    good = build_gold_assets(prepare(DbtProject(project_dir=broken, target="duckdb")))
    assert dg.materialize([good], resources=resources).success
    assert dbt_skipped(dg.materialize([good], resources=resources))  # nothing changed
    # a macro the model uses: its SQL's code version is the same, the build is not
    macro = broken / "macros" / "type_double.sql"
    macro.write_text(macro.read_text() + "\n{# edited #}\n")
    assert not dbt_skipped(dg.materialize([good], resources=resources))
    kept = resource("lakehouse").snapshot_id(GOLD)
    source = "{{ source('silver', 'work_orders') }}"
    model.write_text(model.read_text().replace(source, source[:-1], 1))
    os.utime(model, ns=(time.time_ns() + 10**9,) * 2)
    unparsable_gold = build_gold_assets(prepare(DbtProject(project_dir=broken, target="duckdb")))
    result = dg.materialize([unparsable_gold], resources=resources, raise_on_error=False)
    assert not result.success
    assert "Compilation Error in model operator_features" in failure_message(result)
    assert resource("lakehouse").snapshot_id(GOLD) == kept


def dbt_skipped(result: dg.ExecuteInProcessResult) -> bool:
    """dbt was not run (not: dbt ran and built the same rows, also "skipped")."""
    assert result.success
    (gold,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(["gold", "operator_features"])
    ]
    return gold.metadata.get("skipped", dg.TextMetadataValue("")).text.startswith("dbt not run")


def test_the_manifest_is_parsed_again_only_when_the_project_or_dbt_changed(tmp_path, monkeypatch):
    """Also under `dagster dev` (`asgard ui`), where dagster-dbt would parse on every load of
    the definitions: the code server's and every run's process."""
    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")
    root = copy_dbt_project(tmp_path)

    def parsed() -> int:
        manifest = prepare(DbtProject(project_dir=root, target="duckdb")).manifest_path
        return manifest.stat().st_mtime_ns

    first = parsed()
    assert parsed() == first  # nothing changed

    stamp = root / "target" / PARSED_FROM  # as if parsed by another dbt
    inputs = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**inputs, "dbt": {"dbt-core": "1.0.0", "dbt-duckdb": "1.0.0"}}))
    second = parsed()
    assert second > first

    model = root / "models" / "gold" / "operator_features.sql"
    os.utime(model, ns=(second + 10**9, second + 10**9))  # edited
    third = parsed()
    assert third > second

    # renamed: the same mtime, a new path (dbt's manifest then names the new model)
    model.rename(model.with_name("operator_features_renamed.sql"))
    fourth = parsed()
    assert fourth > third
    nodes = json.loads((root / "target" / "manifest.json").read_text())["nodes"]
    assert any(n.endswith(".operator_features_renamed") for n in nodes)


def test_dbt_that_cannot_start_fails_naming_why(home):
    """dbt failing before any model runs (here: a target its profile lacks) fails the step
    with dbt's reason, not a bare exit code."""
    resources = {
        **resources_for("local"),
        "dbt": AsgardDbtCli(project_dir=str(DBT_DIR), target="nope"),
    }
    result = dg.materialize(
        [build_gold_assets(prepare(DbtProject(project_dir=DBT_DIR, target="duckdb")))],
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    message = failure_message(result)
    assert "nope" in message and "target" in message, message


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(e.step_failure_data.error.to_string() for e in result.get_step_failure_events())


def test_dbt_stopped_by_a_bad_flag_still_says_why():
    """dbt rejects a flag before its event logging starts: the in-process command still
    ends its output with an error line naming the flag, and dbt's exit code."""
    import json

    from asgard_assets.gold.dbt_in_process import DbtThread

    command = DbtThread(["build", "--project-dir", str(DBT_DIR), "--no-such-flag"])
    lines = [json.loads(line) for line in command.stdout]
    assert command.wait() == 2
    errors = [line["info"]["msg"] for line in lines if line["info"]["level"] == "error"]
    assert len(errors) == 1 and "--no-such-flag" in errors[0], lines


def test_dbts_parse_state_holds_in_any_home(tmp_path, monkeypatch):
    """dbt's profile names no home (dbt hashes its values into the parse state): the state
    one home's parse leaves lets another home's dbt parse partially, not the whole project
    again (~3.5 s of a new home's first gold build)."""
    dbt = AsgardDbtCli(project_dir=str(DBT_DIR), target="duckdb")

    def parse(home: Path, seed: Path | None = None) -> list[str]:
        monkeypatch.setenv("ASGARD_HOME", str(home))
        (home / "t").mkdir(parents=True)
        if seed is not None:
            shutil.copy(seed, home / "t" / "partial_parse.msgpack")
        invocation = dbt.cli(["parse"], target_path=home / "t")
        return [e.raw_event["info"]["name"] for e in invocation.stream_raw_events()]

    assert "UnableToPartialParse" in parse(tmp_path / "a")  # nothing saved yet: full parse
    assert "UnableToPartialParse" not in parse(
        tmp_path / "b", seed=tmp_path / "a" / "t" / "partial_parse.msgpack"
    )

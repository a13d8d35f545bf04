"""Gold on Trino, tested at its boundary (no Trino server runs here).

- ``dbt compile --no-populate-cache`` renders every model and test with the trino adapter's
  own macros without a connection (a plain ``dbt compile`` first lists the warehouse's
  relations, which needs Trino); the result must parse as Trino SQL and match the duckdb
  target's models column for column.
- ``dbt run`` against a loopback server speaking Trino's HTTP protocol records the exact
  statements dbt-trino sends (they must parse as Trino) and the connection's catalog,
  schema, user and credentials, all from the environment.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from asgard_assets.gold.project import DBT_DIR
from asgard_assets.resources.deployer import free_port

DBT = os.path.join(os.path.dirname(sys.executable), "dbt")
TRINO_ENV = ("TRINO_HOST", "TRINO_PORT", "TRINO_USER", "TRINO_CATALOG", "TRINO_AUTH")
TRINO_ENV += ("TRINO_PASSWORD", "TRINO_JWT_TOKEN", "TRINO_HTTP_SCHEME", "TRINO_CERT")
# requests prefers these to the session's CA bundle (TRINO_CERT): not in dbt's environment
TRINO_ENV += ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def copy_dbt_project(tmp_path: Path) -> Path:
    """A private copy of the dbt project (its target/ folder stays untouched)."""
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    return project


def dbt(project: Path, target: str, *args: str, env: dict | None = None, wait=True):
    where = ["--target", target, "--profiles-dir", str(project), "--project-dir", str(project)]
    clean = {k: v for k, v in os.environ.items() if k not in TRINO_ENV}
    full_env = {**clean, "ASGARD_HOME": str(project.parent), **(env or {})}
    proc = subprocess.Popen(
        [DBT, *args, *where], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=full_env,
    )  # fmt: skip
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict[str, str]]:
    """{target: {node path: compiled SQL}} for both targets, compiled side by side."""
    project = copy_dbt_project(tmp_path_factory.mktemp("dbt"))
    env = {"TRINO_CATALOG": "lake", "TRINO_HOST": "127.0.0.1", "TRINO_PORT": str(free_port())}
    procs = {
        t: dbt(project, t, "compile", "--no-populate-cache", "--target-path", f"out-{t}", env=env, wait=False)
        for t in ("duckdb", "trino")
    }  # fmt: skip
    result = {}
    for target, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        root = project / f"out-{target}" / "compiled"
        result[target] = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*.sql")}
    return result


def test_both_targets_compile_the_same_models_and_tests(compiled):
    assert set(compiled["trino"]) == set(compiled["duckdb"])
    assert "asgard/models/gold/operator_features.sql" in compiled["trino"]
    assert len(compiled["trino"]) > 5  # the model and its dbt tests


def test_compiled_trino_sql_parses_as_trino(compiled):
    for node, sql in compiled["trino"].items():
        assert sqlglot.parse_one(sql, read="trino") is not None, node


def test_trino_model_reads_the_iceberg_catalog_schema_per_layer(compiled):
    model = compiled["trino"]["asgard/models/gold/operator_features.sql"]
    tables = {
        t.sql(dialect="trino") for t in sqlglot.parse_one(model, read="trino").find_all(exp.Table)
    }
    assert '"lake"."silver"."work_orders"' in tables  # TRINO_CATALOG, the silver namespace
    tests = [sql for node, sql in compiled["trino"].items() if "/schema.yml/" in node]
    assert all('"lake"."gold"."operator_features"' in sql for sql in tests)


def test_trino_and_duckdb_models_give_the_same_columns_and_types(compiled):
    node = "asgard/models/gold/operator_features.sql"
    trino = sqlglot.parse_one(compiled["trino"][node], read="trino")
    duck = sqlglot.parse_one(compiled["duckdb"][node], read="duckdb")
    assert [s.alias_or_name for s in trino.selects] == [s.alias_or_name for s in duck.selects]
    types = {d.sql(dialect="trino") for d in trino.find_all(exp.DataType)}
    # 64-bit floats, no 32-bit float; hours summed as exact decimals (the same in any order)
    assert types == {"BIGINT", "DOUBLE", "INTEGER", "DECIMAL(38, 12)"}


class FakeTrino:
    """Answers Trino's client protocol (POST /v1/statement) for every statement with an
    empty, finished result, and records each statement with its request headers."""

    def __init__(self, tls_dir: Path | None = None):
        self.statements: list[tuple[str, dict]] = []
        self.ca_bundle = ""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                sql = self.rfile.read(int(self.headers["Content-Length"])).decode()
                fake.statements.append((sql, dict(self.headers)))
                n = len(fake.statements)
                body = {
                    "id": f"q{n}",
                    "infoUri": f"http://trino/ui/query.html?q{n}",
                    "columns": [{"name": "_col0", "type": "integer",
                                 "typeSignature": {"rawType": "integer", "arguments": []}}],
                    "data": [[1]] if sql.strip().lower() == "select 1 as id" else [],
                    "stats": {"state": "FINISHED"},
                }  # fmt: skip
                if not sql.lstrip().lower().startswith(("select", "show", "with", "describe")):
                    body.pop("columns"), body.pop("data")
                    body["updateType"] = sql.split()[0].upper()
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        if tls_dir is not None:  # a self-signed certificate (dbt-trino does not verify by default)
            cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.ca_bundle = str(cert)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "auth, env, authorization",
    [
        ("none", {}, None),
        ("ldap", {"TRINO_PASSWORD": "pw-from-env"}, "Basic " + base64.b64encode(b"gold_writer:pw-from-env").decode()),
        ("jwt", {"TRINO_JWT_TOKEN": "jwt-from-env"}, "Bearer jwt-from-env"),
    ],
)  # fmt: skip
def test_dbt_run_sends_trino_sql_with_the_connection_from_env(tmp_path, auth, env, authorization):
    trino = FakeTrino(tls_dir=None if auth == "none" else tmp_path)
    try:
        project = copy_dbt_project(tmp_path)
        settings = {
            "TRINO_HOST": "127.0.0.1", "TRINO_PORT": str(trino.port), "TRINO_USER": "gold_writer",
            "TRINO_CATALOG": "lake", "TRINO_AUTH": auth, "TRINO_CERT": trino.ca_bundle, **env,
        }  # fmt: skip
        code, out = dbt(project, "trino", "run", "--select", "operator_features", env=settings)
        assert code == 0, out
    finally:
        trino.close()
    # every statement sent parses as Trino; the model lands in one CREATE OR REPLACE TABLE
    trees = [sqlglot.parse_one(sql, read="trino") for sql, _ in trino.statements]
    tables = [t for t in trees if isinstance(t, exp.Create) and t.kind == "TABLE"]
    assert len(tables) == 1, [sql for sql, _ in trino.statements]
    assert tables[0].args.get("replace") is True
    assert tables[0].this.sql(dialect="trino") == '"lake"."gold"."operator_features"'
    assert '"lake"."silver"."work_orders"' in {
        t.sql(dialect="trino") for t in tables[0].expression.find_all(exp.Table)
    }
    for _, headers in trino.statements:
        assert headers["X-Trino-Catalog"] == "lake" and headers["X-Trino-Schema"] == "gold"
        assert headers["X-Trino-User"] == "gold_writer"
        assert headers.get("Authorization") == authorization


def test_the_gold_steps_in_process_dbt_sends_the_same_trino_sql(tmp_path, monkeypatch):
    """The k8s profile's dbt resource runs dbt in the step's process (AsgardDbtCli): against
    the same server it sends the model as one CREATE OR REPLACE TABLE, with the connection
    from the environment, and reports the model's result to dagster-dbt."""
    from asgard_assets.gold.project import AsgardDbtCli

    trino = FakeTrino()
    try:
        project = copy_dbt_project(tmp_path)
        for name in TRINO_ENV:
            monkeypatch.delenv(name, raising=False)
        settings = {"TRINO_HOST": "127.0.0.1", "TRINO_PORT": str(trino.port)}
        settings |= {"TRINO_USER": "gold_writer", "TRINO_CATALOG": "lake"}
        for name, value in {**settings, "ASGARD_HOME": str(tmp_path)}.items():
            monkeypatch.setenv(name, value)
        dbt = AsgardDbtCli(project_dir=str(project), target="trino")
        invocation = dbt.cli(["run", "--select", "operator_features"], target_path=tmp_path / "t")
        events = list(invocation.stream_raw_events())
        assert invocation.is_successful()
    finally:
        trino.close()
    results = [
        e.raw_event["data"] for e in events if e.raw_event["info"]["name"] == "LogModelResult"
    ]
    assert [r["node_info"]["unique_id"] for r in results] == ["model.asgard.operator_features"]
    assert results[0]["node_info"]["node_status"] == "success"
    creates = [
        t
        for t in (sqlglot.parse_one(sql, read="trino") for sql, _ in trino.statements)
        if isinstance(t, exp.Create) and t.kind == "TABLE"
    ]
    assert len(creates) == 1 and creates[0].args.get("replace") is True
    assert creates[0].this.sql(dialect="trino") == '"lake"."gold"."operator_features"'
    assert {h["X-Trino-User"] for _, h in trino.statements} == {"gold_writer"}

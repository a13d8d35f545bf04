"""The inference service against hostile traffic: the OpenAPI schema fuzzed by schemathesis
(valid and invalid bodies for every operation), bodies over the size limit, unbounded
echoes, a lone surrogate, the docs page offline."""

import json
import threading

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from asgard_assets.contracts.model import FEATURES, MODEL_NAME
from asgard_assets.resources.deployer import LocalDeployer
from asgard_assets.serving import app as service_module


@pytest.fixture(scope="module")
def client(_demo_journey):
    from conftest import asgard_home_env

    with asgard_home_env(_demo_journey), TestClient(service_module.app) as c:
        service_module.STATE["feature_store_warm"].result()  # Feast loaded beside startup
        yield c


def test_the_service_is_ready_before_feast_and_lookups_wait_for_it(journey_home, monkeypatch):
    """Feast loads beside the service: /health and rows by value answer at once; a lookup
    by id made meanwhile waits for it, then answers."""
    loading, loaded = threading.Event(), threading.Event()
    warm = service_module._warm_feature_store

    def slow_warm():
        loading.set()
        loaded.wait(30)
        warm()

    monkeypatch.setattr(service_module, "_warm_feature_store", slow_warm)
    with TestClient(service_module.app) as c:
        assert loading.wait(10)
        assert c.get("/health").status_code == 200
        row = {f: float(i + 1) for i, f in enumerate(FEATURES)}
        assert c.post("/predict", json={"instances": [row]}).status_code == 200
        answers: list[int] = []
        lookup = threading.Thread(
            target=lambda: answers.append(
                c.post("/predict", json={"operator_ids": ["EMP-001"]}).status_code
            )
        )
        lookup.start()
        lookup.join(1.0)
        assert lookup.is_alive() and not answers  # waiting for Feast
        loaded.set()
        lookup.join(60)
        assert answers == [200]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_never_get_a_5xx(journey_home, mode):
    """Every operation of the OpenAPI schema of the live service (uvicorn on loopback, as
    the deployer runs it), with generated requests that fit the schema and that break it:
    all answered, none with a 5xx."""
    deployment = LocalDeployer().current(MODEL_NAME)
    schema = schemathesis.openapi.from_url(f"{deployment.url}/openapi.json")
    seen: list[int] = []

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(timeout=30)
        seen.append(response.status_code)
        assert response.status_code < 500, (case.path, case.body, response.text[:300])

    # on a thread of its own: CPython 3.11.7 raises "AST constructor recursion depth
    # mismatch" when hypothesis compiles code deep in a long-lived thread's stack
    failures: list[BaseException] = []

    def guarded():
        try:
            run()
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            failures.append(e)

    worker = threading.Thread(target=guarded)
    worker.start()
    worker.join()
    if failures:
        raise failures[0]
    assert len(seen) >= 100
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= s < 500 for s in seen)  # the invalid ones were refused
    else:
        assert 200 in seen
    assert httpx.get(f"{deployment.url}/health", timeout=5).status_code == 200


def post(client, raw: bytes | str, **headers):
    return client.post(
        "/predict", content=raw, headers={"content-type": "application/json", **headers}
    )


def test_a_body_over_the_limit_gets_a_413(client):
    limit = service_module.MAX_BODY_BYTES
    big = json.dumps({"operator_ids": ["EMP-001"] * (limit // 10)})
    assert len(big) > limit
    r = post(client, big)
    assert r.status_code == 413 and str(limit) in r.json()["detail"]


def test_a_streamed_body_over_the_limit_gets_a_413(client):
    """No Content-Length (chunked): counted as it arrives."""
    limit = service_module.MAX_BODY_BYTES

    def chunks():
        yield b'{"operator_ids": ['
        for _ in range(limit // 900):  # 998 bytes each: past the limit
            yield b'"' + b"x" * 995 + b'",'
        yield b'"y"]}'

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_a_body_not_sent_as_json_is_told_how_to_send_it(client):
    """`curl -d` without a content type sends a form: the answer says what to set."""
    body = json.dumps({"operator_ids": ["EMP-001"]})
    form = post(client, body, **{"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert form.json()["detail"] == (
        "send the body as JSON, with Content-Type: application/json "
        "(not application/x-www-form-urlencoded)"
    )
    assert post(client, body, **{"content-type": "application/json; charset=utf-8"}).is_success
    # a JSON type FastAPI reads, with a body that breaks the contract: the contract's 422
    empty = post(client, '{"operator_ids": []}', **{"content-type": "application/vnd.x+json"})
    assert empty.status_code == 422 and "operator_ids" in empty.text


def test_a_lying_content_length_is_refused(client):
    assert post(client, b"{}", **{"content-length": "abc"}).status_code == 413


def test_unknown_ids_are_echoed_bounded(client):
    ids = [f"NOBODY-{i}" for i in range(5000)]
    r = post(client, json.dumps({"operator_ids": ids}))
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "5000 id(s)" in detail and "NOBODY-19" in detail and "NOBODY-20'" not in detail
    assert len(r.content) < 2000
    mixed = post(client, json.dumps({"operator_ids": ["EMP-001", *ids]})).json()
    assert mixed["operator_ids"] == ["EMP-001"] and mixed["unknown_count"] == 5000
    assert mixed["unknown_operator_ids"] == ids[:20]


@pytest.mark.parametrize(
    "raw",
    [
        '{"operator_ids": ["\\ud800"]}',
        '{"instances": [{"\\ud800": 1}]}',
        '{"inputs": {"\\udfff": [1]}}',
        '{"operator_ids": ["' + "x" * 65 + '"]}',
    ],
)
def test_lone_surrogates_and_long_ids_get_a_422(client, raw):
    r = post(client, raw)
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"]


def test_inputs_and_instances_agree(client):
    row = {f: float(i + 1) for i, f in enumerate(FEATURES)}
    by_rows = post(client, json.dumps({"instances": [row, row]})).json()
    by_cols = post(client, json.dumps({"inputs": {f: [v, v] for f, v in row.items()}})).json()
    assert by_rows["probabilities"] == by_cols["probabilities"]
    bad = post(
        client, json.dumps({"inputs": {**{f: [1, 2] for f in FEATURES}, FEATURES[3]: [1, "x"]}})
    )
    assert bad.status_code == 422 and f"inputs.{FEATURES[3]}[1]" in bad.json()["detail"]


def test_docs_work_offline(client):
    """Swagger UI's script and style come from the service itself, not a CDN."""
    page = client.get("/docs")
    assert page.status_code == 200
    assert (
        "cdn" not in page.text.lower()
        and "http://" not in page.text
        and "https://" not in page.text
    )
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        url = f"/static/swagger-ui/{asset}"
        assert url in page.text
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 10_000
    assert client.get("/openapi.json").json()["paths"]["/predict"]


def test_health_answers_while_an_online_lookup_blocks(client, monkeypatch):
    """A store read that hangs holds its request only: /health is answered meanwhile (the
    read runs off the event loop)."""
    reader = service_module.STATE["feature_store"]._reader
    entered, release = threading.Event(), threading.Event()
    fetch = reader._fetch

    def hanging(ids):
        entered.set()
        release.wait(30)
        return fetch(ids)

    monkeypatch.setattr(reader, "_fetch", hanging)
    done: list[int] = []
    body = json.dumps({"operator_ids": ["NEVER-SEEN-1"]})  # not cached: read from the store
    waiting = threading.Thread(target=lambda: done.append(post(client, body).status_code))
    waiting.start()
    assert entered.wait(30)
    assert client.get("/health").status_code == 200
    assert not done  # still waiting on the store when /health answered
    release.set()
    waiting.join(60)
    assert done == [404]

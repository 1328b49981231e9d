"""Seeing a running chatport (issue 18): ``GET /metrics`` (Prometheus text, guarded, one view
across gunicorn workers), request ids, the JSON access log and ``GET /readyz``."""
import json
import logging
import os
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.errors import ProviderTimeout
from app.providers.llm import registry
from app.storage import migrations
from app.storage.db import db
from app.storage.models import SchemaVersion, Usage

from . import servers
from .conftest import Api, create_key, make_app

CHAT = "/v1/chat/completions"


def scrape(api):
    """``{(sample name, sorted labels): value}`` of one scrape (the text must parse)."""
    resp = api.get("/metrics")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/plain"
    return samples(resp.get_data(as_text=True))


def samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scraped, name, **labels):
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(api, content="hello", headers=None, **extra):
    return api.post(CHAT, headers=headers, json={
        "model": "echo/echo", "messages": [{"role": "user", "content": content}], **extra})


# ---------------------------------------------------------------- /metrics


def test_metrics_need_an_admin_key_or_the_metrics_token(configured, app):
    application, admin = configured(METRICS_TOKEN="scrape-token-123")
    client = application.test_client()
    client_key = create_key(application, kind="client", name="not admin")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {client_key}"},
                    {"Authorization": "Basic scrape-token-123"}):
        resp = client.get("/metrics", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.get_json()["error"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"}).status_code == 200
    assert admin.get("/metrics").status_code == 200


def test_metrics_without_a_token_configured_take_admin_keys_only(admin, anon):
    assert anon.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert "chatport_requests_total" in admin.get("/metrics").get_data(as_text=True)


def test_a_chat_call_moves_requests_latency_tokens_and_credits(admin, app):
    before = scrape(admin)
    resp = chat(admin)
    assert resp.status_code == 200
    after = scrape(admin)
    route = dict(dialect="openai", route=CHAT, status="200")
    assert value(after, "chatport_requests_total", **route) == value(before, "chatport_requests_total", **route) + 1
    hist = dict(dialect="openai", route=CHAT)
    assert value(after, "chatport_request_duration_seconds_count", **hist) == \
        value(before, "chatport_request_duration_seconds_count", **hist) + 1
    usage = resp.get_json()["usage"]
    for kind, tokens in (("prompt", usage["prompt_tokens"]), ("completion", usage["completion_tokens"])):
        assert tokens > 0
        assert value(after, "chatport_tokens_total", model="echo/echo", kind=kind) == \
            value(before, "chatport_tokens_total", model="echo/echo", kind=kind) + tokens
    assert value(after, "chatport_credits_total", model="echo/echo") > \
        value(before, "chatport_credits_total", model="echo/echo")
    # The scrapes themselves are neither counted nor metered.
    assert not [k for k in after if dict(k[1]).get("route") == "/metrics"]
    with app.app_context(), db.connection_context():
        assert not Usage.select().where(Usage.endpoint.contains("metrics")).exists()


def test_an_unmatched_path_is_one_series_not_one_per_path(admin):
    before = scrape(admin)
    for path in ("/api/v1/nothing-here-1", "/api/v1/nothing-here-2"):
        assert admin.get(path).status_code == 404
    after = scrape(admin)
    labels = dict(dialect="chatport", route="<unmatched>", status="404")
    assert value(after, "chatport_requests_total", **labels) == value(before, "chatport_requests_total", **labels) + 2
    assert not [k for k in after if "nothing-here" in str(k)]


def test_a_streamed_turn_times_its_first_token_and_closes_its_stream(admin):
    before = scrape(admin)
    resp = chat(admin, "[echo tokens=3]", stream=True)
    assert resp.status_code == 200 and b"[DONE]" in resp.get_data()
    after = scrape(admin)
    assert value(after, "chatport_time_to_first_token_seconds_count", model="echo/echo") == \
        value(before, "chatport_time_to_first_token_seconds_count", model="echo/echo") + 1
    assert value(after, "chatport_open_streams") == value(before, "chatport_open_streams") == 0


def test_open_streams_counts_a_stream_until_it_closes(admin, client, admin_key):
    resp = client.post(CHAT, headers={"Authorization": f"Bearer {admin_key}"}, json={
        "model": "echo/echo", "stream": True, "messages": [{"role": "user", "content": "[echo tokens=3]"}]})
    next(resp.response)  # the stream has started, its response is not closed
    assert value(scrape(admin), "chatport_open_streams") == 1
    resp.get_data()
    resp.close()
    assert value(scrape(admin), "chatport_open_streams") == 0


def test_quota_refusals_and_provider_errors_are_counted_by_kind(admin, app, monkeypatch):
    broke = Api(app.test_client(), create_key(app, kind="client", name="broke", credit_quota=1))
    before = scrape(admin)
    refused = chat(broke)
    assert refused.status_code == 429
    code = refused.get_json()["error"]["code"]

    def timing_out(self, request):
        raise ProviderTimeout("the upstream took too long")
        yield  # a generator, as a model's stream is

    model = registry(app).get("echo/echo")
    monkeypatch.setattr(type(model), "stream", timing_out)
    assert chat(admin).status_code == 504
    after = scrape(admin)
    assert value(after, "chatport_refusals_total", reason=code) == value(before, "chatport_refusals_total", reason=code) + 1
    assert value(after, "chatport_provider_errors_total", kind="ProviderTimeout") == \
        value(before, "chatport_provider_errors_total", kind="ProviderTimeout") + 1
    assert value(after, "chatport_requests_total", dialect="openai", route=CHAT, status="504") == \
        value(before, "chatport_requests_total", dialect="openai", route=CHAT, status="504") + 1


def test_knowledge_sources_are_read_per_state_at_scrape(admin, app):
    from app.services import knowledge

    scraped = scrape(admin)
    for state in ("not_synced", "syncing", "synced", "sync_error"):
        assert ("chatport_knowledge_sources", (("state", state),)) in scraped
    with app.app_context(), db.connection_context():
        knowledge.create_source(name="a folder")
    assert value(scrape(admin), "chatport_knowledge_sources", state="not_synced") == \
        value(scraped, "chatport_knowledge_sources", state="not_synced") + 1


# ---------------------------------------------------------------- request ids


def test_request_ids_are_echoed_when_sane_and_made_otherwise(admin, anon):
    sane = "abc-123_X.y:z"
    assert admin.get("/api/v1/bots", headers={"X-Request-Id": sane}).headers["X-Request-Id"] == sane
    assert anon.get("/healthz", headers={"X-Request-Id": sane}).headers["X-Request-Id"] == sane
    made = set()
    for bad in ("", "has space", "x" * 129, "semi;colon", "ünïcode", None):
        headers = {} if bad is None else {"X-Request-Id": bad}
        rid = admin.get("/api/v1/bots", headers=headers).headers["X-Request-Id"]
        assert rid.startswith("req_") and len(rid) == 28 and rid != bad
        made.add(rid)
    assert len(made) == 6  # a new one each time
    assert admin.get("/api/v1/bots", headers={"X-Request-Id": "y" * 128}).headers["X-Request-Id"] == "y" * 128


def test_the_anthropic_request_id_is_the_same_value(admin_key, client):
    body = {"model": "echo/echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    resp = client.post("/v1/messages", headers={"x-api-key": admin_key}, json=body)
    assert resp.status_code == 200
    assert resp.headers["request-id"].startswith("req_") and resp.headers["request-id"] == resp.headers["X-Request-Id"]
    resp = client.post("/v1/messages", headers={"x-api-key": admin_key, "X-Request-Id": "trace-42"}, json=body)
    assert resp.headers["request-id"] == resp.headers["X-Request-Id"] == "trace-42"
    err = client.post("/v1/messages", headers={"x-api-key": "nope"}, json=body)
    assert err.status_code == 401
    assert err.get_json()["request_id"] == err.headers["request-id"] == err.headers["X-Request-Id"]


# ---------------------------------------------------------------- logs


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_access_lines_carry_the_request_and_never_the_key(database_url, tmp_path, capsys):
    application = make_app(database_url, tmp_path, LOG_FORMAT="json")
    key = create_key(application, kind="admin", name="logged")
    api = Api(application.test_client(), key)
    capsys.readouterr()
    resp = chat(api, headers={"X-Request-Id": "trace-json-1"})
    assert resp.status_code == 200
    streamed = chat(api, "[echo tokens=2]", stream=True)
    assert streamed.status_code == 200
    err = capsys.readouterr().err
    assert key not in err and key[-12:] not in err
    lines = _json_lines(err)
    access = [line for line in lines if line["logger"] == "chatport.access"]
    assert len(access) == 2  # once per request, a stream's when it ended
    first, second = access
    assert first["request_id"] == "trace-json-1"
    assert second["request_id"] == streamed.headers["X-Request-Id"]
    with application.app_context(), db.connection_context():
        from app.storage.models import ApiKey

        key_id = ApiKey.get(ApiKey.name == "logged").id
    usage = resp.get_json()["usage"]
    assert {k: first[k] for k in ("method", "dialect", "route", "status", "key_id", "bot_id", "model",
                                  "prompt_tokens", "completion_tokens")} == {
        "method": "POST", "dialect": "openai", "route": CHAT, "status": 200, "key_id": key_id, "bot_id": None,
        "model": "echo/echo", "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"]}
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] > 0
    assert first["time"].endswith("+00:00") and first["level"] == "INFO"
    assert second["completion_tokens"] == 2


def test_every_log_line_of_a_request_names_its_id(database_url, tmp_path, capsys):
    application = make_app(database_url, tmp_path, LOG_FORMAT="json")

    @application.get("/api/v1/_logs_something")
    def logs_something():
        logging.getLogger("chatport.test").warning("inside the request")
        return {"ok": True}

    capsys.readouterr()
    application.test_client().get("/api/v1/_logs_something", headers={"X-Request-Id": "trace-77"})
    lines = [line for line in _json_lines(capsys.readouterr().err) if line["message"] == "inside the request"]
    assert lines and lines[0]["request_id"] == "trace-77" and lines[0]["level"] == "WARNING"


def test_text_logs_name_the_request_id_and_write_no_access_line(database_url, tmp_path, capsys):
    application = make_app(database_url, tmp_path)

    @application.get("/api/v1/_logs_something")
    def logs_something():
        logging.getLogger("chatport.test").warning("inside the request")
        return {"ok": True}

    capsys.readouterr()
    application.test_client().get("/api/v1/_logs_something", headers={"X-Request-Id": "trace-78"})
    err = capsys.readouterr().err
    assert "[trace-78] inside the request" in err and "chatport.access" not in err and "{" not in err


def test_an_unknown_log_format_is_refused(database_url, tmp_path):
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        make_app(database_url, tmp_path, LOG_FORMAT="xml")


# ---------------------------------------------------------------- /readyz


def test_readyz_is_ready_when_the_schema_is_current_and_503_when_not(app, client, anon):
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ready"}
    with app.app_context(), db.connection_context():
        SchemaVersion.update(version=migrations.LATEST - 1).execute()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "unready" and f"schema version {migrations.LATEST - 1}" in body["reason"]
    assert client.get("/healthz").status_code == 200  # liveness is not readiness
    with app.app_context(), db.connection_context():
        assert not Usage.select().where(Usage.endpoint.contains("z")).exists()  # neither is metered


def test_readyz_is_503_when_the_database_does_not_answer(client, monkeypatch):
    from peewee import OperationalError

    def unreachable():
        raise OperationalError("unable to open database file")

    monkeypatch.setattr(migrations, "current_version", unreachable)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json() == {"status": "unready", "reason": "database unreachable: OperationalError"}


# ---------------------------------------------------------------- live: one view across workers


@pytest.mark.server
def test_one_scrape_counts_the_requests_of_every_worker(tmp_path):
    admin_key = "cp_observe_tests_admin_key_0000000000000000000"
    instance = tmp_path / "inst"
    # Two connections a worker: with twelve slow streams at once, a worker whose pool is full
    # stops accepting, so the other one answers some (one worker may otherwise take them all).
    with servers.chatport_server(instance, workers=2, env={"CHATPORT_ADMIN_KEY": admin_key},
                                 serve_args=("--worker-connections", "2")) as base:
        auth = {"Authorization": f"Bearer {admin_key}"}
        folder = os.path.join(str(instance), "metrics", base.rsplit(":", 1)[1])
        pids = servers.worker_pids(int((instance / "server.pid").read_text()))
        assert len(pids) == 2

        def call():  # a connection of its own each time: either worker may take it
            r = requests.post(base + CHAT, headers=auth, timeout=30, json={
                "model": "echo/echo", "stream": True,
                "messages": [{"role": "user", "content": "[echo tokens=4 delay=0.05]"}]})
            assert r.status_code == 200

        sent = 0
        for _ in range(10):  # until both workers answered some
            threads = [threading.Thread(target=call) for _ in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent += len(threads)
            if all(os.path.exists(os.path.join(folder, f"counter_{pid}.db")) for pid in pids):
                break
        assert all(os.path.exists(os.path.join(folder, f"counter_{pid}.db")) for pid in pids), os.listdir(folder)
        # a request is counted when its response closes, a moment after the client read its end
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = requests.get(base + "/metrics", headers=auth, timeout=30).text
            if value(samples(text), "chatport_requests_total", dialect="openai", route=CHAT, status="200") == sent:
                break
            time.sleep(0.1)
        for _ in range(4):  # every scrape, whichever worker answers it, sees all of them
            text = requests.get(base + "/metrics", headers=auth, timeout=30).text
            scraped = samples(text)
            assert value(scraped, "chatport_requests_total", dialect="openai", route=CHAT, status="200") == sent
            assert value(scraped, "chatport_time_to_first_token_seconds_count", model="echo/echo") == sent
            assert value(scraped, "chatport_open_streams") == 0
        assert requests.get(base + "/metrics", timeout=30).status_code == 401
        assert requests.get(base + "/readyz", timeout=30).json() == {"status": "ready"}


def test_a_dead_workers_live_gauges_are_dropped(tmp_path, monkeypatch):
    """gunicorn's child_exit hook (run by the master from its file) removes the dead worker's
    live gauge files, and only those."""
    import runpy

    hooks = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "app", "observe", "gunicorn_hooks.py"))
    for name in ("gauge_livesum_111.db", "gauge_livesum_222.db", "counter_111.db"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    class Worker:
        pid = 111

    hooks["child_exit"](None, Worker())
    assert sorted(os.listdir(tmp_path)) == ["counter_111.db", "gauge_livesum_222.db"]

"""Rate limits (GCRA in the database), credit quotas, usage rows and analytics."""
import threading
from datetime import timedelta

import pytest
import requests

from app import clock
from app.errors import RateLimited
from app.metering import limits
from app.storage.db import db
from app.storage.models import Usage

from .conftest import Api, create_key
from .servers import chatport_server


def test_limit_lookup():
    plans = {"default": {}, "free": {"*": 3}, "pro": {"conversation": 100, "*": 10}}
    assert limits.limit_for(None, {}, "conversation", plans, "default") is None
    assert limits.limit_for("free", {}, "workflow", plans, "default") == 3
    assert limits.limit_for("pro", {}, "conversation", plans, "default") == 100
    assert limits.limit_for("pro", {}, "account", plans, "default") == 10
    assert limits.limit_for("pro", {"account": 1}, "account", plans, "default") == 1
    assert limits.limit_for(None, {"*": 7}, "models", plans, "free") == 7


def test_gcra_allows_limit_then_one_per_period(app, frozen):
    with app.app_context(), db.connection_context():
        decisions = [limits.check_rate("k1", "account", 3) for _ in range(3)]
        assert [d.remaining for d in decisions] == [2, 1, 0]
        with pytest.raises(RateLimited) as exc:
            limits.check_rate("k1", "account", 3)
        assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "20"
        assert exc.value.headers["RateLimit-Remaining"] == "0"
        limits.check_rate("k1", "workflow", 3)  # other category, own budget
        limits.check_rate("k2", "account", 3)  # other key, own budget
        clock.freeze(frozen + timedelta(seconds=19))
        with pytest.raises(RateLimited):
            limits.check_rate("k1", "account", 3)
        clock.freeze(frozen + timedelta(seconds=20))  # one slot back, not a whole new window
        assert limits.check_rate("k1", "account", 3).remaining == 0
        with pytest.raises(RateLimited):
            limits.check_rate("k1", "account", 3)
        clock.freeze(frozen + timedelta(seconds=80))
        assert limits.check_rate("k1", "account", 3).remaining == 2


def test_no_double_burst_at_a_window_edge(app, frozen):
    """A fixed window lets 2x through around its edge; GCRA does not."""
    with app.app_context(), db.connection_context():
        passed = 0
        for second in (58, 59, 60, 61, 62):  # around a minute boundary
            clock.freeze(frozen.replace(second=0) + timedelta(seconds=second))
            for _ in range(5):
                try:
                    limits.check_rate("edge", "account", 5)
                    passed += 1
                except RateLimited:
                    pass
        assert passed <= 5 + 1  # the limit plus what 4 seconds earn back at 5/min (0.33)


def test_http_headers_and_429_in_each_dialect_shape(app, client):
    app.config["RATE_LIMIT_PLANS"] = {"default": {}, "free": {"*": 2}}
    key = create_key(app, kind="admin", plan="free")
    api = Api(client, key)
    ok = api.get("/api/v1/account")
    assert ok.headers["RateLimit-Limit"] == "2" and ok.headers["RateLimit-Remaining"] == "1"
    api.get("/api/v1/account")
    limited = api.get("/api/v1/account")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit-Remaining"] == "0" and limited.get_json()["error"] == "rate_limited"
    openai_style = [api.get("/v1/models") for _ in range(3)][-1]
    assert openai_style.status_code == 429 and openai_style.get_json()["error"]["type"] == "rate_limit_error"
    chat_style = [api.get("/api/v1/get-chatbots") for _ in range(3)][-1]
    assert chat_style.status_code == 429 and set(chat_style.get_json()) == {"message"}


def test_channel_quota_and_limit(app, client, admin):
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    ch = admin.post(f"/api/v1/bots/{bot['id']}/channels", json={}).get_json()
    app.config["CHANNEL_CREDIT_QUOTA"] = 3
    api = Api(client, headers={"X-API-Secret-Key": ch["secret"]})
    url = f"/api/public/channels/{ch['id']}/1.0/conversation"
    assert [api.post(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    body = api.post(url).get_json()
    assert body["success"] is False and "run out of message credits" in body["message"]


def test_monthly_quota_resets_at_month_boundary(app, client, frozen):
    key = create_key(app, kind="admin", credit_quota=2)
    api = Api(client, key)
    assert [api.get("/api/v1/account").status_code for _ in range(3)] == [200, 200, 429]
    with app.app_context(), db.connection_context():
        refusal = Usage.select().order_by(Usage.created_at.desc(), Usage.id.desc()).first()
        assert refusal.status == 429  # the refusal itself is recorded
    me = api.get("/api/v1/analytics/me")
    assert me.status_code == 429
    clock.freeze(frozen + timedelta(minutes=2))  # April 1st: a new month
    me = api.get("/api/v1/analytics/me").get_json()
    assert me["credits_used"] == 0 and me["credit_quota"] == 2 and me["credits_remaining"] == 2
    assert me["month_start"] == "2026-04-01T00:00:00.000Z"


def test_token_credits_for_streams_and_json(app, client, admin):
    app.config["MODEL_PRICES"] = {"echo/echo": {"prompt": 1000, "completion": 2000}}
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot["id"]}).get_json()
    admin.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "[echo tokens=4]"})
    resp = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "[echo tokens=5]", "stream": True})
    resp.get_data()
    resp.close()
    with app.app_context(), db.connection_context():
        rows = list(Usage.select().where(Usage.category == "conversation", Usage.status == 200)
                    .order_by(Usage.created_at, Usage.id))
    json_row, stream_row = rows[-2], rows[-1]
    assert json_row.completion_tokens == 4 and stream_row.completion_tokens == 5  # streams charged real tokens
    assert stream_row.credits == 1 + stream_row.prompt_tokens + 2 * 5
    assert json_row.model == "echo/echo" and stream_row.bot_id == bot["id"] and stream_row.dialect == "chatport"


def test_usage_rows_for_success_4xx_and_401(app, client, admin):
    admin.get("/api/v1/account")
    admin.get("/api/v1/bots/nope")
    Api(client, "cp_bad").get("/api/v1/account")
    client.get("/healthz")
    with app.app_context(), db.connection_context():
        rows = list(Usage.select().order_by(Usage.created_at, Usage.id))
    assert [(r.status, r.key_id is None, r.category) for r in rows] == [
        (200, False, "account"), (404, False, "account"), (401, True, "account")]
    assert all(r.credits == 1 and r.latency_ms > 0 for r in rows)


def test_analytics_report(app, client, admin):
    other = Api(client, create_key(app, kind="client"))
    admin.get("/api/v1/account")
    admin.post("/v1/chat/completions", json={"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]})
    other.get("/v1/models")
    report = admin.get("/api/v1/analytics/usage?group_by=dialect&interval=hour").get_json()
    assert report["totals"]["calls"] == 3
    groups = {g["group"]: g["calls"] for g in report["groups"]}
    assert groups == {"chatport": 1, "openai": 2}
    assert report["series"][0]["bucket"].endswith(":00:00Z")
    assert sum(p["calls"] for p in report["series"]) == 4 - 1  # the report call itself is recorded after it
    by_model = admin.get("/api/v1/analytics/usage?group_by=model").get_json()["groups"]
    echo = [g for g in by_model if g["group"] == "echo/echo"][0]
    assert echo["completion_tokens"] == 2 and echo["prompt_tokens"] >= 1
    assert admin.get("/api/v1/analytics/usage?interval=week").status_code == 400
    assert admin.get("/api/v1/analytics/usage?start=yesterday").status_code == 400
    assert other.get("/api/v1/analytics/usage").status_code == 403
    assert other.get("/api/v1/analytics/me").get_json()["totals"]["calls"] == 2  # /v1/models and the 403
    future = admin.get("/api/v1/analytics/usage?start=2999-01-01&end=2999-02-01").get_json()
    assert future["totals"]["calls"] == 0


def test_limit_holds_across_two_workers(tmp_path):
    key = "cp_two_worker_limit_admin_key_0000000000000000"
    env = {"CHATPORT_ADMIN_KEY": key, "CHATPORT_RATE_LIMIT_PLANS": '{"default": {"account": 5}}'}
    with chatport_server(tmp_path / "inst", workers=2, env=env) as base:
        statuses = []
        barrier = threading.Barrier(15)

        def hit():
            barrier.wait()
            r = requests.get(base + "/api/v1/account", headers={"Authorization": f"Bearer {key}"}, timeout=20)
            statuses.append(r.status_code)

        threads = [threading.Thread(target=hit) for _ in range(15)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(statuses) == [200] * 5 + [429] * 10

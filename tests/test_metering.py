"""Metering under abuse: the credit quota holds under concurrency (reserve, then settle), a
client that leaves a stream early pays for what was sent, concurrent streams per key are
capped across workers, and plans must exist."""
import threading
import time
from datetime import timedelta

import pytest
import requests

from app import clock
from app.errors import QuotaExceeded, RateLimited
from app.metering import limits
from app.storage import migrations
from app.storage.db import db
from app.storage.models import CreditCounter, Message, SchemaVersion, StreamLease, Usage

from . import servers
from .conftest import Api, create_key, make_app
from .servers import fake_upstream, upstream_env

ADMIN = "cp_metering_tests_admin_key_000000000000000000"
AH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module", autouse=True)
def _patient_start():
    """Two workers starting on a busy machine may need more than the usual 20 s."""
    wait = servers.wait_http
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(servers, "wait_http", lambda url, timeout=20.0, proc=None: wait(url, max(timeout, 90.0), proc))
        yield


def chatport_server(*args, **kwargs):
    return servers.chatport_server(*args, **kwargs)


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def _new_key(base, **fields):
    resp = requests.post(base + "/api/v1/keys", headers=AH, json={"kind": "client", **fields}, timeout=10)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["id"], body["key"]


def _usage_of(base, subject, calls, timeout=15):
    """The admin report's totals for ``subject`` once ``calls`` usage rows are written."""
    deadline = time.monotonic() + timeout
    while True:
        groups = requests.get(base + "/api/v1/analytics/usage?group_by=key", headers=AH, timeout=10).json()["groups"]
        mine = next((g for g in groups if g["group"] == subject), None)
        if (mine and mine["calls"] >= calls) or time.monotonic() > deadline:
            return mine
        time.sleep(0.1)


def _at_once(count, call):
    """Run ``call(i)`` in ``count`` threads released together; return the results."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(i):
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _server_db(database_url):
    return {"CHATPORT_DATABASE_URL": database_url, "CHATPORT_ADMIN_KEY": ADMIN,
            "CHATPORT_MAX_CONCURRENT_STREAMS_PER_KEY": "null", "CHATPORT_ECHO_DIRECTIVES": "true"}


# ---------------------------------------------------------------- quota under concurrency


def test_quota_holds_for_concurrent_calls_across_two_workers(database_url, tmp_path):
    """20 calls at once from a key with 5 credits: each costs 2 (the call and its tokens, both
    reserved before the model is called), so at most 5 credits are ever spent."""
    with chatport_server(tmp_path / "inst", workers=2, env=_server_db(database_url)) as base:
        key_id, key = _new_key(base, credit_quota=5)

        def call(i):
            r = requests.post(base + "/v1/chat/completions", headers=_bearer(key), timeout=30, json={
                "model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]})
            return r.status_code, r.json()

        results = _at_once(20, call)
        statuses = [s for s, _ in results]
        # Each call reserves its call credit, then its prompt's: when the burst's first five take
        # every call credit, all five may then miss their prompt credit, and none is served.
        assert statuses.count(200) <= 5 and statuses.count(200) + statuses.count(429) == 20
        for status, body in results:
            if status == 429:  # the OpenAI error shape
                assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "credits_exhausted"
        used = _usage_of(base, key_id, 20)
        assert used["calls"] == 20 and used["credits"] <= 5
        assert used["credits"] == 2 * statuses.count(200)  # refusals cost nothing
        if used["credits"] + 2 <= 5:  # refused reservations were given back: a lone call fits
            assert call(0)[0] == 200


def test_quota_holds_for_concurrent_streams(database_url, tmp_path):
    """60 streams at once at a quota of 10: not all are served, nowhere near 60 x 2 credits."""
    with chatport_server(tmp_path / "inst", workers=2, env=_server_db(database_url)) as base:
        key_id, key = _new_key(base, credit_quota=10)

        def call(i):
            r = requests.post(base + "/v1/chat/completions", headers=_bearer(key), timeout=60, stream=True, json={
                "model": "echo/echo", "stream": True,
                "messages": [{"role": "user", "content": "[echo tokens=5 delay=0.05]"}]})
            body = r.content
            return r.status_code, body

        results = _at_once(60, call)
        statuses = [s for s, _ in results]
        assert statuses.count(200) <= 5 and statuses.count(429) >= 55
        assert all(b"data: [DONE]" in body for status, body in results if status == 200)
        used = _usage_of(base, key_id, 60)
        assert used["calls"] == 60 and used["credits"] <= 10


# ---------------------------------------------------------------- counters, in process


def test_reserve_refuses_past_the_quota_and_settling_adds_the_difference(app, frozen):
    with app.app_context(), db.connection_context():
        month = limits.reserve("k", 3, 5)
        assert limits.counted("k") == 3
        with pytest.raises(QuotaExceeded):
            limits.reserve("k", 3, 5)  # 6 > 5: nothing reserved
        assert limits.counted("k") == 3
        limits.reserve("k", 2, 5)
        with pytest.raises(QuotaExceeded):
            limits.reserve("k", 1, 5)
        limits.add_credits("k", month, -2)  # a call settled below its reservation gives back the rest
        assert limits.counted("k") == 3
        with pytest.raises(QuotaExceeded):
            limits.reserve("other", 1, 0)  # a quota of 0 admits nothing
        clock.freeze(frozen + timedelta(minutes=2))  # April: a new counter
        assert limits.counted("k") == 0
        limits.reserve("k", 5, 5)


def test_calls_settle_the_counter_to_their_real_cost(app, client):
    app.config["MODEL_PRICES"] = {"*": {"prompt": 1000, "completion": 1000}}  # a credit per token
    key = create_key(app, kind="client", credit_quota=100)
    api = Api(client, key)
    resp = api.post("/v1/chat/completions", json={"model": "echo/echo",
                                                  "messages": [{"role": "user", "content": "hello there"}]})
    assert resp.status_code == 200
    usage = resp.get_json()["usage"]
    with app.app_context(), db.connection_context():
        row = Usage.select().order_by(Usage.created_at.desc()).first()
        key_id = row.key_id
        assert row.credits == 1 + usage["prompt_tokens"] + usage["completion_tokens"]
        assert limits.counted(key_id) == row.credits
    assert api.get("/v1/models").status_code == 200
    with app.app_context(), db.connection_context():
        assert limits.counted(key_id) == limits.credits_used(key_id) == row.credits + 1


def test_a_turn_whose_prompt_does_not_fit_is_refused_and_leaves_nothing(app, client, admin):
    app.config["MODEL_PRICES"] = {"*": {"prompt": 1000, "completion": 0}}  # a credit per prompt token
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    key = create_key(app, kind="client", credit_quota=6)
    api = Api(client, key)
    conv = api.post("/api/v1/conversations", json={"bot_id": bot["id"]}).get_json()
    resp = api.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "x" * 400})  # ~100 tokens
    assert resp.status_code == 429 and resp.get_json()["error"] == "credits_exhausted"
    streamed = api.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "x" * 400, "stream": True})
    assert streamed.status_code == 429
    assert api.get(f"/api/v1/conversations/{conv['id']}/messages").get_json()["data"] == []  # no orphan message
    with app.app_context(), db.connection_context():
        refused = list(Usage.select().where(Usage.status == 429))
        assert len(refused) == 2 and all(r.credits == 0 for r in refused)
        assert Message.select().count() == 0
        assert limits.counted(refused[0].key_id) == 2  # the two calls that were served
    ok = api.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "hi"})
    assert ok.status_code == 200


def test_upgrade_seeds_the_counters_with_this_months_usage(database_url, tmp_path, frozen):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        for when, credits in ((frozen - timedelta(days=40), 50), (frozen - timedelta(days=1), 3),
                              (frozen - timedelta(hours=1), 4)):
            Usage.create(created_at=when, key_id="k-old", dialect="openai", category="conversation",
                         credits=credits)
        Usage.create(created_at=frozen, key_id=None, dialect="chatport", category="account", credits=1)
        db.drop_tables([CreditCounter, StreamLease])
        SchemaVersion.update(version=8).execute()
    app2 = make_app(database_url, tmp_path)  # AUTO_UPGRADE
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert limits.counted("k-old") == 7  # March only
        limits.reserve("k-old", 3, 10)
        with pytest.raises(QuotaExceeded):
            limits.reserve("k-old", 1, 10)
        assert StreamLease.select().count() == 0


# ---------------------------------------------------------------- plans and 0 limits


def test_unknown_plan_is_a_400_and_changes_nothing(admin, app):
    bad = admin.post("/api/v1/keys", json={"kind": "client", "plan": "unlimited-please"})
    assert bad.status_code == 400 and "plan" in bad.get_json()["errors"]
    assert [k["name"] for k in admin.get("/api/v1/keys").get_json()["data"]] == ["test admin"]
    key = admin.post("/api/v1/keys", json={"kind": "client", "plan": "free"}).get_json()
    patched = admin.patch(f"/api/v1/keys/{key['id']}", json={"plan": "gold"})
    assert patched.status_code == 400 and "plan" in patched.get_json()["errors"]
    assert admin.get(f"/api/v1/keys/{key['id']}").get_json()["plan"] == "free"
    assert admin.patch(f"/api/v1/keys/{key['id']}", json={"plan": None}).status_code == 200


def test_a_plan_removed_from_the_config_falls_back_to_the_default_plan():
    plans = {"default": {"*": 10}, "free": {"*": 3}}
    assert limits.limit_for("gone", {}, "conversation", plans, "default") == 10


def test_unknown_channel_or_default_plan_stops_the_start(tmp_path):
    with pytest.raises(ValueError, match="CHANNEL_PLAN"):
        make_app(f"sqlite:///{tmp_path}/x.db", tmp_path, CHANNEL_PLAN="nope")
    with pytest.raises(ValueError, match="DEFAULT_PLAN"):
        make_app(f"sqlite:///{tmp_path}/x.db", tmp_path, DEFAULT_PLAN="nope")


def test_a_limit_of_zero_refuses_without_dividing_by_zero(app, client):
    with app.app_context(), db.connection_context():
        with pytest.raises(RateLimited) as exc:
            limits.check_rate("k0", "account", 0)
    assert exc.value.status == 429 and exc.value.headers["Retry-After"]
    key = create_key(app, kind="admin", rate_limits={"*": 0})
    resp = Api(client, key).get("/v1/models")
    assert resp.status_code == 429 and resp.get_json()["error"]["type"] == "rate_limit_error"


# ---------------------------------------------------------------- streams: early close, cap


@pytest.fixture(scope="module")
def upstream_fake():
    with fake_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(_patient_start, tmp_path_factory, upstream_fake):
    env = upstream_env(upstream_fake, ADMIN, MAX_CONCURRENT_STREAMS_PER_KEY=2, OPENAI_MAX_RETRIES=0,
                       ECHO_DIRECTIVES="true")  # slow echo streams: [echo tokens=N delay=S]
    with chatport_server(tmp_path_factory.mktemp("metering"), workers=2, env=env) as base:
        yield base


LONG = "[echo tokens=200 delay=0.05] " + "lorem ipsum " * 2500  # ~7,500 prompt tokens


def _open_stream(url, headers, body):
    resp = requests.post(url, headers=headers, json=body, stream=True, timeout=30)
    if resp.status_code == 200:
        # keep the line iterator: urllib3 closes the connection when a half-read one is dropped
        resp.lines = resp.iter_lines()
        next(resp.lines)  # the first chunk
    return resp


def test_client_leaving_a_v1_stream_early_pays_for_the_prompt(server):
    key_id, key = _new_key(server)
    resp = _open_stream(server + "/v1/chat/completions", _bearer(key), {
        "model": "echo/echo", "stream": True, "messages": [{"role": "user", "content": LONG}]})
    assert resp.status_code == 200
    resp.close()  # the client goes away after the first chunk
    used = _usage_of(server, key_id, 1)
    assert used["prompt_tokens"] >= 7500 and used["completion_tokens"] < 200
    assert used["credits"] >= 1 + 8  # the call and ~7,500 prompt tokens at 1 credit per 1,000


def test_client_leaving_a_channel_stream_early_pays_for_the_prompt(server):
    bot = requests.post(server + "/api/v1/bots", headers=AH, json={"name": "early"}, timeout=10).json()
    ch = requests.post(f"{server}/api/v1/bots/{bot['id']}/channels", headers=AH, json={}, timeout=10).json()
    resp = _open_stream(f"{server}/api/public/channels/{ch['id']}/1.0/message", {"X-API-Secret-Key": ch["secret"]},
                        {"message": LONG, "stream": True})
    assert resp.status_code == 200
    resp.close()
    used = _usage_of(server, f"channel:{ch['id']}", 1)
    assert used["prompt_tokens"] >= 7500 and used["completion_tokens"] < 200


def test_concurrent_streams_are_capped_per_key_across_workers(server):
    key_id, key = _new_key(server)
    slow = {"model": "echo/echo", "stream": True,
            "messages": [{"role": "user", "content": "[echo tokens=400 delay=0.05]"}]}
    url = server + "/v1/chat/completions"
    opened = _at_once(6, lambda i: _open_stream(url, _bearer(key), slow))
    statuses = sorted(r.status_code for r in opened)
    assert statuses == [200, 200, 429, 429, 429, 429]
    refused = next(r for r in opened if r.status_code == 429).json()
    assert refused["error"]["type"] == "rate_limit_error" and refused["error"]["code"] == "too_many_streams"
    _, other = _new_key(server)  # the cap is per key
    other_stream = _open_stream(url, _bearer(other), slow)
    assert other_stream.status_code == 200
    other_stream.close()
    assert requests.post(url, headers=_bearer(key), timeout=30, json={  # JSON calls are not streams
        "model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    bot = requests.post(server + "/api/v1/bots", headers=AH, json={"name": "cap"}, timeout=10).json()
    conv = requests.post(server + "/api/v1/conversations", headers=_bearer(key), json={"bot_id": bot["id"]},
                         timeout=10).json()
    in_chatport = requests.post(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=_bearer(key),
                                json={"content": "hi", "stream": True}, timeout=10)
    assert in_chatport.status_code == 429 and in_chatport.json()["error"] == "too_many_streams"
    for r in opened:
        r.close()  # the clients go away: their slots come back
    deadline = time.monotonic() + 10
    while True:
        again = _open_stream(url, _bearer(key), slow)
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.status_code == 200
    again.close()


def test_a_failed_stream_gives_its_slot_back(server, upstream_fake):
    _, key = _new_key(server)
    upstream_fake.reset()
    upstream_fake.script(status=500)
    try:
        body = {"model": "openai/gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):  # the cap is 2: each failed stream released its slot
            r = requests.post(server + "/v1/chat/completions", headers=_bearer(key), json=body, timeout=30)
            assert r.status_code == 200 and b'"error"' in r.content
    finally:
        upstream_fake.reset()


def test_admin_keys_have_no_stream_cap(server):
    slow = {"model": "echo/echo", "stream": True,
            "messages": [{"role": "user", "content": "[echo tokens=40 delay=0.05]"}]}
    opened = _at_once(4, lambda i: _open_stream(server + "/v1/chat/completions", AH, slow))
    assert [r.status_code for r in opened] == [200] * 4
    for r in opened:
        r.close()


def test_stale_stream_leases_expire(app, frozen):
    with app.app_context(), db.connection_context():
        first = limits.acquire_stream("k", 2, ttl=60)
        second = limits.acquire_stream("k", 2, ttl=60)
        with pytest.raises(RateLimited):
            limits.acquire_stream("k", 2, ttl=60)
        limits.release_stream(first)
        third = limits.acquire_stream("k", 2, ttl=60)
        clock.freeze(frozen + timedelta(seconds=61))  # their processes died: nobody released them
        fresh = {limits.acquire_stream("k", 2, ttl=60), limits.acquire_stream("k", 2, ttl=60)}
        with pytest.raises(RateLimited):
            limits.acquire_stream("k", 2, ttl=60)
        assert {lease.id for lease in StreamLease.select()} == fresh  # the expired ones were pruned
        assert not {second, third} & fresh


def test_a_key_given_a_quota_later_starts_from_what_it_used_this_month(app, client, admin):
    key = create_key(app, kind="client", name="quota later")
    api = Api(client, key)
    for _ in range(3):
        assert api.get("/v1/models").status_code == 200
    key_id = next(k["id"] for k in admin.get("/api/v1/keys").get_json()["data"] if k["name"] == "quota later")
    with app.app_context(), db.connection_context():
        assert limits.counted(key_id) == 0  # no quota: no counter kept
    assert admin.patch(f"/api/v1/keys/{key_id}", json={"credit_quota": 4}).status_code == 200
    assert api.get("/v1/models").status_code == 200  # 3 used + 1 = the quota
    refused = api.get("/v1/models")
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "credits_exhausted"
    with app.app_context(), db.connection_context():
        assert limits.counted(key_id) == 4


def test_channel_counters_are_seeded_when_a_channel_quota_is_configured(database_url, tmp_path):
    from app.ids import new_id

    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        Usage.insert(id=new_id(), created_at=clock.now(), key_id="channel:c1", dialect="channel",
                     category="conversation", endpoint="POST /x", credits=6, status=200,
                     latency_ms=1.0).execute()
    app = make_app(database_url, tmp_path, CHANNEL_CREDIT_QUOTA=10)
    with app.app_context(), db.connection_context():
        assert limits.counted("channel:c1") == 6

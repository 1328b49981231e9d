"""The channel API (docs/channel-api.md), walked top to bottom: one test per endpoint and status."""
import json
import time

import pytest
import requests

from app.storage.db import db
from app.storage.models import Conversation, KnowledgeRow

from .conftest import Api
from .servers import chatport_server
from .test_mgmt_api import snapshot

PREFIX = "/api/public/channels"
ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


class Channel:
    def __init__(self, client, channel_id, secret):
        self.api = Api(client, headers={"X-API-Secret-Key": secret})
        self.id = channel_id
        self.secret = secret

    def url(self, path):
        return f"{PREFIX}/{self.id}/1.0/{path}"

    def post(self, path, body=None, **kw):
        return self.api.post(self.url(path), json=body, **kw) if body is not None else \
            self.api.post(self.url(path), headers={"Content-Type": "application/json"}, **kw)

    def get(self, path, **kw):
        return self.api.get(self.url(path), **kw)

    def put(self, path, body):
        return self.api.put(self.url(path), json=body)

    def delete(self, path, body):
        return self.api.delete(self.url(path), json=body)


def make_channel(admin, client, greeting="Hello, how can I help you?", model="echo/echo"):
    bot = admin.post("/api/v1/bots", json={"name": "Spec bot", "greeting": greeting, "model": model}).get_json()
    ch = admin.post(f"/api/v1/bots/{bot['id']}/channels", json={}).get_json()
    return bot, Channel(client, ch["id"], ch["secret"])


@pytest.fixture
def setup(admin, client):
    return make_channel(admin, client)


def assert_fail(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["success"] is False and isinstance(body["message"], str) and body["message"]
    assert set(body) == {"success", "message"}
    return body


# ------------------------------------------------------------------ auth statuses (every endpoint)

ENDPOINTS = [("POST", "conversation"), ("POST", "message"), ("POST", "conversations"), ("POST", "messages"),
             ("POST", "data-sources"), ("POST", "data-sources/list"), ("GET", "data-sources"),
             ("PUT", "data-sources"), ("DELETE", "data-sources"), ("POST", "data-sources/row"),
             ("POST", "data-sources/row/list"), ("GET", "data-sources/row"), ("PUT", "data-sources/row"),
             ("DELETE", "data-sources/rows"), ("POST", "data-sources/sync")]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_403_wrong_secret_and_404_unknown_or_disabled_channel(admin, client, method, path):
    bot, ch = make_channel(admin, client)
    wrong = Api(client, headers={"X-API-Secret-Key": "cps_wrong"})
    assert_fail(wrong.request(method, ch.url(path), json={}), 403)
    assert_fail(Api(client).request(method, ch.url(path), json={}), 403)  # no secret at all
    assert_fail(ch.api.request(method, f"{PREFIX}/00000000-0000-0000-0000-000000000000/1.0/{path}", json={}), 404)
    admin.post(f"/api/v1/bots/{bot['id']}/channels/{ch.id}/disable")
    assert_fail(ch.api.request(method, ch.url(path), json={}), 404)


# ------------------------------------------------------------------ conversations and messages


def test_start_conversation(setup):
    bot, ch = setup
    resp = ch.post("conversation")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["success"] is True and body["response"] == "Hello, how can I help you?"
    assert len(body["conversationId"]) == 36


def test_one_off_message_creates_conversation(setup, app):
    bot, ch = setup
    resp = ch.post("message", {"response": "What is the distance to the moon?"})
    body = resp.get_json()
    assert resp.status_code == 200 and body["success"] is True
    assert body["response"] == "Echo: What is the distance to the moon?"
    with app.app_context(), db.connection_context():
        conv = Conversation.get_by_id(body["conversationId"])
        assert conv.channel_id == ch.id and conv.surface == "channel"


def test_continue_conversation_with_message_field(setup):
    bot, ch = setup
    cid = ch.post("conversation").get_json()["conversationId"]
    resp = ch.post("message", {"conversationId": cid, "message": "And the sun?"})
    assert resp.get_json() == {"success": True, "conversationId": cid, "response": "Echo: And the sun?"}
    msgs = ch.post("messages", {"conversationId": cid}).get_json()
    assert [m["role"] for m in msgs["messages"]] == ["assistant", "user", "assistant"]
    assert msgs["messages"][1]["message"] == "And the sun?"
    import re

    assert all(re.match(ISO, m["createdAt"]) for m in msgs["messages"])
    assert set(msgs["messages"][0]) == {"id", "message", "role", "createdAt"}
    assert msgs["pagination"] == {"total": 3, "last": msgs["messages"][-1]["id"]}


def test_message_400s(setup, app):
    bot, ch = setup
    before = snapshot(app)
    assert_fail(ch.post("message", {}), 400)
    assert_fail(ch.post("message", {"message": ""}), 400)
    assert_fail(ch.post("message", {"message": 5}), 400)
    assert_fail(ch.post("message", {"message": "x" * (app.config["MAX_MESSAGE_LENGTH"] + 1)}), 400)
    assert_fail(ch.api.post(ch.url("message"), data="{not json", headers={"Content-Type": "application/json"}), 400)
    assert_fail(ch.post("message", {"message": "hi", "stream": "maybe"}), 400)
    assert snapshot(app) == before


def test_message_404_for_unknown_or_foreign_conversation(admin, client, setup, app):
    bot, ch = setup
    other_bot, other = make_channel(admin, client)
    theirs = other.post("message", {"message": "secret stuff"}).get_json()["conversationId"]
    before = snapshot(app)
    assert_fail(ch.post("message", {"conversationId": theirs, "message": "hi"}), 404)
    assert_fail(ch.post("message", {"conversationId": "nope", "message": "hi"}), 404)
    body = assert_fail(ch.post("messages", {"conversationId": theirs}), 404)
    assert "secret" not in json.dumps(body)
    assert snapshot(app) == before


def test_list_conversations_shape_and_initial_message(setup):
    bot, ch = setup
    ch.post("message", {"message": "What is the distance to the moon?"})
    ch.post("message", {"message": "How many planets are there in the solar system?"})
    ch.post("conversation")
    body = ch.post("conversations", {"limit": 10}).get_json()
    assert body["success"] is True
    assert [c["initialMessage"] for c in body["conversations"]] == [
        "What is the distance to the moon?", "How many planets are there in the solar system?", ""]
    assert set(body["conversations"][0]) == {"id", "createdAt", "initialMessage"}
    assert body["pagination"] == {"total": 3, "last": body["conversations"][-1]["id"]}
    assert ch.post("conversations").get_json()["pagination"]["total"] == 3  # no body at all


def test_pagination_400s(setup):
    bot, ch = setup
    for body in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"cursor": "not-an-id"}):
        assert_fail(ch.post("conversations", body), 400)
    assert_fail(ch.post("messages", {"limit": 5}), 400)  # conversationId missing


def test_provider_failure_is_500_or_mapped(setup, app):
    from app.errors import ProviderRateLimited

    from .scripted import scripted

    bot, ch = setup

    def overloaded(request):
        raise ProviderRateLimited("upstream overloaded", headers={"Retry-After": "3"})
        yield  # pragma: no cover

    with scripted(app, overloaded):
        with app.app_context(), db.connection_context():
            from app.storage.models import Bot

            Bot.update(model="scripted/test").where(Bot.id == bot["id"]).execute()
        resp = ch.post("message", {"message": "hi"})
        assert_fail(resp, 429)
        assert resp.headers["Retry-After"] == "3"


def test_unhandled_error_is_500_json(setup, app, monkeypatch):
    from app.services import chat

    bot, ch = setup
    monkeypatch.setattr(chat, "start_conversation", lambda *a, **k: 1 / 0)
    body = assert_fail(ch.post("conversation"), 500)
    assert "ZeroDivision" not in body["message"] and "Traceback" not in body["message"]


# ------------------------------------------------------------------ data sources


def test_data_source_lifecycle(setup, app):
    import re

    bot, ch = setup
    created = ch.post("data-sources").get_json()
    ds = created["dataSource"]
    assert created["success"] is True
    assert set(ds) == {"id", "type", "state", "lastSync", "syncInterval", "createdAt"}
    assert (ds["type"], ds["state"], ds["lastSync"], ds["syncInterval"]) == ("MANUAL", "not_synced", None, None)
    assert re.match(ISO, ds["createdAt"])
    listed = ch.post("data-sources/list", {}).get_json()
    assert [d["id"] for d in listed["dataSources"]] == [ds["id"]] and listed["pagination"]["total"] == 1
    assert ch.get(f"data-sources?dataSourceId={ds['id']}").get_json()["dataSource"]["id"] == ds["id"]
    updated = ch.put("data-sources", {"dataSourceId": ds["id"], "syncInterval": "week"}).get_json()
    assert updated["dataSource"]["syncInterval"] == "week"
    assert ch.put("data-sources", {"dataSourceId": ds["id"], "syncInterval": None}).get_json()[
        "dataSource"]["syncInterval"] is None
    rows = [{"name": "one.md", "content": "# Testing 1.1\n## Blah"},
            {"name": "two.md", "content": "The moon is 384,400 km away."},
            {"name": "three.md", "content": "Refunds take 14 days."}]
    assert ch.post("data-sources/row", {"dataSourceId": ds["id"], "dataSourceRows": rows}).get_json() == {"success": True}
    row_list = ch.post("data-sources/row/list", {"dataSourceId": ds["id"]}).get_json()
    assert [r["name"] for r in row_list["dataSourceRows"]] == ["one.md", "two.md", "three.md"]
    assert set(row_list["dataSourceRows"][0]) == {"id", "name"} and row_list["pagination"]["total"] == 3
    first = row_list["dataSourceRows"][0]["id"]
    row = ch.get(f"data-sources/row?dataSourceId={ds['id']}&dataSourceRowId={first}").get_json()["dataSourceRow"]
    assert row["content"] == "# Testing 1.1\n## Blah" and row["state"] == "not_synced" and row["type"] == "MANUAL"
    assert set(row) == {"id", "type", "state", "lastSync", "createdAt", "content"}
    # sync in the background, then the bot answers from it
    assert ch.post("data-sources/sync", {"dataSourceId": ds["id"]}).get_json() == {"success": True}
    _wait_synced(ch, ds["id"])
    row = ch.get(f"data-sources/row?dataSourceId={ds['id']}&dataSourceRowId={first}").get_json()["dataSourceRow"]
    assert row["state"] == "synced" and re.match(ISO, row["lastSync"])
    assert ch.put("data-sources/row", {"dataSourceId": ds["id"], "dataSourceRows": [
        {"id": first, "name": "one-renamed.md", "content": "Penguins live in Antarctica."}]}).get_json() == {"success": True}
    row = ch.get(f"data-sources/row?dataSourceId={ds['id']}&dataSourceRowId={first}").get_json()["dataSourceRow"]
    assert row["content"] == "Penguins live in Antarctica." and row["state"] == "not_synced"
    assert ch.delete("data-sources/rows", {"dataSourceId": ds["id"], "dataSourceRows": [{"id": first}]}).get_json() == {"success": True}
    assert_fail(ch.get(f"data-sources/row?dataSourceId={ds['id']}&dataSourceRowId={first}"), 404)
    assert_fail(ch.delete("data-sources/rows", {"dataSourceId": ds["id"], "dataSourceRows": [{"id": first}]}), 404)
    assert ch.delete("data-sources", {"dataSourceId": ds["id"]}).get_json() == {"success": True}
    assert_fail(ch.delete("data-sources", {"dataSourceId": ds["id"]}), 404)
    assert_fail(ch.get(f"data-sources?dataSourceId={ds['id']}"), 404)
    with app.app_context(), db.connection_context():
        assert KnowledgeRow.select().count() == 0


def _wait_synced(ch, source_id, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = ch.get(f"data-sources?dataSourceId={source_id}").get_json()["dataSource"]["state"]
        if state == "synced":
            return
        time.sleep(0.05)
    rows = ch.post("data-sources/row/list", {"dataSourceId": source_id}).get_json()["dataSourceRows"]
    details = [ch.get(f"data-sources/row?dataSourceId={source_id}&dataSourceRowId={r['id']}").get_json() for r in rows]
    raise AssertionError(f"not synced: {state} {details}")


def test_bot_answers_from_channel_knowledge(admin, client):
    bot, ch = make_channel(admin, client, model="extractive/extractive")
    ds = ch.post("data-sources").get_json()["dataSource"]["id"]
    ch.post("data-sources/row", {"dataSourceId": ds, "dataSourceRows": [
        {"name": "moon.md", "content": "The average distance from the Earth to the Moon is about 384,400 kilometers."}]})
    ch.post("data-sources/sync", {"dataSourceId": ds})
    _wait_synced(ch, ds)
    answer = ch.post("message", {"message": "What is the distance from the Earth to the Moon?"}).get_json()
    assert "384,400 kilometers" in answer["response"]


def test_data_source_errors(admin, client, setup, app):
    bot, ch = setup
    other_bot, other = make_channel(admin, client)
    theirs = other.post("data-sources").get_json()["dataSource"]["id"]
    mine = ch.post("data-sources").get_json()["dataSource"]["id"]
    before = snapshot(app)
    assert_fail(ch.get(f"data-sources?dataSourceId={theirs}"), 404)  # another bot's source
    assert_fail(ch.get("data-sources"), 400)
    assert_fail(ch.put("data-sources", {"dataSourceId": mine, "syncInterval": "hourly"}), 400)
    assert_fail(ch.put("data-sources", {"syncInterval": "day"}), 400)
    assert_fail(ch.delete("data-sources", {}), 400)
    assert_fail(ch.post("data-sources/row", {"dataSourceId": mine}), 400)
    assert_fail(ch.post("data-sources/row", {"dataSourceId": mine, "dataSourceRows": [{"name": "x"}]}), 400)
    assert_fail(ch.post("data-sources/row", {"dataSourceId": mine, "dataSourceRows": [
        {"name": "ok", "content": "fine"}, {"name": "bad", "content": ""}]}), 400)
    assert_fail(ch.post("data-sources/row", {"dataSourceId": theirs, "dataSourceRows": [{"content": "x"}]}), 404)
    assert_fail(ch.put("data-sources/row", {"dataSourceId": mine, "dataSourceRows": [{"id": "nope", "content": "x"}]}), 404)
    assert_fail(ch.get(f"data-sources/row?dataSourceId={mine}"), 400)
    assert_fail(ch.post("data-sources/sync", {"dataSourceId": theirs}), 404)
    assert snapshot(app) == before


def test_storage_exhausted_is_429_and_writes_nothing(setup, app):
    bot, ch = setup
    app.config["KNOWLEDGE_MAX_CHARS"] = 50
    ds = ch.post("data-sources").get_json()["dataSource"]["id"]
    ch.post("data-sources/row", {"dataSourceId": ds, "dataSourceRows": [{"name": "a", "content": "x" * 40}]})
    before = snapshot(app)
    assert_fail(ch.post("data-sources/row", {"dataSourceId": ds, "dataSourceRows": [
        {"name": "b", "content": "y" * 5}, {"name": "c", "content": "z" * 10}]}), 429)
    assert snapshot(app) == before


def test_second_sync_while_running_is_429(setup, app):
    from app.services import knowledge

    bot, ch = setup
    ds = ch.post("data-sources").get_json()["dataSource"]["id"]
    with app.app_context(), db.connection_context():
        knowledge.claim_sync(ds)  # a sync is running (e.g. on another worker)
    body = assert_fail(ch.post("data-sources/sync", {"dataSourceId": ds}), 429)
    assert "already running" in body["message"]


def test_wrong_method_is_405_in_channel_shape(setup):
    bot, ch = setup
    assert_fail(ch.get("conversation"), 405)
    assert_fail(ch.api.patch(ch.url("data-sources"), json={}), 405)


# ------------------------------------------------------------------ real server: stream and pagination

SPEC_STREAM_LOGIC = '''
def parse(chunks):
    out = []
    for chunk in chunks:
        lines = chunk.split("\\n")
        parsed = [json.loads(l) for l in (line.replace("data: ", "", 1).strip() for line in lines)
                  if l != "" and l != "[DONE]"]
        for parsed_line in parsed:
            content = parsed_line["choices"][0]["delta"].get("content")
            if content:
                out.append(content)
    return out
'''


def spec_stream_parse(chunks):
    """The spec's JavaScript stream-handling example, line for line, in Python."""
    ns = {"json": json}
    exec(SPEC_STREAM_LOGIC, ns)
    return ns["parse"](chunks)


ADMIN = "cp_channel_tests_admin_key_0000000000000000000"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with chatport_server(tmp_path_factory.mktemp("channel"), env={"CHATPORT_ADMIN_KEY": ADMIN}) as base:
        h = {"Authorization": f"Bearer {ADMIN}"}
        bot = requests.post(base + "/api/v1/bots", headers=h, json={"name": "live"}, timeout=10).json()
        ch = requests.post(f"{base}/api/v1/bots/{bot['id']}/channels", headers=h, json={}, timeout=10).json()
        yield base, ch["id"], {"X-API-Secret-Key": ch["secret"], "Content-Type": "application/json"}


def test_stream_reassembles_stored_answer(live):
    base, cid, headers = live
    url = f"{base}{PREFIX}/{cid}/1.0"
    resp = requests.post(url + "/message", headers=headers, stream=True, timeout=20,
                         data=json.dumps({"message": "[echo tokens=30 delay=0.01]", "stream": True}))
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    chunks = [c.decode() for c in resp.iter_content(chunk_size=None)]
    raw = "".join(chunks)
    assert raw.rstrip().endswith("data: [DONE]")
    first = json.loads(raw.split("\n\n")[0][len("data: "):])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"
    assert '"finish_reason":"stop"' in raw
    text = "".join(spec_stream_parse([raw]))
    conv_id = resp.headers["X-Conversation-Id"]
    msgs = requests.post(url + "/messages", headers=headers, timeout=10,
                         data=json.dumps({"conversationId": conv_id})).json()["messages"]
    assert msgs[-1]["role"] == "assistant" and msgs[-1]["message"] == text == " ".join(f"t{i}" for i in range(1, 31))


def test_pagination_250_conversations_each_once(live):
    base, cid, headers = live
    url = f"{base}{PREFIX}/{cid}/1.0"
    before = requests.post(url + "/conversations", headers=headers, json={}, timeout=10).json()["pagination"]["total"]
    created = [requests.post(url + "/conversation", headers=headers, timeout=10).json()["conversationId"]
               for _ in range(250)]
    seen, cursor = [], None
    while True:
        body = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = requests.post(url + "/conversations", headers=headers, json=body, timeout=10).json()
        if not page["conversations"]:
            break
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["pagination"]["last"]
    assert len(seen) == len(set(seen)) == before + 250
    assert seen[-250:] == created

"""chatport API, conversation part (in-process client, both databases)."""
import json

import pytest

from .conftest import Api, create_key
from .test_mgmt_api import assert_error, snapshot


@pytest.fixture
def bot(admin):
    return admin.post("/api/v1/bots", json={"name": "Support", "greeting": "Hello!",
                                             "instructions": "SECRET INSTRUCTIONS"}).get_json()


def _start(api, bot, **kw):
    resp = api.post("/api/v1/conversations", json={"bot_id": bot["id"], **kw})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def parse_sse(text):
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip() or frame.startswith(":"):
            continue
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        events.append((lines.get("event"), json.loads(lines["data"])))
    return events


def test_conversation_flow(admin, bot):
    conv = _start(admin, bot, end_user_id="alice")
    assert conv["greeting"] == "Hello!" and conv["end_user_id"] == "alice"
    reply = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "What is up?"})
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["message"]["content"] == "Echo: What is up?" and body["message"]["status"] == "complete"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    msgs = admin.get(f"/api/v1/conversations/{conv['id']}/messages").get_json()
    assert [m["role"] for m in msgs["data"]] == ["assistant", "user", "assistant"]
    assert msgs["pagination"]["total"] == 3
    assert body["message"] == msgs["data"][-1]  # the reply's message is the one stored, as listed
    assert list(body["message"]) == list(msgs["data"][-1])  # key for key, in the schema's order
    assert list(body) == ["conversation_id", "user_message_id", "message", "usage", "finish_reason"]
    assert body["user_message_id"] == msgs["data"][1]["id"] and body["conversation_id"] == conv["id"]
    rated = admin.post(f"/api/v1/conversations/{conv['id']}/messages/{body['message']['id']}/rating",
                       json={"rating": "like", "comment": "great"})
    assert rated.get_json()["rating"] == "like" and rated.get_json()["rating_comment"] == "great"
    assert_error(admin.post(f"/api/v1/conversations/{conv['id']}/messages/{body['user_message_id']}/rating",
                            json={"rating": "like"}), 400)
    assert_error(admin.post(f"/api/v1/conversations/{conv['id']}/messages/{body['message']['id']}/rating",
                            json={"rating": "meh"}), 400, "rating")
    assert admin.delete(f"/api/v1/conversations/{conv['id']}").status_code == 204
    assert_error(admin.get(f"/api/v1/conversations/{conv['id']}"), 404)
    assert_error(admin.delete(f"/api/v1/conversations/{conv['id']}"), 404)


def test_streaming_events(admin, bot):
    conv = _start(admin, bot)
    resp = admin.post(f"/api/v1/conversations/{conv['id']}/messages",
                      json={"content": "[echo tokens=5]", "stream": True})
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["X-Accel-Buffering"] == "no"
    events = parse_sse(resp.get_data(as_text=True))
    assert events[0][0] == "start" and events[0][1]["conversation_id"] == conv["id"]
    assert "".join(e[1]["text"] for e in events if e[0] == "delta") == "t1 t2 t3 t4 t5"
    kind, done = events[-1]
    assert kind == "done" and done["status"] == "complete" and done["usage"]["completion_tokens"] == 5
    msgs = admin.get(f"/api/v1/conversations/{conv['id']}/messages").get_json()["data"]
    assert msgs[-1]["id"] == done["message_id"] and msgs[-1]["content"] == "t1 t2 t3 t4 t5"


def test_list_filters(admin, bot):
    other = admin.post("/api/v1/bots", json={"name": "Other"}).get_json()
    a = _start(admin, bot, end_user_id="alice")
    b = _start(admin, bot, end_user_id="bob")
    c = _start(admin, other, end_user_id="alice")
    ids = lambda q: [x["id"] for x in admin.get("/api/v1/conversations" + q).get_json()["data"]]
    assert ids("") == [a["id"], b["id"], c["id"]]
    assert ids(f"?bot_id={bot['id']}") == [a["id"], b["id"]]
    assert ids("?end_user_id=alice") == [a["id"], c["id"]]
    assert ids(f"?end_user_id=alice&bot_id={other['id']}") == [c["id"]]
    assert ids("?end_user_id=nobody") == []


def test_scoped_client_key(app, client, admin, bot):
    other = admin.post("/api/v1/bots", json={"name": "Other"}).get_json()
    theirs = _start(admin, other)
    scoped = Api(client, create_key(app, kind="client", bot_ids=[bot["id"]]))
    mine = _start(scoped, bot)
    assert "SECRET" not in json.dumps(mine)
    assert_error(scoped.post("/api/v1/conversations", json={"bot_id": other["id"]}), 404)
    assert_error(scoped.get(f"/api/v1/conversations/{theirs['id']}"), 404)
    assert_error(scoped.get(f"/api/v1/conversations/{theirs['id']}/messages"), 404)
    assert_error(scoped.post(f"/api/v1/conversations/{theirs['id']}/messages", json={"content": "x"}), 404)
    assert_error(scoped.delete(f"/api/v1/conversations/{theirs['id']}"), 404)
    listed = scoped.get("/api/v1/conversations").get_json()["data"]
    assert [c["id"] for c in listed] == [mine["id"]]
    reply = scoped.post(f"/api/v1/conversations/{mine['id']}/messages", json={"content": "hi"})
    assert "SECRET" not in reply.get_data(as_text=True)
    assert_error(scoped.get(f"/api/v1/bots/{bot['id']}"), 403)


def test_key_scoped_to_deleted_bot(app, client, admin, bot):
    scoped = Api(client, create_key(app, kind="client", bot_ids=[bot["id"]]))
    admin.delete(f"/api/v1/bots/{bot['id']}")
    assert_error(scoped.post("/api/v1/conversations", json={"bot_id": bot["id"]}), 404)
    assert scoped.get("/api/v1/conversations").get_json()["data"] == []


def test_bad_input_changes_nothing(app, admin, bot):
    conv = _start(admin, bot)
    path = f"/api/v1/conversations/{conv['id']}/messages"
    before = snapshot(app)
    assert_error(admin.post(path, json={"content": ""}), 400, "content")
    assert_error(admin.post(path, json={}), 400, "content")
    assert_error(admin.post(path, json={"content": "x" * (app.config["MAX_MESSAGE_LENGTH"] + 1)}), 400)
    assert_error(admin.post(path, json={"content": "hi", "temperature": 5}), 400, "temperature")
    assert_error(admin.post(path, json={"content": "hi", "model": "nope/x"}), 400, "model")
    assert_error(admin.post(path, json={"content": "hi", "extra": 1}), 400, "extra")
    assert_error(admin.post("/api/v1/conversations", json={"bot_id": "nope"}), 404)
    assert_error(admin.post("/api/v1/conversations/nope/messages", json={"content": "hi"}), 404)
    unknown = admin.post(path, json={"content": "hi", "model": "nope/x"}).get_json()
    assert "echo/echo" in unknown["message"]
    assert snapshot(app) == before
    admin.patch(f"/api/v1/bots/{bot['id']}", json={"enabled": False})
    before = snapshot(app)
    assert_error(admin.post(path, json={"content": "hi"}), 404)
    assert_error(admin.post("/api/v1/conversations", json={"bot_id": bot["id"]}), 404)
    assert snapshot(app) == before


def test_a_stop_must_name_an_answer_of_the_conversation(app, client, admin, bot):
    conv = _start(admin, bot)
    reply = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "hi"}).get_json()
    other = _start(admin, bot)
    theirs = Api(client, create_key(app, kind="client", bot_ids=[admin.post(
        "/api/v1/bots", json={"name": "Other"}).get_json()["id"]]))
    before = snapshot(app)
    stop = "/api/v1/conversations/{}/messages/{}/stop"
    for conv_id, message_id in ((conv["id"], "some-generation"), (conv["id"], "0" * 36),
                                (conv["id"], reply["user_message_id"]), (other["id"], reply["message"]["id"]),
                                ("nope", reply["message"]["id"])):
        assert_error(admin.post(stop.format(conv_id, message_id)), 404)
    assert_error(theirs.post(stop.format(conv["id"], reply["message"]["id"])), 404)
    assert snapshot(app) == before
    finished = admin.post(stop.format(conv["id"], reply["message"]["id"]))
    assert finished.status_code == 202
    assert finished.get_json() == {"message_id": reply["message"]["id"], "stop_requested": False}
    assert snapshot(app) == before

"""Hostile request bodies are 400s (415 for a body that is not JSON) in each dialect's own
error shape, and change nothing: deep nesting, huge integers, NaN, lone surrogates and NULs,
wrong content types, a zero rate limit, control characters in ids."""
import json

import pytest
import requests

from app.storage.db import db
from app.storage.models import Conversation, EndUser, Message

from .conftest import Api, create_key
from .servers import chatport_server
from .test_mgmt_api import snapshot

CHANNELS = "/api/public/channels"
NESTED = "[" * 100_000
HUGE_INT = '{"x": ' + "9" * 5000 + "}"


def openai_shape(body, status):
    return set(body) == {"error"} and body["error"]["type"] == "invalid_request_error" \
        and body["error"]["message"]


def anthropic_shape(body, status):
    return set(body) == {"type", "error", "request_id"} and body["type"] == "error" \
        and body["error"]["type"] == "invalid_request_error" and body["error"]["message"]


def chat_api_shape(body, status):
    return set(body) == {"message"} and body["message"]


def channel_shape(body, status):
    return set(body) == {"success", "message"} and body["success"] is False and body["message"]


def flows_shape(body, status):
    return body.get("error") is True and body.get("code") == status and body.get("message")


def hooks_shape(body, status):
    return body.get("success") is False and body["error"]["message"]


def chatport_shape(body, status):
    return body.get("code") == status and body.get("message") and body.get("error")


class Surface:
    """One route of one dialect: where to send, as whom, a valid body with TEXT in it, the
    dialect's error shape."""

    def __init__(self, name, api, path, template, shape):
        self.name, self.api, self.path, self.template, self.shape = name, api, path, template, shape

    def send(self, data, content_type="application/json"):
        headers = {"Content-Type": content_type} if content_type else {}
        return self.api.post(self.path, data=data, headers=headers)

    def body(self, text_literal):
        """The valid body with a JSON string literal (quotes included) for TEXT."""
        return self.template.replace('"TEXT"', text_literal)


@pytest.fixture
def surfaces(admin, client, app):
    bot = admin.post("/api/v1/bots", json={"name": "hostile", "model": "echo/echo"}).get_json()
    channel = admin.post(f"/api/v1/bots/{bot['id']}/channels", json={}).get_json()
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot["id"]}).get_json()
    flow = admin.post("/api/v1/automations", json={
        "name": "hostile", "endpoint": "hostile", "inputs": [{"name": "q"}],
        "steps": [{"prompt": "Answer {{ q }}", "model": "echo/echo"}]}).get_json()
    channel_api = Api(client, headers={"X-API-Secret-Key": channel["secret"]})
    return [
        Surface("openai", admin, "/v1/chat/completions",
                '{"model": "echo/echo", "messages": [{"role": "user", "content": "TEXT"}]}', openai_shape),
        Surface("anthropic", Api(client, headers={"x-api-key": admin.key}), "/v1/messages",
                '{"model": "echo/echo", "max_tokens": 50, "messages": [{"role": "user", "content": "TEXT"}]}',
                anthropic_shape),
        Surface("chat_api", admin, "/api/v1/chat",
                '{"chatbotId": "%s", "conversationId": "c-hostile", '
                '"messages": [{"role": "user", "content": "TEXT"}]}' % bot["id"], chat_api_shape),
        Surface("channel", channel_api, f"{CHANNELS}/{channel['id']}/1.0/message",
                '{"message": "TEXT"}', channel_shape),
        Surface("flows", admin, f"/v1/flows/{flow['id']}/generate",
                '{"userId": "u1", "flow": {"inputs": {"q": "TEXT"}}}', flows_shape),
        Surface("hooks", admin, "/hooks/hostile", '{"q": "TEXT"}', hooks_shape),
        Surface("chatport", admin, f"/api/v1/conversations/{conv['id']}/messages",
                '{"content": "TEXT"}', chatport_shape),
        Surface("chatport-mgmt", admin, "/api/v1/bots", '{"name": "TEXT"}', chatport_shape),
    ]


def assert_refused(surface, resp, status=400):
    assert resp.status_code == status, (surface.name, resp.status_code, resp.get_data(as_text=True))
    body = resp.get_json()
    assert surface.shape(body, status), (surface.name, body)
    return body


def test_the_valid_bodies_are_accepted(surfaces):
    """The templates are right: what the other tests refuse differs only in the hostile part."""
    for surface in surfaces:
        resp = surface.send(surface.body('"hello there"'))
        assert resp.status_code in (200, 201), (surface.name, resp.get_data(as_text=True))


@pytest.mark.parametrize("payload, words", [
    (NESTED, "nested deeper"),
    ('{"messages": ' + NESTED, "nested deeper"),
    (HUGE_INT, "integer"),
    ('{"x": -' + "1" * 200 + "}", "integer"),
    ('{"x": NaN}', "NaN"),
    ('{"x": 1e999}', "out of range"),
    ('{"x": ' + "[" * 65 + "]" * 65 + "}", "nested deeper than 64"),
    (b'{"x": "\xff"}', "UTF-8"),
    ('{"x": ', "not valid JSON"),
])
def test_hostile_json_is_a_400_in_every_dialect(app, surfaces, payload, words):
    before = snapshot(app)
    for surface in surfaces:
        body = assert_refused(surface, surface.send(payload))
        assert words in json.dumps(body), (surface.name, body)
    assert snapshot(app) == before


@pytest.mark.parametrize("literal", ['"hi \\ud800"', '"hi \\udfff there"', '"\\ud83d"', '"nul \\u0000 here"'])
def test_lone_surrogates_and_nuls_in_stored_text_are_refused(app, surfaces, literal):
    before = snapshot(app)
    for surface in surfaces:
        assert_refused(surface, surface.send(surface.body(literal)))
    assert snapshot(app) == before


def test_a_surrogate_pair_is_text_like_any_other(admin, surfaces):
    bots = surfaces[-1]
    resp = bots.send(bots.body('"smile \\ud83d\\ude00"'))
    assert resp.status_code == 201 and resp.get_json()["name"] == "smile \U0001F600"


def test_nesting_within_the_bound_is_accepted(app, surfaces):
    hooks = next(s for s in surfaces if s.name == "hooks")
    deep = json.dumps({"q": "x", "extra": json.loads("[" * 60 + "]" * 60)})
    assert hooks.send(deep).status_code == 200


def test_a_body_that_is_not_json_is_a_415(app, surfaces):
    before = snapshot(app)
    for surface in surfaces:
        good = surface.body('"hello"')
        for content_type in ("text/plain", "multipart/form-data; boundary=x", "application/xml"):
            body = assert_refused(surface, surface.send(good, content_type), 415)
            assert "application/json" in json.dumps(body)
        assert_refused(surface, surface.send("name=x&q=y", "application/x-www-form-urlencoded"), 415)
    assert snapshot(app) == before


def test_json_without_a_json_content_type_is_read_as_json(surfaces):
    """No Content-Type at all, curl's -d default (a form type) with a JSON body, a +json type."""
    for surface in surfaces:
        for content_type in (None, "application/x-www-form-urlencoded", "application/vnd.api+json",
                             "application/json; charset=utf-8"):
            resp = surface.send(surface.body('"hello"'), content_type)
            assert resp.status_code in (200, 201), (surface.name, content_type, resp.get_data(as_text=True))


# ------------------------------------------------------------ rate limits


@pytest.mark.parametrize("limits", [{"*": 0}, {"chat": -1}, {"*": 1.5}, {"*": "ten"}, {"*": None}])
def test_rate_limits_below_one_or_not_integers_are_refused(admin, app, limits):
    before = snapshot(app)
    resp = admin.post("/api/v1/keys", json={"name": "k", "rate_limits": limits})
    assert resp.status_code == 400 and "rate_limits" in resp.get_json()["message"], resp.get_json()
    key_id = admin.post("/api/v1/keys", json={"name": "ok", "rate_limits": {"*": 5}}).get_json()["id"]
    after_create = snapshot(app)
    resp = admin.patch(f"/api/v1/keys/{key_id}", json={"rate_limits": limits})
    assert resp.status_code == 400
    assert snapshot(app) == after_create != before


def test_a_zero_limit_in_a_plan_refuses_requests_with_a_429(database_url, tmp_path):
    from .conftest import make_app

    app = make_app(database_url, tmp_path, RATE_LIMIT_PLANS={"default": {}, "closed": {"*": 0}})
    key = create_key(app, kind="client", name="closed", plan="closed")
    try:
        resp = Api(app.test_client(), key).get("/v1/models")
        assert resp.status_code == 429, resp.get_data(as_text=True)
        assert resp.get_json()["error"]["type"] == "rate_limit_error"
        assert int(resp.headers["Retry-After"]) >= 1
    finally:
        if not db.is_closed():
            db.close()


# ------------------------------------------------------------ ids


BAD_IDS = ["abc\r\nX-Injected: 1", "abc\n", "a\x00b", "tab\there", "with space", "é" * 3, "x" * 65]


def _rows(app):
    with app.app_context(), db.connection_context():
        return Conversation.select().count(), Message.select().count(), EndUser.select().count()


@pytest.mark.parametrize("bad", BAD_IDS)
def test_chat_api_conversation_id_with_control_characters_is_refused(app, admin, surfaces, bad):
    chat = next(s for s in surfaces if s.name == "chat_api")
    before = _rows(app)
    body = json.loads(chat.body('"hello"'))
    body["conversationId"] = bad
    resp = chat.send(json.dumps(body))
    message = assert_refused(chat, resp)["message"]
    assert "conversationId" in message or "NUL" in message
    assert _rows(app) == before


@pytest.mark.parametrize("bad", BAD_IDS[:4])
def test_channel_conversation_id_with_control_characters_is_refused(app, surfaces, bad):
    channel = next(s for s in surfaces if s.name == "channel")
    before = _rows(app)
    resp = channel.send(json.dumps({"message": "hi", "conversationId": bad}))
    assert_refused(channel, resp)
    assert _rows(app) == before


@pytest.mark.parametrize("bad", ["line\nbreak", "cr\rhere", "nul\x00", "bell\x07", "x" * 201])
def test_end_user_labels_with_control_characters_are_refused(app, admin, surfaces, bad):
    by_name = {s.name: s for s in surfaces}
    bot_id = json.loads(by_name["chat_api"].body('"x"'))["chatbotId"]
    before = _rows(app)
    openai, flows = by_name["openai"], by_name["flows"]
    assert_refused(openai, openai.send(json.dumps(
        {"model": "echo/echo", "user": bad, "messages": [{"role": "user", "content": "hi"}]})))
    assert_refused(flows, flows.send(json.dumps({"userId": bad, "flow": {"inputs": {"q": "x"}}})))
    for path, body in [("/api/v1/conversations", {"bot_id": bot_id, "end_user_id": bad}),
                       ("/api/v1/users", {"external_id": bad})]:
        resp = admin.post(path, json=body)
        assert resp.status_code == 400, (path, resp.get_data(as_text=True))
        assert chatport_shape(resp.get_json(), 400)
    assert _rows(app) == before


def test_printable_labels_and_ids_are_accepted(app, admin, surfaces):
    chat = next(s for s in surfaces if s.name == "chat_api")
    body = json.loads(chat.body('"hello"'))
    body["conversationId"] = "ticket-42_A.b~c"
    assert chat.send(json.dumps(body)).status_code == 200
    bot_id = body["chatbotId"]
    resp = admin.post("/api/v1/conversations", json={"bot_id": bot_id, "end_user_id": "Zoë Smith (VIP)"})
    assert resp.status_code == 201 and resp.get_json()["end_user_id"] == "Zoë Smith (VIP)"


# ------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    admin_key = "cp_hostile_input_admin_key_0000000000000000000"
    with chatport_server(tmp_path_factory.mktemp("hostile"), env={"CHATPORT_ADMIN_KEY": admin_key}) as base:
        yield base, {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}


def test_nested_arrays_against_a_real_server(server):
    base, headers = server
    for path, shape in [("/v1/chat/completions", openai_shape), ("/api/v1/chat", chat_api_shape),
                        ("/v1/generate", flows_shape), ("/api/v1/bots", chatport_shape)]:
        resp = requests.post(base + path, data=NESTED, headers=headers, timeout=10)
        assert resp.status_code == 400, (path, resp.text)
        assert shape(resp.json(), 400), (path, resp.text)
    assert requests.get(base + "/healthz", timeout=5).status_code == 200

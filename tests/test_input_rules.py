"""Rules every dialect applies alike to what clients send: timestamps, temperature."""
from datetime import datetime

import pytest

from app import clock
from app.storage.db import db

from .conftest import Api, create_key, make_app
from .servers import fake_upstream
from .test_mgmt_api import snapshot


def _chat(api, bot, content="hi", **kw):
    return api.post("/api/v1/chat", json={"chatbotId": bot, "messages": [{"role": "user", "content": content}], **kw})


def _echo_chatbot(api, name="T"):
    bot = api.post("/api/v1/create-chatbot", json={"chatbotName": name}).get_json()["chatbotId"]
    assert api.post("/api/v1/update-chatbot-settings", json={"chatbotId": bot, "model": "echo/echo"}).status_code == 200
    return bot


def test_times_with_an_offset_filter_as_their_utc_instant(app, admin):
    bot = _echo_chatbot(admin)
    try:
        for conv_id, when in (("early", datetime(2024, 1, 2, 7, 30)), ("late", datetime(2024, 1, 2, 8, 30))):
            clock.freeze(when)
            assert _chat(admin, bot, conversationId=conv_id).status_code == 200
    finally:
        clock.freeze(None)

    def ids(**query):
        resp = admin.get("/api/v1/get-conversations", query_string={"chatbotId": bot, **query})
        assert resp.status_code == 200, resp.get_json()
        return sorted(c["id"] for c in resp.get_json()["data"])

    assert ids(startDate="2024-01-02T10:00+02:00") == ["late"]  # 08:00Z
    assert ids(endDate="2024-01-02T10:00+02:00") == ["early"]
    assert ids(startDate="2024-01-02T03:00-05:00") == ["late"]  # 08:00Z too
    assert ids(startDate="2024-01-02T08:00:00Z") == ["late"]
    assert ids(startDate="2024-01-02T08:00:00") == ["late"]  # no offset: UTC
    assert ids(startDate="2024-01-02", endDate="2024-01-02") == ["early", "late"]  # a whole day

    usage = admin.get("/api/v1/analytics/usage", query_string={
        "start": "2024-01-02T10:00+02:00", "end": "2024-01-02T11:00+02:00"}).get_json()
    assert usage["start"] == "2024-01-02T08:00:00.000Z" and usage["end"] == "2024-01-02T09:00:00.000Z"
    assert usage["totals"]["calls"] == 1  # the chat call at 08:30Z


def test_a_bad_time_is_a_400_in_each_dialects_shape(admin):
    bot = _echo_chatbot(admin)
    chat = admin.get("/api/v1/get-conversations", query_string={"chatbotId": bot, "startDate": "10:00 tomorrow"})
    usage = admin.get("/api/v1/analytics/usage", query_string={"start": "10:00 tomorrow"})
    assert chat.status_code == usage.status_code == 400
    assert chat.get_json() == {"message": "startDate must be a date (YYYY-MM-DD) or an ISO 8601 time"}
    assert usage.get_json()["message"] == "start must be a date (YYYY-MM-DD) or an ISO 8601 time"
    assert usage.get_json()["errors"] == {"start": "invalid"}


@pytest.fixture
def openai_app(database_url, tmp_path):
    """An app whose ``openai/gpt-test`` is a fake OpenAI server (to see what reaches it)."""
    with fake_upstream() as fake:
        application = make_app(database_url, tmp_path, OPENAI_BASE_URL=fake.base_url,
                               OPENAI_API_KEY="sk-upstream", OPENAI_MODELS=["gpt-test"])
        application.fake = fake
        yield application
        if not db.is_closed():
            db.close()


def test_chat_api_without_temperature_uses_the_bots(openai_app):
    api = Api(openai_app.test_client(), create_key(openai_app, kind="admin"))
    bot = api.post("/api/v1/create-chatbot", json={"chatbotName": "Warm"}).get_json()["chatbotId"]
    assert api.post("/api/v1/update-chatbot-settings", json={
        "chatbotId": bot, "model": "openai/gpt-test", "temperature": 0.7}).status_code == 200
    assert _chat(api, bot).status_code == 200
    assert openai_app.fake.last.body["temperature"] == 0.7
    assert _chat(api, bot, temperature=0.2).status_code == 200  # the client's, when it sends one
    assert openai_app.fake.last.body["temperature"] == 0.2
    assert _chat(api, bot, temperature=1.5).status_code == 200  # the same range as every dialect
    assert openai_app.fake.last.body["temperature"] == 1.5


RULE = "must be a number between 0 and 2"


@pytest.mark.parametrize("bad", [2.5, -0.1, "warm", True])
def test_every_dialect_refuses_the_same_temperatures_alike(app, admin, bad):
    bot = _echo_chatbot(admin)
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot}).get_json()["id"]
    before = snapshot(app)
    step = {"prompt": "hi", "model": "echo/echo", "options": {"temperature": bad}}
    chatport = [
        admin.post("/api/v1/bots", json={"name": "b", "temperature": bad}),
        admin.patch(f"/api/v1/bots/{bot}", json={"temperature": bad}),
        admin.post(f"/api/v1/conversations/{conv}/messages", json={"content": "hi", "temperature": bad}),
        admin.post("/api/v1/automations", json={"name": "a", "steps": [step]}),
    ]
    for resp in chatport:
        assert resp.status_code == 400, resp.get_json()
        body = resp.get_json()
        assert body["error"] == "bad_request" and RULE in body["message"], body
        assert any(v == RULE for v in body["errors"].values()), body
    chat_api = [_chat(admin, bot, temperature=bad),
                admin.post("/api/v1/update-chatbot-settings", json={"chatbotId": bot, "temperature": bad})]
    for resp in chat_api:
        assert resp.status_code == 400 and set(resp.get_json()) == {"message"}
        assert RULE in resp.get_json()["message"]
    openai = admin.post("/v1/chat/completions", json={
        "model": "echo/echo", "temperature": bad, "messages": [{"role": "user", "content": "hi"}]})
    assert openai.status_code == 400 and RULE in openai.get_json()["error"]["message"]
    assert openai.get_json()["error"]["param"] == "temperature"
    assert snapshot(app) == before

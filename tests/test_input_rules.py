"""Rules every dialect applies alike to what clients send: timestamps, temperature."""
from datetime import datetime

from app import clock


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

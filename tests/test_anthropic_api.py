"""Anthropic's Messages API (``/v1/messages``): the translation of its requests into the
engine's canonical messages and options, its replies and stream events, its errors, through the
Flask client on echo (tests/test_anthropic_sdk.py drives the real anthropic SDK)."""
import base64
import json

import pytest

from app.api.anthropic_messages import canonical_messages, canonical_tools, request_options, stop_reason, usage_body
from app.errors import BadRequest, ProviderUnavailable
from app.providers.llm import Model, Usage
from app.storage.db import db

from .conftest import Api, create_key

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 24).decode()
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}}


@pytest.fixture
def anthropic(client, admin_key):
    """The Messages API as the anthropic SDK calls it: ``x-api-key`` and ``anthropic-version``."""
    return Api(client, headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01"})


def _create(api, messages, status=200, **fields):
    body = {"model": "echo/echo", "max_tokens": 200, "messages": messages, **fields}
    resp = api.post("/v1/messages", json=body)
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def _user(content):
    return [{"role": "user", "content": content}]


def _error(api, body, status=400, kind="invalid_request_error", path="/v1/messages"):
    resp = api.post(path, json=body)
    assert resp.status_code == status, resp.get_data(as_text=True)
    data = resp.get_json()
    assert data["type"] == "error" and data["error"]["type"] == kind, data
    assert data["request_id"].startswith("req_") and resp.headers["request-id"] == data["request_id"]
    return data["error"]["message"]


def _events(resp):
    """``[(event, data)]`` of a streamed body; ``event:`` lines name each ``data:``'s type."""
    out, event = [], None
    for line in resp.get_data(as_text=True).splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["type"] == event
            out.append((event, data))
    return out


# ---------------------------------------------------------------- translation (no app)


def _translate(**body):
    data = {"model": "m", "max_tokens": 10, "stream": False, **body}
    return canonical_messages(data), request_options(data)


def test_system_string_and_text_blocks_become_a_system_message():
    messages, _ = _translate(system="Be brief.", messages=_user("hi"))
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    messages, _ = _translate(system=[{"type": "text", "text": "A.", "cache_control": {"type": "ephemeral"}},
                                     {"type": "text", "text": "B."}], messages=_user("hi"))
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}]}
    with pytest.raises(BadRequest) as exc:
        _translate(system=[{"type": "image", "source": {}}], messages=_user("hi"))
    assert "system.0" in exc.value.fields


def test_plain_text_request_stays_a_text_turn():
    """A text call carries only the plain options: the engine's text fast path."""
    messages, options = _translate(messages=_user([{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]),
                                   temperature=0.5, stop_sequences=["END"], metadata={"user_id": "u-1"})
    assert messages == [{"role": "user", "content": "hi"}]  # one text block: its string
    assert options == {"max_tokens": 10, "stream": False, "temperature": 0.5, "stop": ["END"], "user": "u-1"}


def test_blocks_become_parts():
    messages, _ = _translate(messages=_user([
        {"type": "text", "text": "Look:"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Refunds: 14 days."}},
        {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf",
                                                          "data": "JVBERi0="}}]))
    assert messages[0]["content"] == [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "Refunds: 14 days."},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]


def test_tool_use_and_tool_results_become_tool_calls_and_tool_messages():
    messages, _ = _translate(messages=[
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "...", "signature": "x"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no clock"},
                         {"type": "image", "source": {"type": "url", "url": "https://example.com/c.png"}}]},
            {"type": "text", "text": "thanks"}]}])
    assert messages[1] == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    assert messages[3] == {"role": "tool", "tool_call_id": "toolu_2", "content": [
        {"type": "text", "text": "Error: "}, {"type": "text", "text": "no clock"}]}
    # the rest of the user message (a tool result's image first) follows the tool messages
    assert messages[4] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/c.png"}}, {"type": "text", "text": "thanks"}]}
    assert len(messages) == 5


def test_assistant_with_only_tool_use_has_null_content():
    messages, _ = _translate(messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}])
    assert messages[1]["content"] is None and messages[2] == {"role": "tool", "tool_call_id": "t1", "content": ""}


@pytest.mark.parametrize("choice, expected", [
    (None, (None, None)),
    ({"type": "auto"}, (None, None)),  # the default
    ({"type": "auto", "disable_parallel_tool_use": True}, (None, False)),
    ({"type": "any"}, ("required", None)),
    ({"type": "tool", "name": "get_time"}, ({"type": "function", "function": {"name": "get_time"}}, None)),
    ({"type": "none"}, ("none", None)),
])
def test_tools_and_tool_choice(choice, expected):
    tools, tool_choice, parallel = canonical_tools({"tools": [WEATHER, TIME], "tool_choice": choice})
    assert tools[0] == {"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["input_schema"], "description": "The weather in a city"}}
    assert (tool_choice, parallel) == expected


def test_options_beyond_text():
    _, options = _translate(messages=_user("x"), tools=[WEATHER], tool_choice={"type": "any"}, top_p=0.9, top_k=40,
                            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}},
                                           "effort": "low"},
                            thinking={"type": "disabled"}, service_tier="auto", vllm_thing=1)
    assert options["tool_choice"] == "required" and options["top_p"] == 0.9
    assert options["passthrough"] == {"top_k": 40, "vllm_thing": 1}  # service_tier is ignored
    assert options["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "output", "schema": {"type": "object"}, "strict": True}}
    assert options["reasoning_effort"] == "low"


def test_usage_counts_cache_reads_apart():
    assert usage_body(Usage(10, 3)) == {"input_tokens": 10, "output_tokens": 3}
    assert usage_body(Usage(100, 3, cached_tokens=80)) == {"input_tokens": 20, "output_tokens": 3,
                                                           "cache_read_input_tokens": 80}


@pytest.mark.parametrize("finish, called, expected", [
    ("stop", False, "end_turn"), ("length", False, "max_tokens"), ("tool_calls", True, "tool_use"),
    ("stop", True, "tool_use"),  # a server that ends its tool calls with "stop"
    ("content_filter", False, "refusal"), ("stopped", False, "max_tokens"),
])
def test_stop_reasons(finish, called, expected):
    assert stop_reason(finish, called) == expected


# ---------------------------------------------------------------- replies


def test_text_reply(anthropic, app):
    resp = anthropic.post("/v1/messages", headers={"anthropic-beta": "tools-2024-04-04"},
                          json={"model": "echo/echo", "max_tokens": 100, "messages": _user("hi you")})
    assert resp.status_code == 200 and resp.headers["request-id"].startswith("req_")
    body = resp.get_json()
    assert list(body) == ["id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"]
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "echo/echo" and body["content"] == [{"type": "text", "text": "Echo: hi you"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"]["output_tokens"] == 3 and body["usage"]["input_tokens"] > 0
    from app.storage.models import Message
    from app.storage.models import Usage as UsageRow  # not the provider's Usage

    with app.app_context(), db.connection_context():
        row = UsageRow.select().where(UsageRow.dialect == "anthropic").get()
        assert row.category == "conversation" and row.model == "echo/echo" and row.completion_tokens == 3
        assert Message.select().count() == 0  # stateless


def test_bearer_works_and_x_api_key_is_this_dialects_only(client, admin_key):
    bearer = Api(client, admin_key)  # the SDK's auth_token
    assert _create(bearer, _user("hi"))["content"][0]["text"] == "Echo: hi"
    other = client.post("/v1/chat/completions", headers={"x-api-key": admin_key},
                        json={"model": "echo/echo", "messages": _user("hi")})
    assert other.status_code == 401 and other.get_json()["error"]["type"] == "authentication_error"


def test_max_tokens_stops_the_answer(anthropic):
    body = _create(anthropic, _user("one two three four five"), max_tokens=2)
    assert body["content"][0]["text"] == "Echo: one" and body["stop_reason"] == "max_tokens"


def test_stop_sequences(anthropic):
    body = _create(anthropic, _user("alpha beta END gamma"), stop_sequences=["END"])
    assert body["content"][0]["text"] == "Echo: alpha beta " and body["stop_reason"] == "end_turn"


def test_images_and_documents_reach_the_model(anthropic):
    body = _create(anthropic, _user([
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "document", "title": "terms.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]))
    text = body["content"][0]["text"]
    assert "[image image/png, 32 bytes detail=auto]" in text and "[image https://example.com/a.jpg detail=auto]" in text
    assert "[file terms.pdf]" in text


def test_tool_use_round_trip(anthropic):
    asked = _user('Weather? [echo call=get_weather {"city": "Paris"}]')
    body = _create(anthropic, asked, tools=[WEATHER])
    assert body["stop_reason"] == "tool_use"
    [call] = body["content"]
    assert call["type"] == "tool_use" and call["name"] == "get_weather" and call["input"] == {"city": "Paris"}
    history = asked + [{"role": "assistant", "content": body["content"]},
                       {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                                     "content": [{"type": "text", "text": "sunny, 21C"}]}]}]
    answer = _create(anthropic, history, tools=[WEATHER])
    assert answer["content"] == [{"type": "text", "text": "Echo: get_weather returned sunny, 21C"}]
    assert answer["stop_reason"] == "end_turn"
    history[-1]["content"][0]["is_error"] = True
    failed = _create(anthropic, history, tools=[WEATHER])
    assert failed["content"][0]["text"] == "Echo: get_weather returned Error: sunny, 21C"


def test_tool_choice_forms(anthropic):
    tools = [WEATHER, TIME]
    forced = _create(anthropic, _user("hi"), tools=tools, tool_choice={"type": "any"})
    assert [b["name"] for b in forced["content"]] == ["get_weather"]
    named = _create(anthropic, _user("hi"), tools=tools, tool_choice={"type": "tool", "name": "get_time"})
    assert [b["name"] for b in named["content"]] == ["get_time"] and named["content"][0]["input"] == {"zone": ""}
    both = _user('[echo call=get_weather {"city": "A"}] [echo call=get_time {"zone": "B"}]')
    assert len(_create(anthropic, both, tools=tools)["content"]) == 2
    one = _create(anthropic, both, tools=tools, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert [b["name"] for b in one["content"]] == ["get_weather"]
    none = _create(anthropic, both, tools=tools, tool_choice={"type": "none"})
    assert none["content"][0]["type"] == "text" and none["stop_reason"] == "end_turn"


def test_output_config_format(anthropic):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}}}
    body = _create(anthropic, _user("hi"), output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(body["content"][0]["text"]) == {"answer": "Echo: hi", "n": 0}


def test_bot_model_and_bot_scoped_keys(anthropic, admin, app, client):
    bot = admin.post("/api/v1/bots", json={"name": "Pirate", "instructions": "Talk like a pirate."}).get_json()
    assert _create(anthropic, _user("ahoy"), model=f"bot/{bot['id']}")["content"][0]["text"] == "Echo: ahoy"
    assert _create(anthropic, _user("x"), model="bot/Pirate", system="ignored")["model"] == "bot/Pirate"
    scoped = Api(client, headers={"x-api-key": create_key(app, kind="client", bot_ids=[bot["id"]])})
    assert _create(scoped, _user("x"), model="bot/Pirate")["content"][0]["text"] == "Echo: x"
    message = _error(scoped, {"model": "echo/echo", "max_tokens": 5, "messages": _user("x")}, 403, "permission_error")
    assert "bot" in message
    _error(anthropic, {"model": "bot/missing", "max_tokens": 5, "messages": _user("x")}, 404, "not_found_error")


# ---------------------------------------------------------------- streams


def _stream(api, messages, **fields):
    resp = api.post("/v1/messages", json={"model": "echo/echo", "max_tokens": 200, "stream": True,
                                          "messages": messages, **fields})
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    return _events(resp)


def test_text_stream_events(anthropic):
    events = _stream(anthropic, _user("hello big world"))
    assert [e for e, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                      "content_block_delta", "content_block_delta", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert start["model"] == "echo/echo" and start["usage"]["input_tokens"] > 0
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta") == "Echo: hello big world"
    assert all(d["delta"]["type"] == "text_delta" and d["index"] == 0 for e, d in events if e == "content_block_delta")
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4 and delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]


def test_tool_use_stream_events(anthropic):
    events = _stream(anthropic, _user('[echo call=get_weather {"city": "Paris"}] [echo call=get_time]'),
                     tools=[WEATHER, TIME])
    starts = [d for e, d in events if e == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"], s["content_block"]["name"]) for s in starts] == [
        (0, "tool_use", "get_weather"), (1, "tool_use", "get_time")]
    assert starts[0]["content_block"]["input"] == {} and starts[0]["content_block"]["id"]
    for index in (0, 1):
        parts = [d["delta"]["partial_json"] for e, d in events if e == "content_block_delta" and d["index"] == index]
        assert all(d["delta"]["type"] == "input_json_delta" for e, d in events if e == "content_block_delta")
        assert json.loads("".join(parts)) == ({"city": "Paris"} if index == 0 else {"zone": ""})
    assert [d["index"] for e, d in events if e == "content_block_stop"] == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-1][0] == "message_stop"


class _Broken(Model):
    """Says one word, then its upstream fails."""

    provider, model_id = "test", "broken"

    def stream(self, request):
        yield "Hel"
        raise ProviderUnavailable("upstream went away")


def test_failure_mid_stream_is_an_error_event(anthropic, app):
    from app.providers.llm import registry

    with app.app_context():
        registry().models["test/broken"] = _Broken()
    events = _stream(anthropic, _user("hi"), model="test/broken")
    assert [e for e, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    assert events[-1][1]["error"] == {"type": "api_error", "message": "upstream went away"}
    # not streamed: the same failure is the HTTP error
    assert _error(anthropic, {"model": "test/broken", "max_tokens": 5, "messages": _user("hi")}, 502,
                  "api_error") == "upstream went away"


# ---------------------------------------------------------------- errors


def test_authentication_errors(client):
    body = {"model": "echo/echo", "max_tokens": 5, "messages": _user("x")}
    assert "x-api-key" in _error(Api(client), body, 401, "authentication_error")
    _error(Api(client, headers={"x-api-key": "cp_wrong"}), body, 401, "authentication_error")
    _error(Api(client, "cp_wrong"), body, 401, "authentication_error")
    _error(Api(client), body, 401, "authentication_error", path="/v1/messages/count_tokens")


@pytest.mark.parametrize("fields, words", [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role"),
    ({"messages": _user("x") + [{"role": "assistant", "content": "prefill"}]}, "last message"),
    ({"messages": _user([{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}])}, "toolu_nope"),
    ({"messages": _user([{"type": "image", "source": {"type": "file", "file_id": "f1"}}])}, "source"),
    ({"messages": _user([{"type": "image", "source": {"type": "base64", "media_type": "image/tiff",
                                                      "data": PNG}}])}, "media_type"),
    ({"messages": _user([{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": "not base64!"}}])}, "base64"),
    ({"messages": _user([{"type": "image", "source": {"type": "url", "url": "ftp://example.com/a.png"}}])},
     "http"),
    ({"messages": _user([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}])}, "url"),
    ({"messages": _user([{"type": "search_result", "source": "x"}])}, "search_result"),
    ({"messages": _user("x"), "top_k": 5}, "top_k"),  # passed through: echo cannot take it
    ({"messages": _user("x"), "guided_json": {}}, "guided_json"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search"),
    ({"tools": [{"name": "f"}]}, "input_schema"),
    ({"tools": [WEATHER, WEATHER]}, "unique"),
    ({"tool_choice": {"type": "any"}}, "needs tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    ({"temperature": 3}, "temperature"),
    ({"output_config": {"effort": "max"}}, "effort"),
])
def test_bad_requests_are_invalid_request_errors(anthropic, fields, words):
    body = {"model": "echo/echo", "max_tokens": 100, "messages": _user("hi"), **fields}
    body = {k: v for k, v in body.items() if v is not None}
    assert words in _error(anthropic, body)


def test_a_bad_block_is_named_by_its_place_in_the_request(anthropic):
    """Not by its place among the translated messages (the system message, split tool results)."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}
    message = _error(anthropic, {"model": "echo/echo", "max_tokens": 10, "system": "s",
                                 "messages": _user("a") + [{"role": "assistant", "content": "b"}] + _user([image])})
    assert message.startswith("messages.2.content.0.source.data ")


def test_unknown_model_is_not_found(anthropic):
    message = _error(anthropic, {"model": "nope/nope", "max_tokens": 5, "messages": _user("x")}, 404, "not_found_error")
    assert "echo/echo" in message


def test_routes_outside_the_api_answer_in_its_shape(anthropic):
    resp = anthropic.get("/v1/messages")
    assert resp.status_code == 405 and resp.get_json()["error"]["type"] == "invalid_request_error"
    resp = anthropic.post("/v1/messages/batches/x")
    assert resp.status_code == 404 and resp.get_json()["error"]["type"] == "not_found_error"
    resp = anthropic.post("/v1/messages", data="not json", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415 and resp.get_json()["type"] == "error"


def test_too_large_is_request_too_large(configured):
    app, admin = configured(MODEL_MAX_CONTENT_LENGTH=2000)
    api = Api(app.test_client(), headers={"x-api-key": admin.key})
    _error(api, {"model": "echo/echo", "max_tokens": 5, "messages": _user("x" * 5000)}, 413, "request_too_large")


# ---------------------------------------------------------------- count_tokens


def _count(api, status=200, **body):
    resp = api.post("/v1/messages/count_tokens", json={"model": "echo/echo", **body})
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()["input_tokens"]


def test_count_tokens(anthropic, admin):
    small = _count(anthropic, messages=_user("hello"))
    assert small == 2
    assert _count(anthropic, messages=_user("hello"), system="You are a very careful assistant.") > small
    assert _count(anthropic, messages=_user("hello"), tools=[WEATHER]) > small + 10
    image = _user([{"type": "text", "text": "hello"},
                   {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}])
    assert _count(anthropic, messages=image) == small + 85
    bot = admin.post("/api/v1/bots", json={"name": "Counted", "instructions": "x" * 400}).get_json()
    assert _count(anthropic, model=f"bot/{bot['id']}", messages=_user("hello"), system="dropped") == small + 100
    _error(anthropic, {"model": "nope/nope", "messages": _user("x")}, 404, "not_found_error",
           path="/v1/messages/count_tokens")
    _error(anthropic, {"model": "echo/echo", "messages": _user([{"type": "tool_result", "tool_use_id": "x"}])},
           path="/v1/messages/count_tokens")

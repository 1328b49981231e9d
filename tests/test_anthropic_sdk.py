"""Anthropic's Messages API through the official anthropic SDK, against a real ``chatport serve``
(gunicorn + gevent): text, tools round trip, streams and their events, errors as the SDK's
exception classes, count_tokens, bots; an OpenAI-compatible upstream behind it."""
import base64

import anthropic
import pytest
import requests

from .servers import chatport_server, sse_events, upstream_env

ADMIN = "cp_test_admin_key_for_the_anthropic_api_tests_00"
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    env = upstream_env(upstream, ADMIN, OPENAI_MAX_RETRIES=0, OPENAI_READ_TIMEOUT=5, SSE_HEARTBEAT=0.2)
    with chatport_server(tmp_path_factory.mktemp("anthropic"), workers=1, env=env) as base:
        yield base


@pytest.fixture
def client(server):
    return anthropic.Anthropic(base_url=server, api_key=ADMIN, max_retries=0)


def _user(content):
    return [{"role": "user", "content": content}]


def test_text(client):
    message = client.messages.create(model="echo/echo", max_tokens=100, messages=_user("Hello Claude"))
    assert message.content[0].type == "text" and message.content[0].text == "Echo: Hello Claude"
    assert message.id.startswith("msg_") and message.role == "assistant" and message.model == "echo/echo"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    assert message._request_id.startswith("req_")


def test_bearer_token_client(server):
    client = anthropic.Anthropic(base_url=server, auth_token=ADMIN, max_retries=0)
    message = client.messages.create(model="echo/echo", max_tokens=100, messages=_user("hi"))
    assert message.content[0].text == "Echo: hi"


def test_tools_round_trip(client):
    messages = _user('What is the weather in Paris? [echo call=get_weather {"city": "Paris"}]')
    first = client.messages.create(model="echo/echo", max_tokens=100, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"} and call.id
    messages += [{"role": "assistant", "content": first.content},  # the SDK's blocks, sent back as they are
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    second = client.messages.create(model="echo/echo", max_tokens=100, tools=[WEATHER], messages=messages)
    assert second.content[0].text == "Echo: get_weather returned sunny" and second.stop_reason == "end_turn"


def test_image(client):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()
    message = client.messages.create(model="echo/echo", max_tokens=100, messages=_user([
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "text", "text": "What is this?"}]))
    assert message.content[0].text == "Echo: What is this? [image image/png, 16 bytes detail=auto]"


def test_stream_text(client):
    with client.messages.stream(model="echo/echo", max_tokens=100, messages=_user("[echo tokens=5]")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "t1 t2 t3 t4 t5"
    assert final.content[0].text == text and final.stop_reason == "end_turn" and final.usage.output_tokens == 5


def test_stream_event_types_in_order(client):
    with client.messages.stream(model="echo/echo", max_tokens=100, messages=_user("one two")) as stream:
        kinds = [event.type for event in stream]
    # the SDK adds its own "text" events after each text delta
    assert [k for k in kinds if k != "text"] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]


def test_stream_tool_use(client):
    with client.messages.stream(model="echo/echo", max_tokens=100, tools=[WEATHER],
                                messages=_user('[echo call=get_weather {"city": "Oslo"}]')) as stream:
        deltas = [e.delta.partial_json for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert len(deltas) == 2 and "".join(deltas) == '{"city":"Oslo"}'
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Oslo"}


def test_raw_stream_pings(server):
    """A ``ping`` follows ``message_start``, and heartbeats are pings while the model is silent."""
    resp = requests.post(server + "/v1/messages", stream=True, timeout=30,
                         headers={"x-api-key": ADMIN, "anthropic-version": "2023-06-01"},
                         json={"model": "echo/echo", "max_tokens": 50, "stream": True,
                               "messages": _user("[echo tokens=3 delay=0.45]")})
    assert resp.headers["content-type"].startswith("text/event-stream") and resp.headers["request-id"]
    events = list(sse_events(resp))
    kinds = [e for e, _ in events]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-1] == "message_stop"
    first, last = kinds.index("content_block_delta"), len(kinds) - 1 - kinds[::-1].index("content_block_delta")
    assert "ping" in kinds[first:last]  # a heartbeat during the silence between two deltas
    assert all(data["type"] == event for event, data in events)


def test_errors_are_the_sdks_exceptions(client, server):
    bad = anthropic.Anthropic(base_url=server, api_key="cp_wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as exc:
        bad.messages.create(model="echo/echo", max_tokens=10, messages=_user("x"))
    assert exc.value.body["error"]["type"] == "authentication_error" and exc.value.request_id.startswith("req_")
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model="echo/echo", max_tokens=10, messages=_user("x"), top_k=5)
    assert exc.value.body["error"]["type"] == "invalid_request_error" and "top_k" in exc.value.message
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="echo/echo", max_tokens=10, messages=_user([
            {"type": "tool_result", "tool_use_id": "toolu_unknown", "content": "x"}]))
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="claude-nope", max_tokens=10, messages=_user("x"))
    assert exc.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError):
        with bad.messages.stream(model="echo/echo", max_tokens=10, messages=_user("x")) as stream:
            list(stream)


def test_count_tokens(client):
    small = client.messages.count_tokens(model="echo/echo", messages=_user("hello there"))
    assert small.input_tokens == 3
    more = client.messages.count_tokens(model="echo/echo", system="Answer in French.", tools=[WEATHER],
                                        messages=_user("hello there"))
    assert more.input_tokens > small.input_tokens + 10


def test_bot_model(client, server):
    bot = requests.post(server + "/api/v1/bots", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10,
                        json={"name": "Claudius", "instructions": "Talk like a pirate."}).json()
    message = client.messages.create(model=f"bot/{bot['id']}", max_tokens=50, messages=_user("ahoy"))
    assert message.content[0].text == "Echo: ahoy" and message.model == f"bot/{bot['id']}"
    assert client.messages.create(model="bot/Claudius", max_tokens=50, messages=_user("x")).content[0].text == "Echo: x"


def test_options_reach_an_openai_upstream(client, upstream):
    upstream.script(text="from upstream")
    message = client.messages.create(
        model="openai/gpt-test", system="Be brief.", max_tokens=50, temperature=0.3, stop_sequences=["END"],
        metadata={"user_id": "u-7"}, messages=_user("q"))
    assert message.content[0].text == "from upstream"
    sent = upstream.last.body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.3 and sent["stop"] == ["END"]
    assert sent["user"] == "u-7"
    upstream.script_once(status=429, retry_after="7")
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model="openai/gpt-test", max_tokens=10, messages=_user("x"))
    assert exc.value.body["error"]["type"] == "rate_limit_error"


def test_upstream_cut_midway_is_an_error_event(client, upstream):
    upstream.script_once(text="one two three four five", break_after=2)
    text = ""
    with pytest.raises(anthropic.APIStatusError) as exc:
        with client.messages.stream(model="openai/gpt-test", max_tokens=50, messages=_user("x")) as stream:
            for piece in stream.text_stream:
                text += piece
    assert text.startswith("one") and exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "api_error"

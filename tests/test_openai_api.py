"""The OpenAI-compatible API through the official openai SDK, against a real chatport server."""
import base64
import json
import math
import threading
import time

import openai
import pytest
import requests

from .servers import chatport_server, sse_events, upstream_env

ADMIN = "cp_test_admin_key_for_the_openai_api_tests_0000"


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    env = upstream_env(upstream, ADMIN, OPENAI_READ_TIMEOUT=2, OPENAI_MAX_RETRIES=0, STOP_POLL_INTERVAL=0.1)
    with chatport_server(tmp_path_factory.mktemp("openai"), workers=2, env=env) as base:
        yield base


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=ADMIN, max_retries=0)


H = {"Authorization": f"Bearer {ADMIN}"}


def test_non_streaming(client):
    resp = client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "hi you"}])
    assert resp.choices[0].message.content == "Echo: hi you"
    assert resp.choices[0].finish_reason == "stop" and resp.object == "chat.completion"
    assert resp.usage.completion_tokens == 3 and resp.usage.total_tokens > 3


def test_body_keys_keep_openais_order(server):
    resp = requests.post(server + "/v1/chat/completions", headers=H, timeout=10,
                         json={"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]})
    assert list(resp.json()) == ["id", "object", "created", "model", "choices", "usage"]  # not sorted


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="echo/echo", messages=[{"role": "user", "content": "[echo tokens=6]"}],
        stream=True, stream_options={"include_usage": True})
    text, usage, finishes = "", None, []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finishes.append(choice.finish_reason)
    assert text == "t1 t2 t3 t4 t5 t6"
    assert finishes[-1] == "stop" and usage.completion_tokens == 6


def test_options_reach_upstream(client, upstream):
    upstream.script(text="from upstream")
    resp = client.chat.completions.create(
        model="openai/gpt-test", messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}],
        temperature=0.3, max_tokens=50, stop=["END"], user="u1")
    assert resp.choices[0].message.content == "from upstream"
    sent = upstream.last.body
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 50 and sent["stop"] == ["END"]
    assert sent["messages"][0] == {"role": "system", "content": "sys"}


def test_bot_model(client, server):
    bot = requests.post(server + "/api/v1/bots", headers=H, json={
        "name": "Pirate", "instructions": "Talk like a pirate."}, timeout=10).json()
    resp = client.chat.completions.create(model=f"bot/{bot['id']}", messages=[{"role": "user", "content": "ahoy"}])
    assert resp.choices[0].message.content == "Echo: ahoy"
    ids = [m.id for m in client.models.list().data]
    assert f"bot/{bot['id']}" in ids and "echo/echo" in ids
    by_name = client.chat.completions.create(model="bot/Pirate", messages=[{"role": "user", "content": "x"}])
    assert by_name.choices[0].message.content == "Echo: x"


def test_errors_in_openai_shape(client, server):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="nope/nope", messages=[{"role": "user", "content": "x"}])
    assert "echo/echo" in exc.value.body["message"] and exc.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "x"}], n=99)
    assert exc.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"top_k": 3})
    assert exc.value.body["param"] == "top_k" and "echo/echo" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "x"}], temperature=3)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo/echo", messages=[])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="bot/missing", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=server + "/v1", api_key="cp_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "x"}])
    resp = requests.put(server + "/v1/chat/completions", headers=H, timeout=10)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"


def test_upstream_errors_mapped(client, upstream):
    upstream.script_once(status=429, retry_after="7")
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="openai/gpt-test", messages=[{"role": "user", "content": "x"}])
    assert exc.value.response.headers["retry-after"] == "7"
    upstream.script_once(status=500)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="openai/gpt-test", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 502
    upstream.script_once(hang=10)
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="openai/gpt-test", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 504


def test_stream_cut_midway_is_an_error_event(client, upstream):
    upstream.script_once(text="one two three four five", break_after=2)
    stream = client.chat.completions.create(model="openai/gpt-test", messages=[{"role": "user", "content": "x"}],
                                            stream=True)
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert text.startswith("one")



def test_client_disconnect_closes_upstream_and_saves_partial(server, upstream):
    bot = requests.post(server + "/api/v1/bots", headers=H, json={"name": "Up", "model": "openai/gpt-test"},
                        timeout=10).json()
    conv = requests.post(server + "/api/v1/conversations", headers=H, json={"bot_id": bot["id"]}, timeout=10).json()
    upstream.reset()
    upstream.script_once(text=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.05)
    resp = requests.post(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=H,
                         json={"content": "talk", "stream": True}, stream=True, timeout=10)
    got = []
    for event, data in sse_events(resp):
        got.append(event)
        if got.count("delta") == 3:
            break
    resp.close()  # the client goes away mid-stream
    upstream_request = upstream.last
    assert upstream_request.client_gone.wait(3), "upstream request was not closed"
    deadline = time.time() + 5
    while time.time() < deadline:
        msgs = requests.get(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=H, timeout=10).json()
        last = msgs["data"][-1]
        if last["role"] == "assistant":
            break
        time.sleep(0.1)
    assert last["status"] == "incomplete" and last["content"].startswith("w0 w1")
    assert len(last["content"].split()) < 200


def test_stop_from_another_request(server):
    bot = requests.post(server + "/api/v1/bots", headers=H, json={"name": "Slow"}, timeout=10).json()
    conv = requests.post(server + "/api/v1/conversations", headers=H, json={"bot_id": bot["id"]}, timeout=10).json()
    resp = requests.post(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=H,
                         json={"content": "[echo tokens=400 delay=0.02]", "stream": True}, stream=True, timeout=20)
    events = sse_events(resp)
    kind, start = next(events)
    assert kind == "start"
    stops = []
    for _ in range(4):  # several connections: with 2 workers some land on the other one
        r = requests.post(f"{server}/api/v1/conversations/{conv['id']}/messages/{start['message_id']}/stop",
                          headers=H, timeout=10)
        stops.append(r.status_code)
    assert stops == [202] * 4
    rest = list(events)
    kind, done = rest[-1]
    assert kind == "done" and done["status"] == "incomplete" and done["finish_reason"] == "stopped"
    deltas = [d for k, d in rest if k == "delta"]
    assert 0 < len(deltas) < 399
    msgs = requests.get(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=H, timeout=10).json()
    assert msgs["data"][-1]["status"] == "incomplete"


def test_many_concurrent_streams_one_worker(server):
    results = []

    def one():
        r = requests.post(server + "/v1/chat/completions", headers=H, timeout=30, stream=True, json={
            "model": "echo/echo", "stream": True, "messages": [{"role": "user", "content": "[echo tokens=20 delay=0.05]"}]})
        results.append(sum(1 for line in r.iter_lines() if line.startswith(b"data: {")))

    threads = [threading.Thread(target=one) for _ in range(50)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [22] * 50  # role chunk + 20 deltas + finish chunk, for each stream
    assert time.time() - start < 10  # 1 s streams in parallel, not 50 s in series


def test_chunk_frames_are_the_json_of_each_chunk():
    """Text deltas are rendered from a frame built once per stream: byte for byte what encoding
    each chunk whole gives, whatever the text holds; the last frames go out together."""
    from app.api.openai_format import chunk_stream
    from app.api.sse import sse
    from app.providers.llm import Usage
    from app.services.events import Delta, Done, Start

    texts = ["plain", 'quote " and \\ backslash', "new\nline", "é ü 中文 😀", "\x00text\x00", ""]
    events = [Start(None, None, "0193-ab", "echo/echo", 1700000000.5), *(Delta(t) for t in texts),
              Done("0193-ab", "".join(texts), Usage(3, 4), "stop", "complete")]
    frames = list(chunk_stream(iter(events), "bot/x", include_usage=True))
    base = {"id": "chatcmpl-0193ab", "object": "chat.completion.chunk", "created": 1700000000, "model": "bot/x"}
    assert frames[0] == sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                  "finish_reason": None}]})
    for frame, text in zip(frames[1:], texts):
        assert frame == sse({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
    last = frames[-1]
    assert len(frames) == len(texts) + 2 and last.endswith("data: [DONE]\n\n")
    finish, with_usage, done = last.split("\n\n")[:3]
    assert json.loads(finish[6:])["choices"][0]["finish_reason"] == "stop"
    assert json.loads(with_usage[6:])["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert done == "data: [DONE]"


# ---------------------------------------------------------------- beyond text, through the SDK

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = '[echo call=get_weather {"city": "Oslo"}]'


def test_sdk_tool_round_trip(client):
    first = client.chat.completions.create(model="echo/echo", tools=[WEATHER],
                                           messages=[{"role": "user", "content": ASK}])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    history = [{"role": "user", "content": ASK}, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = client.chat.completions.create(model="echo/echo", tools=[WEATHER], messages=history)
    assert second.choices[0].message.content == "Echo: get_weather returned sunny, 21 C"
    assert second.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as exc:  # a result for a call nobody made
        client.chat.completions.create(model="echo/echo", tools=[WEATHER], messages=[
            *history[:2], {"role": "tool", "tool_call_id": "call_nobody", "content": "x"}])
    assert exc.value.body["param"] == "messages.2.tool_call_id"


def test_sdk_streamed_tool_calls_reassemble(client):
    """The SDK's stream helper accumulates tool-call deltas: id and name from the first fragment,
    the arguments joined from the rest."""
    with client.chat.completions.stream(model="echo/echo", tools=[WEATHER], messages=[
            {"role": "user", "content": ASK + ' [echo call=get_weather {"city": "Bergen"}]'}]) as stream:
        argument_deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(argument_deltas) >= 4  # two calls, each in fragments
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id
    raw = client.chat.completions.create(model="echo/echo", tools=[WEATHER], stream=True,
                                         messages=[{"role": "user", "content": ASK}])
    fragments = [tc for chunk in raw for ch in chunk.choices for tc in ch.delta.tool_calls or ()]
    assert fragments[0].id and fragments[0].function.name == "get_weather"
    assert all(f.id is None and f.function.name is None for f in fragments[1:])
    assert json.loads("".join(f.function.arguments for f in fragments)) == {"city": "Oslo"}


def test_sdk_image_parts(client):
    png = base64.b64encode(b"\x89PNG fake bytes").decode()
    resp = client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}])
    assert resp.choices[0].message.content == (
        "Echo: What is in these? [image https://example.com/cat.jpg detail=high] [image image/png, 15 bytes detail=auto]")
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}}]}])
    assert exc.value.body["param"] == "messages.0.content.0.image_url.url"


def test_sdk_json_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "number"},
                                               "sunny": {"type": "boolean"}},
              "required": ["city", "temperature", "sunny"], "additionalProperties": False}
    resp = client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "Oslo"}],
                                          response_format={"type": "json_schema", "json_schema": {
                                              "name": "weather", "schema": schema, "strict": True}})
    answer = json.loads(resp.choices[0].message.content)
    assert set(answer) == set(schema["properties"])
    assert answer == {"city": "Echo: Oslo", "temperature": 0, "sunny": False}
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temperature: float

    parsed = client.chat.completions.parse(model="echo/echo", response_format=Weather,
                                           messages=[{"role": "user", "content": "Bergen"}])
    assert parsed.choices[0].message.parsed == Weather(city="Echo: Bergen", temperature=0)


def test_sdk_n_and_logprobs(client):
    resp = client.chat.completions.create(model="echo/echo", n=2, logprobs=True, top_logprobs=3,
                                          messages=[{"role": "user", "content": "one two three"}])
    assert [c.index for c in resp.choices] == [0, 1]
    assert all(c.message.content == "Echo: one two three" for c in resp.choices)
    content = resp.choices[1].logprobs.content
    assert "".join(t.token for t in content) == "Echo: one two three"
    assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token for t in content)
    assert content[1].logprob == -0.01 and bytes(content[1].bytes).decode() == content[1].token
    stream = client.chat.completions.create(model="echo/echo", n=2, stream=True, logprobs=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "a b"}])
    texts, tokens, usage = {0: "", 1: ""}, 0, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            tokens += len(choice.logprobs.content) if choice.logprobs else 0
    assert texts == {0: "Echo: a b", 1: "Echo: a b"} and tokens == 6 and usage.completion_tokens == 6


def test_sdk_embeddings_float_and_base64(client):
    floats = client.embeddings.create(model="echo/embed", input=["hello", "world"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and floats.model == "echo/embed"
    vector = floats.data[0].embedding
    assert len(vector) == 64 and math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-6)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 4
    decoded = client.embeddings.create(model="echo/embed", input=["hello", "world"])  # asks base64, decodes
    assert len(decoded.data[0].embedding) == 64
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(decoded.data[0].embedding, vector))
    raw = client.embeddings.create(model="echo/embed", input="hello", encoding_format="base64")
    assert isinstance(raw.data[0].embedding, str)
    assert len(base64.b64decode(raw.data[0].embedding)) == 64 * 4
    short = client.embeddings.create(model="echo/embed", input="hello", dimensions=16, encoding_format="float")
    assert len(short.data[0].embedding) == 16
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="echo/embed", input="hello", dimensions=65)
    assert exc.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="echo/embed", input="")
    assert exc.value.body["param"] == "input.0"


def test_sdk_completions(client):
    resp = client.completions.create(model="echo/echo", prompt="Once upon", max_tokens=50, logprobs=1)
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert resp.choices[0].text == "Echo: Once upon" and resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].logprobs.tokens == ["Echo:", " Once", " upon"]
    assert resp.choices[0].logprobs.text_offset == [0, 5, 10]
    text, finish, usage = "", None, None
    for chunk in client.completions.create(model="echo/echo", prompt="[echo tokens=4]", stream=True, echo=True,
                                           stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.text
            finish = choice.finish_reason or finish
    assert text == "[echo tokens=4]t1 t2 t3 t4" and finish == "stop" and usage.completion_tokens == 4
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="echo/echo", prompt="x", suffix="y")
    assert exc.value.body["param"] == "suffix"


def test_sdk_models_retrieve(client, server):
    model = client.models.retrieve("echo/echo")  # the SDK sends echo%2Fecho
    assert (model.id, model.object, model.owned_by) == ("echo/echo", "model", "echo")
    assert client.models.retrieve("echo/embed").model_extra["kind"] == "embedding"
    listed = {m.id: m for m in client.models.list().data}
    assert listed["echo/embed"].model_extra["kind"] == "embedding"
    bot = requests.post(server + "/api/v1/bots", headers=H, json={"name": "Retrieved"}, timeout=10).json()
    assert client.models.retrieve(f"bot/{bot['id']}").model_extra["name"] == "Retrieved"
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("echo/nope")
    assert exc.value.body["code"] == "model_not_found"

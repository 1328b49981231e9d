"""The OpenAI-compatible API through the official openai SDK, against a real chatport server."""
import json
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
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "x"}], n=2)
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

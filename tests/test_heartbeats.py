"""Heartbeats on a real ``chatport serve`` (gunicorn + gevent): while the provider is silent, every
SSE dialect sends ``: keep-alive`` comments, written between its own frames, never inside one."""
import json

import openai
import pytest
import requests

from .servers import chatport_server, upstream_env

ADMIN = "cp_test_admin_key_for_the_heartbeat_tests_0000"
H = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    env = upstream_env(upstream, ADMIN, SSE_HEARTBEAT=0.25)
    with chatport_server(tmp_path_factory.mktemp("heartbeats"), workers=1, env=env) as base:
        yield base


def _lines(resp):
    return [line for line in resp.iter_lines(decode_unicode=True)]


def test_openai_stream_keeps_alive_through_a_silence(server, upstream):
    upstream.script(chunks=["Hel", "lo"], chunk_delay=0.9)  # silent before each delta
    resp = requests.post(server + "/v1/chat/completions", headers=H, stream=True, timeout=30, json={
        "model": "openai/gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    lines = [line for line in _lines(resp) if line]
    beats = [i for i, line in enumerate(lines) if line == ": keep-alive"]
    assert len(beats) >= 2, lines
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    first = next(i for i, line in enumerate(lines) if '"Hel"' in line)
    second = next(i for i, line in enumerate(lines) if '"lo"' in line)
    assert any(first < i < second for i in beats)  # during the silence, between whole frames
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    assert lines[-1] == "data: [DONE]"


def test_sdk_client_reads_through_heartbeats(server, upstream):
    upstream.script(chunks=["a", "b", "c"], chunk_delay=0.4)
    client = openai.OpenAI(base_url=server + "/v1", api_key=ADMIN, max_retries=0)
    stream = client.chat.completions.create(model="openai/gpt-test", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "abc"


def test_chatport_sse_keeps_alive_before_the_first_token(server, upstream):
    bot = requests.post(server + "/api/v1/bots", headers=H, timeout=10,
                        json={"name": "slow", "model": "openai/gpt-test"}).json()
    conv = requests.post(server + "/api/v1/conversations", headers=H, timeout=10,
                         json={"bot_id": bot["id"]}).json()
    upstream.script(chunks=["Thought", " done"], chunk_delay=0.9)  # thinks before answering
    resp = requests.post(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=H, stream=True,
                         timeout=30, json={"content": "hi", "stream": True})
    lines = [line for line in _lines(resp) if line]
    assert lines[0] == "event: start"
    beats = [i for i, line in enumerate(lines) if line == ": keep-alive"]
    first_delta = lines.index("event: delta")
    assert len([i for i in beats if i < first_delta]) >= 2, lines
    done = json.loads(lines[lines.index("event: done") + 1][6:])
    assert done["status"] == "complete"
    saved = requests.get(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=H, timeout=10).json()
    assert saved["data"][-1]["content"] == "Thought done"


def test_a_stop_takes_effect_while_the_provider_is_still_silent(server, upstream):
    import time

    bot = requests.post(server + "/api/v1/bots", headers=H, timeout=10,
                        json={"name": "thinker", "model": "openai/gpt-test"}).json()
    conv = requests.post(server + "/api/v1/conversations", headers=H, timeout=10,
                         json={"bot_id": bot["id"]}).json()
    upstream.script(chunks=["late"], chunk_delay=4)  # nothing for 4 s
    started = time.monotonic()
    resp = requests.post(f"{server}/api/v1/conversations/{conv['id']}/messages", headers=H, stream=True,
                         timeout=30, json={"content": "hi", "stream": True})
    lines = resp.iter_lines(decode_unicode=True)
    assert next(lines) == "event: start"
    start = json.loads(next(lines)[6:])
    stop = requests.post(f"{server}/api/v1/conversations/{conv['id']}/messages/{start['message_id']}/stop",
                         headers=H, timeout=10)
    assert stop.status_code == 202
    rest = [line for line in lines if line]
    elapsed = time.monotonic() - started
    done = json.loads(rest[rest.index("event: done") + 1][6:])
    assert done["status"] == "incomplete" and done["finish_reason"] == "stopped", rest
    assert elapsed < 3, elapsed  # the heartbeats carry the stop check through the silence

"""Stopping an answer on a real ``chatport serve`` (gunicorn + gevent, two workers): a stop reaches
the caller's own running generation, whichever worker runs it, and nobody else's."""

import pytest
import requests

from .servers import chatport_server, sse_events

ADMIN = "cp_test_admin_key_for_the_stop_tests_00000000"
SLOW = "[echo tokens=50 delay=0.05]"  # 2.5 s when nothing stops it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"CHATPORT_ADMIN_KEY": ADMIN, "CHATPORT_ECHO_DIRECTIVES": "true", "CHATPORT_STOP_POLL_INTERVAL": "0.05"}
    with chatport_server(tmp_path_factory.mktemp("stop"), workers=2, env=env) as base:
        yield base


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _post(server, key, path, body=None):
    return requests.post(server + path, headers=_auth(key), json=body, timeout=10)


def _tenant(server, name):
    """A bot, a client key scoped to it, and a conversation of that key."""
    bot = _post(server, ADMIN, "/api/v1/bots", {"name": name}).json()
    key = _post(server, ADMIN, "/api/v1/keys", {"name": name, "bot_ids": [bot["id"]]}).json()["key"]
    conv = _post(server, key, "/api/v1/conversations", {"bot_id": bot["id"]}).json()
    return key, conv["id"]



def _stream(server, key, conv_id):
    """Start a slow streamed answer; return its events (start already read) and its start data."""
    resp = requests.post(f"{server}/api/v1/conversations/{conv_id}/messages", headers=_auth(key), stream=True,
                         timeout=20, json={"content": SLOW, "stream": True})
    events = sse_events(resp)
    kind, start = next(events)
    assert kind == "start"
    return events, start


def _saved(server, key, conv_id):
    return requests.get(f"{server}/api/v1/conversations/{conv_id}/messages", headers=_auth(key),
                        timeout=10).json()["data"][-1]


def test_a_stop_reaches_only_the_callers_own_generation(server):
    key_a, conv_a = _tenant(server, "A")
    key_b, conv_b = _tenant(server, "B")
    events_b, start_b = _stream(server, key_b, conv_b)
    stop_b = f"/messages/{start_b['message_id']}/stop"
    attempts = [_post(server, key_a, f"/api/v1/conversations/{conv_a}{stop_b}"),  # through A's conversation
                _post(server, key_a, f"/api/v1/conversations/{conv_b}{stop_b}"),  # B's, out of A's scope
                _post(server, ADMIN, f"/api/v1/conversations/{conv_a}{stop_b}")]  # not this conversation's
    for resp in attempts:
        assert resp.status_code == 404, resp.text
        assert resp.json()["code"] == 404 and resp.json()["message"]
    rest_b = list(events_b)
    assert rest_b[-1][0] == "done" and rest_b[-1][1]["status"] == "complete", rest_b[-1]
    assert rest_b[-1][1]["finish_reason"] == "stop"
    assert len([d for kind, d in rest_b if kind == "delta"]) == 50  # B's answer ran to its end
    assert _saved(server, key_b, conv_b)["status"] == "complete"

    events_a, start_a = _stream(server, key_a, conv_a)
    first = next(events_a)
    assert first[0] == "delta"
    stop = _post(server, key_a, f"/api/v1/conversations/{conv_a}/messages/{start_a['message_id']}/stop")
    assert stop.status_code == 202 and stop.json() == {"message_id": start_a["message_id"], "stop_requested": True}
    rest_a = list(events_a)
    kind, done = rest_a[-1]
    assert kind == "done" and done["status"] == "incomplete" and done["finish_reason"] == "stopped", rest_a[-1]
    streamed = "".join(d["text"] for kind, d in [first] + rest_a if kind == "delta")
    words = streamed.split()
    assert 0 < len(words) < 50 and words == [f"t{i}" for i in range(1, len(words) + 1)]
    saved = _saved(server, key_a, conv_a)
    assert saved["id"] == start_a["message_id"] and saved["status"] == "incomplete"
    assert saved["content"] == streamed  # the partial answer, as streamed
    again = _post(server, key_a, f"/api/v1/conversations/{conv_a}/messages/{start_a['message_id']}/stop")
    assert again.status_code == 202 and again.json()["stop_requested"] is False  # finished: nothing to stop

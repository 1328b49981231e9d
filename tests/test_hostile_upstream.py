"""A malicious or broken upstream, on 127.0.0.1: the provider HTTP client (both
``PROVIDER_HTTP_CLIENT`` settings) ends each attack quickly with a clear error, reads no more
than its caps, and never splits a request; through ``chatport serve`` each becomes a 502/504 in
the OpenAI dialect's shape without the worker's memory growing."""
import json
import os
import time

import h11
import httpx
import pytest
import requests

from app.providers import http_client
from tests.servers import RawServer, chatport_server, worker_pids

MIB = 1024 * 1024
KEY = "sk-admin-hostile-0123456789"


class Hostile(RawServer):
    """A server on 127.0.0.1 that reads each request (head and Content-Length body), then
    plays ``script(send)``, where ``send(bytes)`` returns False once the client has gone.
    Records the requests, the connections and how many body bytes were sent."""

    def __init__(self, script):
        self.script = script
        self.requests, self.sent = [], 0
        super().__init__(backlog=16)

    def _serve(self, conn):
        with conn:
            conn.settimeout(30)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += conn.recv(65536)
            except OSError:
                return
            self.requests.append(head)

            def send(data):
                try:
                    conn.sendall(data)
                except OSError:
                    return False
                self.sent += len(data)
                return True

            self.script(send)


def _forever(head, block, pause=0.0, limit=400 * MIB, hold=0.0):
    """A script: ``head``, then ``block`` again and again (until the client goes, or ``limit``),
    then ``hold`` seconds of silence before the connection closes."""
    def script(send):
        if not send(head):
            return
        sent = 0
        while sent < limit and send(block):
            sent += len(block)
            if pause:
                time.sleep(pause)
        time.sleep(hold)
    return script


def _fixed(reply):
    return lambda send: send(reply)


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

SMALL = {"PROVIDER_MAX_BODY": 1 * MIB, "PROVIDER_MAX_LINE": 256 * 1024, "PROVIDER_DEADLINE": 1.5,
         "PROVIDER_FIRST_BYTE_TIMEOUT": 1.5, "PROVIDER_STREAM_IDLE": 1.0}


def _client(kind, **settings):
    return http_client({"PROVIDER_HTTP_CLIENT": kind, **SMALL, **settings}, httpx.Timeout(10, connect=2))


def _post(client, url, stream=False):
    """A provider call: POST, read the whole body (or, streamed, every piece)."""
    if not stream:
        return client.post(url + "/v1/chat/completions", json={"q": 1})
    with client.stream("POST", url + "/v1/chat/completions", json={"q": 1}) as resp:
        for _ in resp.iter_bytes():
            pass
        return resp


def h11_rejects(raw):
    """Whether h11 (the reference parser) refuses the response ``raw`` to a POST."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    try:
        while True:
            event = conn.next_event()
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.EndOfMessage):
                return False
    except h11.RemoteProtocolError:
        return True


KINDS = ["fast", "httpx"]


# ---------------------------------------------------------------- what the caps bound


@pytest.mark.parametrize("kind", KINDS)
def test_a_300_mb_declared_body_is_refused_before_it_is_read(kind):
    up = Hostile(_forever(JSON_HEAD + b"Content-Length: 300000000\r\n\r\n", b"x" * 65536))
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError, match="PROVIDER_MAX_BODY"):
        _post(_client(kind), up.url)
    assert time.monotonic() - started < 3
    time.sleep(0.2)
    assert up.sent < 50 * MIB  # the client hung up: the upstream could not send much more
    up.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_without_a_length_is_cut_at_the_cap(kind):
    up = Hostile(_forever(JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"10000\r\n" + b"x" * 65536 + b"\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="PROVIDER_MAX_BODY"):
        _post(_client(kind), up.url)
    time.sleep(0.2)
    assert up.sent < 50 * MIB
    up.close()


@pytest.mark.parametrize("kind,content_type", [("fast", b"application/json"), ("httpx", b"application/json"),
                                               ("fast", b"text/event-stream")])
def test_a_chunk_declared_ffffffffff_is_refused(kind, content_type):
    # (httpx's transport does not tell chunk sizes: there an event stream is bounded by its lines)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n" % content_type
    up = Hostile(_forever(head, b"data: x\n\n" * 6000))
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError, match="PROVIDER_MAX_BODY"):
        _post(_client(kind), up.url, stream=True)
    assert time.monotonic() - started < 3
    time.sleep(0.2)
    assert up.sent < 50 * MIB
    up.close()


@pytest.mark.parametrize("kind", KINDS)
def test_an_event_stream_without_a_line_end_is_cut_at_the_line_cap(kind):
    up = Hostile(_forever(SSE_HEAD, b"10000\r\n" + b"x" * 65536 + b"\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="PROVIDER_MAX_LINE"):
        _post(_client(kind), up.url, stream=True)
    time.sleep(0.2)
    assert up.sent < 50 * MIB
    up.close()


def test_an_event_stream_with_line_ends_may_outgrow_the_body_cap():
    event = b"data: " + b"x" * 1000 + b"\n\n"
    chunk = b"%x\r\n%s\r\n" % (len(event) * 64, event * 64)
    up = Hostile(_forever(SSE_HEAD, chunk, limit=3 * MIB, hold=5))  # then silence, without the last chunk
    client = _client("fast")
    got = 0
    with pytest.raises(httpx.ReadTimeout):  # the upstream went silent: the idle gap ends it
        with client.stream("POST", up.url + "/v1/chat/completions", json={}) as resp:
            for piece in resp.iter_bytes():
                got += len(piece)
    assert got > 2 * MIB  # over PROVIDER_MAX_BODY (1 MiB here): a stream is bounded by lines
    up.close()


def test_a_response_head_over_the_cap_is_refused():
    up = Hostile(_forever(b"HTTP/1.1 200 OK\r\n", b"X-Filler: " + b"y" * 1000 + b"\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="PROVIDER_MAX_HEAD"):
        _post(_client("fast", PROVIDER_MAX_HEAD=16384), up.url)
    up.close()


# ---------------------------------------------------------------- framing, as h11 sees it


MALFORMED = {
    "two Content-Lengths that differ": JSON_HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "chunk size 0x10": JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n",
    "chunk size +5": JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n+2\r\nok\r\n0\r\n\r\n",
    "chunk size 1_0": JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0_2\r\nok\r\n0\r\n\r\n",
    "Content-Length +5": JSON_HEAD + b"Content-Length: +2\r\n\r\nok",
    "Content-Length 1_0": JSON_HEAD + b"Content-Length: 0_2\r\n\r\nok",
    "Content-Length 0x10": JSON_HEAD + b"Content-Length: 0x2\r\n\r\nok",
    "a space before the colon": JSON_HEAD + b"Content-Length : 2\r\n\r\nok",
    "a NUL in a header value": JSON_HEAD + b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "a status line that is not HTTP": b"HTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "chunk data not followed by CRLF": JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_framing_is_refused_as_h11_refuses_it(kind, name):
    raw = MALFORMED[name]
    assert h11_rejects(raw), "h11, the reference, refuses it"
    up = Hostile(_fixed(raw))
    with pytest.raises(httpx.RemoteProtocolError):
        _post(_client(kind), up.url)
    up.close()


TE_AND_CL = JSON_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n2\r\nok\r\n0\r\n\r\n"


@pytest.mark.parametrize("kind", KINDS)
def test_transfer_encoding_with_content_length_is_refused(kind):
    # h11 reads the chunks and ignores the length (RFC 9112 allows either); a response with
    # both is what a request-smuggling intermediary sends, so it is refused here
    up = Hostile(_fixed(TE_AND_CL))
    with pytest.raises(httpx.RemoteProtocolError, match="Content-Length"):
        _post(_client(kind), up.url)
    up.close()


def test_well_formed_framing_is_read_as_h11_reads_it():
    replies = [JSON_HEAD + b"Content-Length: 2\r\n\r\nok",
               JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1;ext=1\r\no\r\n1\r\nk\r\n0\r\nX-T: 1\r\n\r\n",
               JSON_HEAD + b"Content-Length: 2\r\nX-Empty:\r\nX-Tab:\ta\tb\r\n\r\nok"]
    for raw in replies:
        assert not h11_rejects(raw)
        up = Hostile(_fixed(raw))
        assert _post(_client("fast"), up.url).content == b"ok"
        up.close()


# ---------------------------------------------------------------- requests never split


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", ["Bearer sk\r\nX-Injected: 1", "Bearer sk\nX-Injected: 1", "sk\r\n\r\nGET / HTTP/1.1",
                                   "a\x00b", " leading"])
def test_a_cr_or_lf_in_a_header_is_refused_before_sending(kind, value):
    up = Hostile(_fixed(JSON_HEAD + b"Content-Length: 2\r\n\r\nok"))
    client = _client(kind)
    with pytest.raises(httpx.LocalProtocolError) as info:
        client.post(up.url + "/v1/chat/completions", json={}, headers={"Authorization": value})
    assert "sk" not in str(info.value)  # the error names the header, never its value
    with pytest.raises(httpx.LocalProtocolError):
        client.post(up.url + "/v1/chat/completions", json={}, headers={"X-Extra": value})
    time.sleep(0.1)
    assert up.requests == []  # nothing reached the upstream
    assert client.post(up.url + "/", json={}, headers={"X-Extra": "fine"}).content == b"ok"
    up.close()


# ---------------------------------------------------------------- deadlines


def test_a_100_continue_loop_ends_at_the_deadline():
    up = Hostile(_forever(b"", b"HTTP/1.1 100 Continue\r\n\r\n", pause=0.02))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout, match="deadline"):
        _post(_client("fast"), up.url)
    assert 1.4 < time.monotonic() - started < 3  # PROVIDER_DEADLINE (1.5 s), not the read timeout (10 s)
    up.close()


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_trickle_ends_at_the_deadline(where):
    head = JSON_HEAD + b"Content-Length: 1000\r\n\r\n"
    if where == "head":
        script = _forever(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", pause=0.2)
    else:
        script = _forever(head, b"x", pause=0.2)
    up = Hostile(script)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout, match="deadline"):
        _post(_client("fast"), up.url)
    assert 1.4 < time.monotonic() - started < 3
    up.close()


def test_a_stream_trickling_without_line_ends_ends_at_the_idle_gap():
    up = Hostile(_forever(SSE_HEAD + b"6\r\ndata: \r\n", b"1\r\nx\r\n", pause=0.2))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout, match="deadline"):
        _post(_client("fast"), up.url, stream=True)
    assert 0.9 < time.monotonic() - started < 2.5  # PROVIDER_STREAM_IDLE (1 s)
    up.close()


def test_a_stream_sending_lines_may_run_past_the_deadline():
    up = Hostile(_forever(SSE_HEAD, b"9\r\ndata: x\n\n\r\n", pause=0.1, limit=14 * 25, hold=5))  # 2.5 s of events
    client = _client("fast")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):  # then silence: the idle gap, not the 10 s read timeout
        _post(client, up.url, stream=True)
    assert 2.5 + 0.9 < time.monotonic() - started < 2.5 + 2.5  # past PROVIDER_DEADLINE (1.5 s)
    up.close()


# ---------------------------------------------------------------- through chatport serve


def _rss_peak_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


ATTACKS = {
    # name: (script, stream, status, code)
    "300 MB body": (_forever(JSON_HEAD + b"Content-Length: 300000000\r\n\r\n", b"x" * 65536), False, 502,
                    "provider_unavailable"),
    "chunk FFFFFFFFFF": (_forever(JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n", b"x" * 65536),
                         False, 502, "provider_unavailable"),
    "endless body": (_forever(JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
                              b"10000\r\n" + b"x" * 65536 + b"\r\n"), False, 502, "provider_unavailable"),
    "stream without newline": (_forever(SSE_HEAD, b"10000\r\n" + b"x" * 65536 + b"\r\n"), True, 502,
                               "provider_unavailable"),
    "conflicting Content-Length": (_fixed(MALFORMED["two Content-Lengths that differ"]), False, 502,
                                   "provider_unavailable"),
    "TE and CL": (_fixed(TE_AND_CL), False, 502, "provider_unavailable"),
    "chunk size 0x10": (_fixed(MALFORMED["chunk size 0x10"]), False, 502, "provider_unavailable"),
    "100 Continue loop": (_forever(b"", b"HTTP/1.1 100 Continue\r\n\r\n", pause=0.02), False, 504,
                          "provider_timeout"),
    "trickled body": (_forever(JSON_HEAD + b"Content-Length: 1000\r\n\r\n", b"x", pause=0.2), False, 504,
                      "provider_timeout"),
    "trickled stream": (_forever(SSE_HEAD + b"6\r\ndata: \r\n", b"1\r\nx\r\n", pause=0.2), True, 504,
                        "provider_timeout"),
}


@pytest.fixture(scope="module", params=KINDS)
def hostile_server(request, tmp_path_factory):
    """One ``chatport serve`` whose ``openai/gpt-test`` points at a hostile upstream whose
    script each test sets; caps and deadlines small, one SDK retry (the default)."""
    holder = {"script": _fixed(JSON_HEAD + b"Content-Length: 2\r\n\r\n{}")}
    up = Hostile(lambda send: holder["script"](send))
    env = {"CHATPORT_ADMIN_KEY": KEY, "CHATPORT_OPENAI_BASE_URL": up.url + "/v1",
           "CHATPORT_OPENAI_API_KEY": "sk-upstream", "CHATPORT_OPENAI_MODELS": '["gpt-test"]',
           "CHATPORT_PROVIDER_HTTP_CLIENT": request.param, "CHATPORT_PROVIDER_MAX_BODY": str(4 * MIB),
           "CHATPORT_PROVIDER_MAX_LINE": str(MIB), "CHATPORT_PROVIDER_DEADLINE": "2",
           "CHATPORT_PROVIDER_FIRST_BYTE_TIMEOUT": "2", "CHATPORT_PROVIDER_STREAM_IDLE": "1.5"}
    tmp = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with chatport_server(tmp, env=env) as base:
        master = int(open(os.path.join(str(tmp), "server.pid")).read())
        yield base, up, holder, worker_pids(master)[0]
    up.close()


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_through_the_api_end_in_the_dialects_error_without_memory_growth(hostile_server, attack):
    base, up, holder, worker = hostile_server
    script, stream, status, code = ATTACKS[attack]
    holder["script"] = script
    before = _rss_peak_kib(worker)
    started = time.monotonic()
    resp = requests.post(base + "/v1/chat/completions", timeout=30, stream=stream,
                         headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "openai/gpt-test", "stream": stream,
                               "messages": [{"role": "user", "content": "hi"}]})
    elapsed = time.monotonic() - started
    if not stream:
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["code"] == code  # the OpenAI dialect's error shape
    else:  # a stream's failure comes as its last event: an OpenAI-shaped error
        body = resp.text
        if resp.status_code == 200:
            events = [json.loads(line[6:]) for line in body.splitlines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
            assert events and events[-1]["error"]["code"] == code, body
        else:
            assert resp.status_code == status and resp.json()["error"]["code"] == code
    assert elapsed < 8  # within the deadline, once retried by the SDK, and quickly for the caps
    time.sleep(0.3)
    assert _rss_peak_kib(worker) - before < 40 * 1024  # the worker's peak memory grew < 40 MiB
    holder["script"] = _fixed(JSON_HEAD + b"Content-Length: 2\r\n\r\n{}")


def test_a_cr_lf_in_the_configured_key_never_reaches_the_upstream(tmp_path):
    up = Hostile(_fixed(JSON_HEAD + b"Content-Length: 2\r\n\r\n{}"))
    env = {"CHATPORT_ADMIN_KEY": KEY, "CHATPORT_OPENAI_BASE_URL": up.url + "/v1",
           "CHATPORT_OPENAI_API_KEY": json.dumps("sk-up\r\nX-Injected: 1"), "CHATPORT_OPENAI_MODELS": '["gpt-test"]'}
    with chatport_server(tmp_path, env=env) as base:
        resp = requests.post(base + "/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {KEY}"},
                             json={"model": "openai/gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "provider_unavailable"
    assert "sk-up" not in resp.text
    assert up.connections == 0
    up.close()

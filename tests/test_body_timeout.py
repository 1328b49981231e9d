"""A request body that stops arriving: after BODY_READ_TIMEOUT the client gets a 408 (or the
connection closes) and the worker's connection slot is free again. Against a real
``chatport serve`` (gunicorn + gevent) with raw sockets."""
import json
import socket
import time

import pytest
import requests

from .servers import chatport_server

ADMIN = "cp_body_timeout_admin_key_00000000000000000000"
TIMEOUT = 1.0
SLOTS = 3  # --worker-connections: stalled clients could fill them all


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"CHATPORT_ADMIN_KEY": ADMIN, "CHATPORT_BODY_READ_TIMEOUT": str(TIMEOUT)}
    with chatport_server(tmp_path_factory.mktemp("bodytimeout"), env=env,
                         extra_args=("--worker-connections", str(SLOTS))) as base:
        yield base


def _port(base):
    return int(base.rsplit(":", 1)[1])


def stalled(base, path, *, auth=True, chunked=False, sent=b'{"model": '):
    """Open a connection, send the headers and the start of a body, then nothing more."""
    sock = socket.create_connection(("127.0.0.1", _port(base)), timeout=10)
    headers = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if auth:
        headers.append(f"Authorization: Bearer {ADMIN}")
    if chunked:
        headers.append("Transfer-Encoding: chunked")
        sent = b"400\r\n" + sent  # a 1,024-byte chunk, barely begun
    else:
        headers.append("Content-Length: 1000")
    sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + sent)
    return sock


def read_until_closed(sock, limit=10.0):
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    data = b""
    sock.settimeout(limit)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pytest.fail(f"the connection was still open after {limit} s; received {data[:200]!r}")
    finally:
        sock.close()
    return data, time.monotonic() - started


def _status_and_body(data):
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1"), body


@pytest.mark.parametrize("chunked", [False, True])
def test_a_stalled_body_is_a_408_and_the_connection_closes(server, chunked):
    sock = stalled(server, "/v1/chat/completions", chunked=chunked)
    data, elapsed = read_until_closed(sock)
    assert elapsed < TIMEOUT + 3
    status, head, body = _status_and_body(data)
    assert status == 408, head
    if not chunked:  # a chunked error body is framed in chunks: the status says enough
        error = json.loads(body)["error"]  # the OpenAI dialect's error shape
        assert "did not arrive" in error["message"] and error["code"] == "request_timeout"


def test_a_stalled_body_in_another_dialect_is_a_408_in_its_shape(server):
    sock = stalled(server, "/api/v1/chat", sent=b'{"chatbotId": ')
    data, _ = read_until_closed(sock)
    status, head, body = _status_and_body(data)
    assert status == 408, head
    assert set(json.loads(body)) == {"message"}


def test_a_body_left_unread_does_not_hold_the_connection(server):
    """Refused before its body is read (no key: 401), the request's connection closes soon
    instead of waiting for the rest of the body."""
    sock = stalled(server, "/v1/chat/completions", auth=False)
    data, elapsed = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 401"), data[:100]
    assert elapsed < TIMEOUT + 3


def test_stalled_clients_do_not_keep_the_worker_busy(server):
    """As many stalled bodies as the worker has connection slots: once their time is up the
    slots are free and the next request is served."""
    socks = [stalled(server, "/v1/chat/completions") for _ in range(SLOTS)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        resp = requests.get(server + "/healthz", timeout=TIMEOUT + 5)
        assert resp.status_code == 200
        assert time.monotonic() - started < TIMEOUT + 3
    finally:
        for sock in socks:
            sock.close()


def test_a_body_that_arrives_slowly_but_in_time_is_read(server):
    body = json.dumps({"model": "echo/echo", "messages": [{"role": "user", "content": "slow but fine"}]}).encode()
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=10)
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Authorization: Bearer {ADMIN}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
    for i in range(0, len(body), len(body) // 3 + 1):
        sock.sendall(body[i:i + len(body) // 3 + 1])
        time.sleep(TIMEOUT / 5)
    data, _ = read_until_closed(sock)
    status, head, payload = _status_and_body(data)
    assert status == 200, head
    assert json.loads(payload)["choices"][0]["message"]["content"] == "Echo: slow but fine"

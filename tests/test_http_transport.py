"""app/providers/http_transport.py: the HTTP/1.1 transport under the provider SDKs."""
import socket
import threading
import time

import httpx

from app.providers.http_transport import FastTransport
from tests.servers import RawServer


def _closing_server(replies):
    """A server that answers each connection once, then closes it without saying so."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted = []

    def run():
        for _ in range(replies):
            conn, _ = srv.accept()
            accepted.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(0.05)
            conn.close()  # keep-alive was implied: the client only learns by looking
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], accepted


def test_a_connection_the_server_closed_is_not_reused():
    port, accepted = _closing_server(3)
    client = httpx.Client(transport=FastTransport(), timeout=5)
    for _ in range(3):
        time.sleep(0.2)  # the server has closed the previous connection by now
        resp = client.get(f"http://127.0.0.1:{port}/")
        assert resp.status_code == 200 and resp.text == "ok"
    assert len(accepted) == 3  # each request opened a new connection


def test_the_client_streams_and_reads_like_httpx():
    port, _ = _closing_server(2)
    client = httpx.Client(transport=FastTransport(), timeout=5)
    with client.stream("GET", f"http://127.0.0.1:{port}/") as resp:
        assert resp.status_code == 200 and b"".join(resp.iter_bytes()) == b"ok"
        assert resp.elapsed.total_seconds() >= 0
    time.sleep(0.2)
    assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
    client.close()
    try:
        client.get(f"http://127.0.0.1:{port}/")
    except RuntimeError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("a closed client must refuse to send")
    assert isinstance(client, httpx.Client)


def _sse_server(hold_after_first=False):
    """A keep-alive server answering every request on a connection with a chunked SSE body:
    ``data: a``, ``data: [DONE]``, then the last chunk. With ``hold_after_first`` it sends only
    the first event and keeps the connection open (a stream still going)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted, gone = [], threading.Event()

    def chunk(data):
        return b"%x\r\n%s\r\n" % (len(data), data)

    def serve(conn):
        with conn:
            while True:
                request = b""
                while b"\r\n\r\n" not in request or len(request) < request.index(b"\r\n\r\n") + 6:
                    data = conn.recv(65536)  # the headers and the 2-byte body every request here has
                    if not data:
                        gone.set()
                        return
                    request += data
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"data: a\n\n"))
                if hold_after_first:
                    while conn.recv(65536):  # (the request body may come late) until the client hangs up
                        pass
                    gone.set()
                    return
                conn.sendall(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")  # the end comes with [DONE]

    def run():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    return srv, accepted, gone


def _read_until_done(client, url):
    """What a provider plugin does: read events up to [DONE], then close the response."""
    with client.stream("POST", url, content=b"{}") as resp:
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            if line == "data: [DONE]":
                break
        return lines


def test_a_stream_read_up_to_done_leaves_its_connection_for_the_next():
    srv, accepted, _ = _sse_server()
    client = httpx.Client(transport=FastTransport(), timeout=5)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/v1/chat/completions"
    for _ in range(3):
        assert _read_until_done(client, url)[-1] == "data: [DONE]"
        time.sleep(0.05)
    assert len(accepted) == 1  # the rest of each body had arrived: read, and the connection reused
    srv.close()


def test_a_stream_closed_midway_closes_its_connection_at_once():
    srv, accepted, gone = _sse_server(hold_after_first=True)
    client = httpx.Client(transport=FastTransport(), timeout=5)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/v1/chat/completions"
    started = time.monotonic()
    with client.stream("POST", url, content=b"{}") as resp:
        assert next(resp.iter_lines()) == "data: a"
    assert time.monotonic() - started < 1  # nothing waited for the rest
    assert gone.wait(2), "the upstream connection was kept open"
    srv.close()


def test_reuse_check_works_for_descriptors_above_select_limit():
    import os
    import resource

    from app.providers.http_transport import is_reusable

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = min(soft - 1, 1500)
    assert high > 1024, "needs a descriptor limit above 1,024"  # a worker holding 1,000 streams has one
    ours, peer = socket.socketpair()
    os.dup2(ours.fileno(), high)
    sock = socket.socket(fileno=high)
    try:
        assert is_reusable(sock)  # idle and open: reusable (select() raised here and said dropped)
        peer.sendall(b"x")
        time.sleep(0.05)
        assert not is_reusable(sock)  # something unasked arrived
        sock.recv(1)
        peer.close()
        time.sleep(0.05)
        assert not is_reusable(sock)  # the peer closed
    finally:
        sock.close()
        ours.close()


# ---------------------------------------------------------------- framing, errors, TLS


def _read_request(conn, pending):
    """One request (head and Content-Length body) from ``conn``; ``(request, rest)`` or None."""
    data = pending
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


class Scripted(RawServer):
    """A keep-alive server on 127.0.0.1 that answers the n-th request of the whole server with
    ``replies[n]``: bytes (sent in pieces at each ``|SPLIT|``), or None to close the connection
    without answering. ``close_after`` closes a connection after sending that reply."""

    def __init__(self, replies, close_after=(), hold=False):
        self.replies, self.close_after, self.hold = list(replies), set(close_after), hold
        self.requests = []
        super().__init__(backlog=8)

    def _serve(self, conn):
        pending = b""
        with conn:
            while True:
                got = _read_request(conn, pending)
                if got is None:
                    return
                request, pending = got
                index = len(self.requests)
                self.requests.append(request)
                reply = self.replies[index] if index < len(self.replies) else None
                if reply is None:
                    if self.hold:
                        time.sleep(3)
                    return
                for piece in reply.split(b"|SPLIT|"):
                    conn.sendall(piece)
                    time.sleep(0.02)
                if index in self.close_after:
                    return


def _client(**kw):
    return httpx.Client(transport=FastTransport(**kw), timeout=httpx.Timeout(5, connect=2))


OK_LEN = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\": |SPLIT|\"b\"}"


def test_request_line_headers_and_body_go_out_as_httpx_built_them():
    srv = Scripted([OK_LEN])
    resp = _client().post(srv.url + "/v1/chat/completions?x=1&y=%20", json={"q": "é"},
                          headers={"Authorization": "Bearer k"})
    assert resp.status_code == 200 and resp.json() == {"a": "b"}
    head, _, body = srv.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1&y=%20 HTTP/1.1"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert headers[b"host"] == srv.url.split("//")[1].encode()
    assert headers[b"authorization"] == b"Bearer k"
    assert int(headers[b"content-length"]) == len(body) and body == '{"q":"é"}'.encode()
    srv.close()


def test_content_length_body_in_pieces_then_the_connection_is_reused():
    srv = Scripted([OK_LEN, OK_LEN, OK_LEN])
    client = _client()
    for _ in range(3):
        resp = client.get(srv.url + "/")
        assert resp.json() == {"a": "b"}
    assert srv.connections == 1
    srv.close()


def test_chunked_body_with_extensions_and_trailers():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;name=x\r\nhello\r\n|SPLIT|1\r\n \r\n6\r\nwor|SPLIT|ld!\r\n0\r\nX-Trailer: 1\r\n\r\n")
    srv = Scripted([chunked, chunked])
    client = _client()
    assert client.get(srv.url + "/").content == b"hello world!"
    with client.stream("GET", srv.url + "/") as resp:
        pieces = list(resp.iter_raw())
    assert b"".join(pieces) == b"hello world!" and len(pieces) >= 2  # yielded as chunks arrived
    assert srv.connections == 1
    srv.close()


def test_a_body_delimited_by_the_connection_end_is_read_to_the_end_and_not_reused():
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it|SPLIT| and more"
    srv = Scripted([until_close, until_close], close_after={0, 1})
    client = _client()
    assert client.get(srv.url + "/").text == "all of it and more"
    assert client.get(srv.url + "/").text == "all of it and more"
    assert srv.connections == 2
    srv.close()


def test_interim_responses_empty_bodies_and_connection_close():
    srv = Scripted([
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # HEAD: the length, no body
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ], close_after={3, 4})
    client = _client()
    assert client.get(srv.url + "/").text == "ok"
    assert client.get(srv.url + "/").status_code == 204
    head = client.head(srv.url + "/")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "5"
    assert srv.connections == 1  # all three on one connection
    assert client.get(srv.url + "/").text == "bye"
    assert client.get(srv.url + "/").text == "ok"  # Connection: close was honoured: a new one
    assert srv.connections == 2
    srv.close()


def test_upstream_errors_are_httpx_errors():
    import pytest

    srv = Scripted([
        b"HTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        None,  # closes without answering
    ], close_after={0, 1, 2})
    client = _client()
    for _ in range(4):
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(srv.url + "/")
    srv.close()

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")


def test_a_server_that_never_answers_times_out_on_read():
    import pytest

    srv = Scripted([], hold=True)
    client = httpx.Client(transport=FastTransport(), timeout=httpx.Timeout(0.3, connect=2))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get(srv.url + "/")
    assert time.monotonic() - started < 2
    srv.close()


def test_content_codings_are_decoded_by_httpx():
    import gzip

    body = gzip.compress(b'{"ok": true}')
    srv = Scripted([b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)])
    assert _client().get(srv.url + "/").json() == {"ok": True}
    srv.close()


def test_https_with_certificate_verification(tmp_path):
    import shutil
    import ssl
    import subprocess

    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    connections = []

    def handle(raw):
        try:
            conn = server_ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # a client that refused our certificate
            return
        connections.append(conn)
        pending = b""
        with conn:
            while True:
                got = _read_request(conn, pending)
                if got is None:
                    return
                pending = got[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")

    def serve():
        while True:
            try:
                raw, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(raw,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    trusting = ssl.create_default_context(cafile=str(cert))
    client = _client(verify=trusting)
    for _ in range(2):
        assert client.get(f"https://localhost:{port}/").text == "secure"
    assert len(connections) == 1  # kept alive over TLS
    with pytest.raises(httpx.ConnectError, match="certificate"):
        _client().get(f"https://localhost:{port}/")  # default trust: a self-signed certificate fails
    srv.close()


# ---------------------------------------------------------------- the pool


def test_an_idle_connection_expires_after_the_keepalive_expiry():
    from app.providers.http_transport import Limits

    srv = Scripted([OK_LEN] * 4)
    client = httpx.Client(transport=FastTransport(limits=Limits(keepalive_expiry=0.3)), timeout=5)
    client.get(srv.url + "/")
    time.sleep(0.05)
    client.get(srv.url + "/")
    assert srv.connections == 1  # reused while fresh
    time.sleep(0.5)  # idle longer than the expiry: a NAT may have dropped it silently
    client.get(srv.url + "/")
    assert srv.connections == 2
    srv.close()


def test_the_pool_caps_open_connections_per_host():
    import pytest

    from app.providers.http_transport import Limits

    srv, accepted, _ = _sse_server(hold_after_first=True)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/v1/chat/completions"
    client = httpx.Client(transport=FastTransport(limits=Limits(max_per_host=2)),
                          timeout=httpx.Timeout(5, pool=0.3))
    first = client.send(client.build_request("POST", url, content=b"{}"), stream=True)
    second = client.send(client.build_request("POST", url, content=b"{}"), stream=True)
    started = time.monotonic()
    with pytest.raises(httpx.PoolTimeout, match="PROVIDER_POOL_MAX_PER_HOST"):
        client.send(client.build_request("POST", url, content=b"{}"), stream=True)
    assert 0.25 < time.monotonic() - started < 2  # waited for a free connection, up to the pool timeout
    assert len(accepted) == 2
    waiter = {}

    def third():
        waiter["response"] = client.send(client.build_request("POST", url, content=b"{}"), stream=True)

    thread = threading.Thread(target=third)
    thread.start()
    time.sleep(0.1)
    first.close()  # a stream given up: its connection is closed and its place freed
    thread.join(2)
    assert waiter["response"].status_code == 200 and len(accepted) == 3
    waiter["response"].close()
    second.close()
    srv.close()

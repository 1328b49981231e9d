"""app/http_transport.py: the urllib3 transport under the provider SDKs."""
import socket
import threading
import time

import httpx

from app.http_transport import LeanClient, Urllib3Transport


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
    client = LeanClient(transport=Urllib3Transport(), timeout=5)
    for _ in range(3):
        time.sleep(0.2)  # the server has closed the previous connection by now
        resp = client.get(f"http://127.0.0.1:{port}/")
        assert resp.status_code == 200 and resp.text == "ok"
    assert len(accepted) == 3  # each request opened a new connection


def test_lean_client_streams_and_reads_like_httpx():
    port, _ = _closing_server(2)
    client = LeanClient(transport=Urllib3Transport(), timeout=5)
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
    client = LeanClient(transport=Urllib3Transport(), timeout=5)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/v1/chat/completions"
    for _ in range(3):
        assert _read_until_done(client, url)[-1] == "data: [DONE]"
        time.sleep(0.05)
    assert len(accepted) == 1  # the rest of each body had arrived: read, and the connection reused
    srv.close()


def test_a_stream_closed_midway_closes_its_connection_at_once():
    srv, accepted, gone = _sse_server(hold_after_first=True)
    client = LeanClient(transport=Urllib3Transport(), timeout=5)
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

    from app.http_transport import _ReuseCheck

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = min(soft - 1, 1500)
    assert high > 1024, "needs a descriptor limit above 1,024"  # a worker holding 1,000 streams has one
    ours, peer = socket.socketpair()
    os.dup2(ours.fileno(), high)
    sock = socket.socket(fileno=high)

    class Conn(_ReuseCheck):
        pass

    conn = Conn()
    conn.sock = sock
    try:
        assert conn.is_connected  # idle and open: reusable (select() raised here and said dropped)
        peer.sendall(b"x")
        time.sleep(0.05)
        assert not conn.is_connected  # something unasked arrived
        sock.recv(1)
        peer.close()
        time.sleep(0.05)
        assert not conn.is_connected  # the peer closed
    finally:
        sock.close()
        ours.close()

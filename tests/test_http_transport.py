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

"""URL knowledge sources against real local HTTP servers (127.0.0.0/8 only): a URL that
parsers read differently, a name that resolves differently the second time (DNS rebinding),
one deadline for the whole fetch, the size cap after decompression, and pages without a
charset."""
import gzip
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

from app.services.fetch import FetchError, fetch_text

from .test_knowledge_api import K, _url_source, wait_state
from .test_mgmt_api import assert_error

PUBLIC = "1.1.1.1"  # a public address the guard may see; nothing here ever connects to it


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request (its path; its Host header and TLS server name in ``hosts``);
    ``routes`` maps a path to (status, headers, body or a callable)."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        self.server.seen.append(self.path)
        self.server.hosts.append((self.headers.get("Host"), getattr(self.connection, "sni", None)))
        status, headers, body = self.server.routes.get(self.path, (404, {}, b"nope"))
        if callable(body):
            return body(self)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server:
    def __init__(self, host="127.0.0.1", routes=None, tls=None):
        self.httpd = http.server.ThreadingHTTPServer((host, 0), Recorder)
        self.httpd.daemon_threads = True
        self.httpd.seen, self.httpd.hosts, self.httpd.routes = [], [], dict(routes or {})
        self.port = self.httpd.server_address[1]
        self.base = f"{'https' if tls else 'http'}://{host}:{self.port}"
        if tls is not None:  # an ssl.SSLContext for the server side
            def keep_sni(sock, name, ctx):
                sock.sni = name

            tls.sni_callback = keep_sni
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def seen(self):
        return self.httpd.seen

    def route(self, path, status=200, headers=None, body=b""):
        self.httpd.routes[path] = (status, headers or {}, body)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback_only(monkeypatch):
    """Every outgoing connection of this process may go to 127.0.0.0/8 only: any other
    address is refused here (and recorded) before a packet leaves."""
    refused = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def allowed(address):
        host = address[0] if isinstance(address, tuple) else ""
        return isinstance(address, str) or host.startswith("127.") or host == "localhost"

    def connect(sock, address):
        if not allowed(address):
            refused.append(address[0])
            raise ConnectionRefusedError(f"test: no connections to {address[0]}")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not allowed(address):
            refused.append(address[0])
            return 111
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused


def sync(admin, url):
    src = _url_source(admin, url)
    assert admin.post(f"{K}/sources/{src['id']}/sync").status_code == 202
    return wait_state(admin, src["id"], timeout=30)


def content(admin, source_id):
    rows = admin.get(f"{K}/sources/{source_id}/rows").get_json()["data"]
    return admin.get(f"{K}/sources/{source_id}/rows/{rows[0]['id']}").get_json()["content"]


PAGE = (200, {"Content-Type": "text/plain"}, b"secret from loopback")


def test_an_ambiguous_url_is_a_400_when_a_source_is_created(admin):
    for url in ("http://127.0.0.1:1\\@1.1.1.1/", "http://user:pw@127.0.0.1/", "http://a b/", "http://[::1/"):
        body = assert_error(admin.post(f"{K}/sources", json={"name": "u", "type": "URL", "url": url}), 400, "url")
        assert "url" in body["message"], body
    assert admin.get(f"{K}/sources").get_json()["pagination"]["total"] == 0


def test_a_url_whose_host_parsers_disagree_on_is_refused_without_a_request(admin, app, loopback_only):
    # urllib.parse reads the host of these as 1.1.1.1, urllib3 (requests) as 127.0.0.x
    with Server(routes={"/": PAGE}) as local, Server("127.0.0.2", routes={"/": PAGE}) as other:
        for url in (f"http://127.0.0.1:{local.port}\\@{PUBLIC}/", f"http://127.0.0.1:{local.port}\\\\@{PUBLIC}/",
                    f"http://user@127.0.0.1:{local.port}@{PUBLIC}/"):
            with pytest.raises(FetchError, match="backslash|credentials"):
                fetch_text(url)
        assert local.seen == []
        # the same as a redirect target: the redirecting server is allowed, the target's host is not
        app.config["KNOWLEDGE_URL_ALLOWED_NETWORKS"] = ["127.0.0.1/32"]
        local.route("/go", 302, {"Location": f"http://127.0.0.2:{other.port}\\@{PUBLIC}/"})
        state = sync(admin, local.base + "/go")
        assert state["state"] == "sync_error" and "backslash" in state["error"], state
        assert local.seen == ["/go"] and other.seen == []
    assert loopback_only == []


def _rebinding(monkeypatch, name, answers):
    """``name`` resolves to each address of ``answers`` in turn (the last one from then on)."""
    real = socket.getaddrinfo
    calls = []

    def getaddrinfo(host, port, *args, **kw):
        if host != name:
            return real(host, port, *args, **kw)
        address = answers[min(len(calls), len(answers) - 1)]
        calls.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def test_dns_rebinding_cannot_move_the_connection_to_loopback(admin, app, monkeypatch, loopback_only):
    with Server(routes={"/": PAGE}) as local:
        calls = _rebinding(monkeypatch, "rebind.test", [PUBLIC, "127.0.0.1"])
        state = sync(admin, f"http://rebind.test:{local.port}/")
        assert state["state"] == "sync_error" and "could not fetch" in state["error"], state
        assert local.seen == [] and calls == [PUBLIC]  # resolved once, connected to the checked address only
        assert loopback_only == [PUBLIC]  # (the test's own guard stopped that connection)


def test_dns_rebinding_of_a_redirect_target(admin, app, monkeypatch, loopback_only):
    app.config["KNOWLEDGE_URL_ALLOWED_NETWORKS"] = ["127.0.0.1/32"]
    with Server(routes={"/": PAGE}) as first, Server("127.0.0.2", routes={"/": PAGE}) as target:
        first.route("/go", 302, {"Location": f"http://rebind.test:{target.port}/"})
        calls = _rebinding(monkeypatch, "rebind.test", [PUBLIC, "127.0.0.2"])
        state = sync(admin, first.base + "/go")
        assert state["state"] == "sync_error" and "could not fetch" in state["error"], state
        assert first.seen == ["/go"] and target.seen == [] and calls == [PUBLIC]
        # and a redirect to a name that resolves to a refused address is refused before connecting
        calls = _rebinding(monkeypatch, "inside.test", ["127.0.0.2"])
        first.route("/in", 302, {"Location": f"http://inside.test:{target.port}/"})
        state = sync(admin, first.base + "/in")
        assert state["state"] == "sync_error" and "non-public address (127.0.0.2)" in state["error"], state
        assert target.seen == []
    assert loopback_only == [PUBLIC]


@pytest.fixture
def certificate(tmp_path, monkeypatch):
    """A server context with a certificate for ``pinned.test`` that fetches trust (SSL_CERT_FILE)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=pinned.test", "-addext", "subjectAltName=DNS:pinned.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_https_keeps_the_hostname_for_host_sni_and_the_certificate(admin, app, monkeypatch, certificate):
    app.config["KNOWLEDGE_URL_ALLOWED_NETWORKS"] = ["127.0.0.0/8"]
    with Server(routes={"/": PAGE}, tls=certificate) as local:
        _rebinding(monkeypatch, "pinned.test", ["127.0.0.1"])
        state = sync(admin, f"https://pinned.test:{local.port}/")
        assert state["state"] == "synced", state
        assert content(admin, state["id"]) == "secret from loopback"
        assert local.httpd.hosts == [(f"pinned.test:{local.port}", "pinned.test")]
        # the certificate is checked against the URL's name, not the address connected to
        _rebinding(monkeypatch, "other.test", ["127.0.0.1"])
        state = sync(admin, f"https://other.test:{local.port}/")
        assert state["state"] == "sync_error" and "could not fetch" in state["error"], state
        assert local.seen == ["/"]


def _trickle(handler, pause=0.25, pieces=40):
    """200 text/plain, 16 bytes every ``pause`` seconds (10 s in all, by default)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", str(16 * pieces))
    handler.end_headers()
    try:
        for _ in range(pieces):
            handler.wfile.write(b"0123456789abcdef")
            handler.wfile.flush()
            time.sleep(pause)
    except OSError:  # the fetcher hung up
        pass


def _slow_redirect(handler):
    time.sleep(0.4)
    hops = int(handler.path.rsplit("/", 1)[1])
    handler.send_response(302)
    handler.send_header("Location", f"/hop/{hops - 1}" if hops > 1 else "/page")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def test_the_timeout_is_one_deadline_for_the_whole_fetch(admin, app):
    app.config.update(KNOWLEDGE_URL_ALLOWED_NETWORKS=["127.0.0.0/8"], KNOWLEDGE_URL_TIMEOUT=1)
    with Server() as local:
        local.route("/trickle", body=_trickle)  # every read is quick, the whole page takes 10 s
        local.route("/page", 200, {"Content-Type": "text/plain"}, b"the end")
        for n in (1, 2, 3):
            local.route(f"/hop/{n}", body=_slow_redirect)  # 0.4 s per hop
        started = time.monotonic()
        state = sync(admin, local.base + "/trickle")
        assert state["state"] == "sync_error" and "within 1 s" in state["error"], state
        assert time.monotonic() - started < 3
        started = time.monotonic()
        state = sync(admin, local.base + "/hop/3")  # three redirects: 1.2 s together
        assert state["state"] == "sync_error" and "within 1 s" in state["error"], state
        assert time.monotonic() - started < 3
        app.config["KNOWLEDGE_URL_TIMEOUT"] = 5
        state = sync(admin, local.base + "/hop/2")
        assert state["state"] == "synced", state
        assert content(admin, state["id"]) == "the end"


def test_the_size_cap_applies_after_decompression(admin, app):
    app.config.update(KNOWLEDGE_URL_ALLOWED_NETWORKS=["127.0.0.0/8"], KNOWLEDGE_URL_MAX_BYTES=1000)
    with Server() as local:
        local.route("/bomb", 200, {"Content-Type": "text/plain", "Content-Encoding": "gzip"},
                    gzip.compress(b"x" * 1_000_000))
        local.route("/small", 200, {"Content-Type": "text/plain", "Content-Encoding": "gzip"},
                    gzip.compress(b"small and compressed"))
        state = sync(admin, local.base + "/bomb")
        assert state["state"] == "sync_error" and "larger than 1000 bytes" in state["error"], state
        state = sync(admin, local.base + "/small")
        assert state["state"] == "synced" and content(admin, state["id"]) == "small and compressed", state


UTF8_TEXT = "Café für Müller: 日本"


@pytest.mark.parametrize("ctype, body, want", [
    ("text/html", f"<html><body><p>{UTF8_TEXT}</p></body></html>".encode(), UTF8_TEXT),
    ("text/plain", UTF8_TEXT.encode(), UTF8_TEXT),
    ("text/html", f'<html><head><meta charset="utf-8"></head><p>{UTF8_TEXT}</p></html>'.encode(), UTF8_TEXT),
    ("text/html", b"\xef\xbb\xbf<p>" + UTF8_TEXT.encode() + b"</p>", UTF8_TEXT),  # BOM
    ("text/html", '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252"><p>Café</p>'
     .encode("cp1252"), "Café"),
    ("text/plain; charset=iso-8859-1", "Café".encode("latin-1"), "Café"),  # a declared charset wins
], ids=["html", "plain", "meta-utf8", "bom", "meta-cp1252", "declared"])
def test_pages_without_a_charset_are_decoded_by_their_content(admin, app, ctype, body, want):
    app.config["KNOWLEDGE_URL_ALLOWED_NETWORKS"] = ["127.0.0.0/8"]
    with Server(routes={"/p": (200, {"Content-Type": ctype}, body)}) as local:
        state = sync(admin, local.base + "/p")
        assert state["state"] == "synced", state
        assert content(admin, state["id"]) == want


def test_deadline_and_pinning_in_a_real_gevent_worker(tmp_path):
    from .servers import chatport_server

    admin_key = "cp_test_admin_key_for_url_deadline_00000000000000"
    h = {"Authorization": f"Bearer {admin_key}"}
    env = {"CHATPORT_ADMIN_KEY": admin_key, "CHATPORT_KNOWLEDGE_URL_TIMEOUT": "1",
           "CHATPORT_KNOWLEDGE_URL_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
    with Server() as local, chatport_server(tmp_path / "inst", env=env) as base:
        local.route("/trickle", body=_trickle)
        local.route("/page", 200, {"Content-Type": "text/html"}, f"<p>{UTF8_TEXT}</p>".encode())

        def sync_remote(url):
            src = requests.post(f"{base}{K}/sources", headers=h, timeout=10,
                                json={"name": "u", "type": "URL", "url": url}).json()
            started = time.monotonic()
            assert requests.post(f"{base}{K}/sources/{src['id']}/sync", headers=h, timeout=10).status_code == 202
            while time.monotonic() - started < 20:
                assert requests.get(f"{base}/healthz", timeout=2).status_code == 200  # the worker keeps answering
                state = requests.get(f"{base}{K}/sources/{src['id']}", headers=h, timeout=10).json()
                if state["state"] in ("synced", "sync_error"):
                    return state, time.monotonic() - started
                time.sleep(0.1)
            raise AssertionError(state)

        state, took = sync_remote(local.base + "/trickle")
        assert state["state"] == "sync_error" and "within 1 s" in state["error"] and took < 3, (state, took)
        state, _ = sync_remote(local.base + "/page")
        rows = requests.get(f"{base}{K}/sources/{state['id']}/rows", headers=h, timeout=10).json()["data"]
        row = requests.get(f"{base}{K}/sources/{state['id']}/rows/{rows[0]['id']}", headers=h, timeout=10).json()
        assert state["state"] == "synced" and row["content"] == UTF8_TEXT, (state, row)
        bad = requests.post(f"{base}{K}/sources", headers=h, timeout=10,
                            json={"name": "u", "type": "URL", "url": f"http://127.0.0.1:{local.port}\\@{PUBLIC}/page"})
        assert bad.status_code == 400 and "backslash" in bad.json()["message"], bad.text
        assert local.seen == ["/trickle", "/page"]

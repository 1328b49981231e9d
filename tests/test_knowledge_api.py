"""chatport API, knowledge part: sources, rows, sync (background, URL, due), search; bad input."""
import http.server
import threading
import time
from datetime import timedelta

import pytest

from app import clock
from app.services import knowledge
from app.storage import search_index
from app.storage.db import db
from app.storage.models import KnowledgeRow, KnowledgeSource

from .conftest import Api, create_key, run_cli
from .test_mgmt_api import assert_error, snapshot

K = "/api/v1/knowledge"


def wait_state(admin, source_id, want=("synced", "sync_error"), timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = admin.get(f"{K}/sources/{source_id}").get_json()
        if s["state"] in want:
            return s
        time.sleep(0.05)
    raise AssertionError(s)


def test_sources_rows_sync_search(admin, app):
    bot = admin.post("/api/v1/bots", json={"name": "kb", "model": "extractive/extractive"}).get_json()
    src = admin.post(f"{K}/sources", json={"name": "faq", "bot_ids": [bot["id"]], "sync_interval": "week"})
    assert src.status_code == 201
    src = src.get_json()
    assert src["state"] == "not_synced" and src["bot_ids"] == [bot["id"]] and src["type"] == "MANUAL"
    created = admin.post(f"{K}/sources/{src['id']}/rows", json={"rows": [
        {"name": "moon.md", "content": "# Moon\n\nThe Moon is 384,400 km away.", "tags": ["space"]},
        {"name": "refund.md", "content": "Refunds take 14 days.", "tags": ["billing"]}]})
    assert created.get_json() == {"count": 2}
    rows = admin.get(f"{K}/sources/{src['id']}/rows").get_json()
    assert [r["name"] for r in rows["data"]] == ["moon.md", "refund.md"] and rows["data"][0]["tags"] == ["space"]
    one = admin.get(f"{K}/sources/{src['id']}/rows/{rows['data'][0]['id']}").get_json()
    assert one["content"].startswith("# Moon") and one["state"] == "not_synced"
    assert admin.post(f"{K}/sources/{src['id']}/sync").status_code == 202
    synced = wait_state(admin, src["id"])
    assert synced["state"] == "synced" and synced["last_sync"] and synced["next_sync_at"]
    hits = admin.post(f"{K}/search", json={"query": "how far is the moon"}).get_json()["data"]
    assert hits[0]["name"] == "moon.md" and "384,400" in hits[0]["content"]
    assert admin.post(f"{K}/search", json={"query": "moon refunds", "tags": ["billing"]}).get_json()["data"][0][
        "name"] == "refund.md"
    assert admin.post(f"{K}/search", json={"query": "moon", "source_ids": ["faq"]}).get_json()["data"]
    patched = admin.patch(f"{K}/sources/{src['id']}/rows",
                          json={"rows": [{"id": rows["data"][1]["id"], "content": "Refunds: 30 days."}]})
    assert patched.status_code == 200, patched.get_json()
    deleted = admin.delete(f"{K}/sources/{src['id']}/rows", json={"ids": [rows["data"][0]["id"]]})
    assert deleted.status_code == 200, deleted.get_json()
    assert admin.get(f"{K}/sources/{src['id']}/rows").get_json()["pagination"]["total"] == 1
    assert admin.get(f"{K}/sources/{src['id']}").get_json()["state"] == "not_synced"
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot["id"]}).get_json()
    resynced = admin.post(f"{K}/sources/{src['id']}/sync")
    assert resynced.status_code == 202, resynced.get_json()
    state = wait_state(admin, src["id"])
    assert state["state"] == "synced", (state, admin.get(f"{K}/sources/{src['id']}/rows").get_json())
    row = admin.get(f"{K}/sources/{src['id']}/rows/{rows['data'][1]['id']}").get_json()
    assert row["state"] == "synced" and row["content"] == "Refunds: 30 days.", row
    reply = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "How long do refunds take?"})
    msg = reply.get_json()["message"]
    assert "30 days" in msg["content"] and msg["citations"][0]["source_id"] == src["id"]
    listed = admin.get(f"/api/v1/conversations/{conv['id']}/messages").get_json()["data"]
    assert listed[-1]["citations"][0]["row_id"] == rows["data"][1]["id"]
    assert admin.delete(f"{K}/sources/{src['id']}").status_code == 204
    assert_error(admin.delete(f"{K}/sources/{src['id']}"), 404)
    with app.app_context(), db.connection_context():
        assert KnowledgeRow.select().count() == 0 and search_index.orphan_count() == 0


def test_text_source_and_scoped_search(app, client, admin):
    a = admin.post("/api/v1/bots", json={"name": "a"}).get_json()
    b = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    sa = admin.post(f"{K}/sources", json={"name": "A", "type": "TEXT", "text": "Alpha facts about lions.",
                                          "bot_ids": [a["id"]]}).get_json()
    sb = admin.post(f"{K}/sources", json={"name": "B", "type": "TEXT", "text": "Beta facts about lions.",
                                          "bot_ids": [b["id"]]}).get_json()
    for s in (sa, sb):
        admin.post(f"{K}/sources/{s['id']}/sync")
        wait_state(admin, s["id"])
    scoped = Api(client, create_key(app, kind="client", bot_ids=[a["id"]]))
    hits = scoped.post(f"{K}/search", json={"query": "lions"}).get_json()["data"]
    assert {h["source_id"] for h in hits} == {sa["id"]}
    assert_error(scoped.post(f"{K}/search", json={"query": "lions", "source_ids": [sb["id"]]}), 404)
    assert scoped.get(f"{K}/sources").status_code == 403


def test_bad_input(admin, app, client):
    src = admin.post(f"{K}/sources", json={"name": "s"}).get_json()
    rows = f"{K}/sources/{src['id']}/rows"
    before = snapshot(app)
    assert_error(admin.post(rows, json={"rows": [{"name": "x", "content": ""}]}), 400)
    assert_error(admin.post(rows, json={"rows": []}), 400)
    assert_error(admin.post(rows, json={"rows": [{"content": "ok", "tags": [""]}]}), 400)
    assert_error(admin.post(rows, json={"rows": [{"content": "ok", "tags": "billing"}]}), 400)
    app.config["KNOWLEDGE_MAX_ROW_CHARS"] = 100
    assert_error(admin.post(rows, json={"rows": [{"content": "x" * 101}]}), 400)
    resp = admin.post(rows, data=b'{"rows": [{"content": "\xff\xfe bad"}]}', headers={"Content-Type": "application/json"})
    assert_error(resp, 400)
    assert_error(admin.post(f"{K}/sources", json={"name": "u", "type": "URL"}), 400)
    assert_error(admin.post(f"{K}/sources", json={"name": "u", "type": "URL", "url": "ftp://x"}), 400)
    assert_error(admin.post(f"{K}/sources", json={"name": "u", "bot_ids": ["nope"]}), 400)
    assert_error(admin.post(f"{K}/sources", json={"name": "u", "sync_interval": "hourly"}), 400)
    assert_error(admin.get(f"{K}/sources/nope"), 404)
    assert_error(admin.delete(rows, json={"ids": ["nope"]}), 404)
    assert_error(admin.patch(rows, json={"rows": [{"id": "nope", "content": "x"}]}), 404)
    assert_error(admin.post(f"{K}/search", json={"query": ""}), 400)
    assert_error(admin.post(f"{K}/search", json={"query": "x", "tags": ["no-such-tag"]}), 404)
    assert snapshot(app) == before
    app.config["KNOWLEDGE_MAX_CHARS"] = 10
    assert_error(admin.post(rows, json={"rows": [{"content": "x" * 11}]}), 429)
    assert snapshot(app) == before


def test_empty_source_syncs_and_second_sync_is_429(admin, app):
    src = admin.post(f"{K}/sources", json={"name": "empty"}).get_json()
    admin.post(f"{K}/sources/{src['id']}/sync")
    state = wait_state(admin, src["id"])
    assert state["state"] == "synced", (state, admin.get(f"{K}/sources/{src['id']}/rows").get_json())
    with app.app_context(), db.connection_context():
        knowledge.claim_sync(src["id"])
    assert_error(admin.post(f"{K}/sources/{src['id']}/sync"), 429)


class Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/page":
            body = (b"<html><head><style>x{}</style><script>evil()</script></head><body><h1>Returns</h1>"
                    b"<p>Items can be returned within <b>30 days</b>.</p></body></html>")
            self._send(200, "text/html; charset=utf-8", body)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/page")
            self.end_headers()
        elif self.path == "/missing":
            self._send(404, "text/plain", b"nope")
        elif self.path == "/image":
            self._send(200, "image/png", b"\x89PNG....")
        elif self.path == "/huge":
            self._send(200, "text/plain", b"x" * 5000)
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, "text/plain", b"late")

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pages():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _url_source(admin, url):
    return admin.post(f"{K}/sources", json={"name": url[-12:], "type": "URL", "url": url}).get_json()


def test_url_sources(admin, app, pages):
    src = _url_source(admin, pages + "/page")
    admin.post(f"{K}/sources/{src['id']}/sync")
    refused = wait_state(admin, src["id"])
    assert refused["state"] == "sync_error" and "non-public address" in refused["error"], refused  # loopback refused
    app.config["KNOWLEDGE_URL_ALLOWED_NETWORKS"] = ["127.0.0.0/8"]
    app.config["KNOWLEDGE_URL_MAX_BYTES"] = 1000
    app.config["KNOWLEDGE_URL_TIMEOUT"] = 10
    admin.post(f"{K}/sources/{src['id']}/sync")
    ok = wait_state(admin, src["id"])
    assert ok["state"] == "synced", ok
    row = admin.get(f"{K}/sources/{src['id']}/rows").get_json()["data"][0]
    content = admin.get(f"{K}/sources/{src['id']}/rows/{row['id']}").get_json()["content"]
    assert content == "# Returns\n\nItems can be returned within 30 days." and "evil" not in content
    redirected = _url_source(admin, pages + "/redirect")
    admin.post(f"{K}/sources/{redirected['id']}/sync")
    followed = wait_state(admin, redirected["id"])
    assert followed["state"] == "synced", followed
    for path, reason in [("/missing", "HTTP 404"), ("/image", "not text"), ("/huge", "larger than"),
                         ("/slow", "could not")]:
        if path == "/slow":
            app.config["KNOWLEDGE_URL_TIMEOUT"] = 1  # the page takes 3 s
        bad = _url_source(admin, pages + path)
        admin.post(f"{K}/sources/{bad['id']}/sync")
        state = wait_state(admin, bad["id"])
        assert state["state"] == "sync_error" and reason in state["error"], (path, state)
    # a failed re-sync keeps the page that was there
    app.config["KNOWLEDGE_URL_ALLOWED_NETWORKS"] = []
    admin.post(f"{K}/sources/{src['id']}/sync")
    kept = wait_state(admin, src["id"])
    assert kept["state"] == "sync_error", kept
    assert admin.get(f"{K}/sources/{src['id']}/rows").get_json()["pagination"]["total"] == 1


@pytest.mark.parametrize("url", ["http://10.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]/x",
                                 "http://192.168.1.1/", "http://localhost:1/"])
def test_private_addresses_refused_without_a_request(url):
    from app.services.fetch import FetchError, check_url

    with pytest.raises(FetchError, match="non-public"):
        check_url(url)


def test_sync_due_claims_each_source_once(admin, app):
    src = admin.post(f"{K}/sources", json={"name": "daily", "sync_interval": "day"}).get_json()
    admin.post(f"{K}/sources/{src['id']}/rows", json={"rows": [{"content": "Daily news."}]})
    with app.app_context(), db.connection_context():
        knowledge.sync_source(src["id"])
        assert knowledge.sync_due() == []  # not due yet
    later = clock.now() + timedelta(days=1, minutes=1)
    clock.freeze(later)
    try:
        with app.app_context(), db.connection_context():
            knowledge.claim_sync(src["id"])  # another worker got it first
            assert knowledge.sync_due() == []
            KnowledgeSource.update(status="synced", sync_started_at=None).where(KnowledgeSource.id == src["id"]).execute()
        out = run_cli(app, "knowledge", "sync-due", "--json")
        assert out.exit_code == 0 and src["id"] in out.output
        with app.app_context(), db.connection_context():
            assert knowledge.sync_due() == []  # next one is a day later
            assert KnowledgeSource.get_by_id(src["id"]).next_sync_at > later
    finally:
        clock.freeze(None)


def test_a_tag_named_twice_is_one_link(admin):
    src = admin.post(f"{K}/sources", json={"name": "dup-tags"}).get_json()
    created = admin.post(f"{K}/sources/{src['id']}/rows", json={"rows": [
        {"name": "a.md", "content": "Refunds take 14 days.", "tags": ["billing", "billing", " billing "]}]})
    assert created.status_code == 201, created.get_json()
    row = admin.get(f"{K}/sources/{src['id']}/rows").get_json()["data"][0]
    assert row["tags"] == ["billing"]
    patched = admin.patch(f"{K}/sources/{src['id']}/rows",
                          json={"rows": [{"id": row["id"], "tags": ["x", "x", "billing"]}]})
    assert patched.status_code == 200, patched.get_json()
    assert sorted(admin.get(f"{K}/sources/{src['id']}/rows/{row['id']}").get_json()["tags"]) == ["billing", "x"]

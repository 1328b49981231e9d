"""The app factory, configuration layering, wsgi entry point, health, SQLite pragmas."""
import http.server
import os
import subprocess
import sys
import threading
import time

import pytest

from app import create_app
from app.storage.db import db


def test_defaults_are_not_testing(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATPORT_INSTANCE_PATH", str(tmp_path))
    app = create_app()
    assert not app.testing
    assert app.config["DATABASE_URL"] == "sqlite:///" + os.path.join(str(tmp_path), "chatport.db")
    assert os.path.exists(tmp_path / "chatport.db")


def test_config_layering(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text(
        "INSTANCE_NAME = 'from-file'\nPAGE_DEFAULT = 7\nMAX_MESSAGES = 11\nKEY_LAST_USED_INTERVAL = 5\n"
    )
    monkeypatch.setenv("CHATPORT_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("CHATPORT_PAGE_DEFAULT", "8")
    monkeypatch.setenv("CHATPORT_MAX_MESSAGES", "12")
    monkeypatch.setenv("CHATPORT_MODEL_ALIASES", '{"fast": "echo/echo"}')
    app = create_app({"MAX_MESSAGES": 13})
    assert app.config["INSTANCE_NAME"] == "from-file"          # file over default
    assert app.config["PAGE_DEFAULT"] == 8                      # env over file (JSON-parsed int)
    assert app.config["MAX_MESSAGES"] == 13                     # test config over env
    assert app.config["KEY_LAST_USED_INTERVAL"] == 5
    assert app.config["MODEL_ALIASES"] == {"fast": "echo/echo"}  # env JSON object
    assert app.config["PAGE_MAX"] == 100                        # untouched default


WSGI_SCRIPT = r"""
import sys, time
import wsgi
import gevent, requests
start = time.monotonic()
jobs = gevent.joinall([gevent.spawn(requests.get, sys.argv[1], timeout=10) for _ in range(4)], raise_error=True)
elapsed = time.monotonic() - start
print([job.value.status_code for job in jobs], elapsed, wsgi.app.test_client().get("/healthz").status_code)
"""


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        time.sleep(0.5)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_wsgi_worker_is_cooperative(tmp_path):
    """What gunicorn loads (``wsgi:app``) serves, and its blocking I/O yields to other greenlets:
    four 0.5 s upstream calls made at once take about 0.5 s, and gevent reports no module
    patched too late."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env.update({"CHATPORT_INSTANCE_PATH": str(tmp_path), "PYTHONPATH": root})
    try:
        out = subprocess.run([sys.executable, "-c", WSGI_SCRIPT, f"http://127.0.0.1:{server.server_port}/"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MonkeyPatchWarning" not in out.stderr, out.stderr[-2000:]
    statuses, elapsed, health = out.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert statuses == "[200, 200, 200, 200]" and health == "200", out.stdout
    assert float(elapsed) < 1.5, f"four 0.5 s calls took {elapsed} s: they ran one after another"


def test_healthz_reports_unreachable_database(sqlite_app):
    client = sqlite_app.test_client()
    assert client.get("/healthz").status_code == 200
    real = db.obj
    from peewee import SqliteDatabase

    db.initialize(SqliteDatabase("/nonexistent-dir/x/y.db"))
    try:
        resp = client.get("/healthz")
    finally:
        db.initialize(real)
    assert resp.status_code == 503
    assert resp.get_json()["database"] == "unreachable"


def test_sqlite_pragmas(sqlite_app):
    with sqlite_app.app_context(), db.connection_context():
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_unsupported_database_url(tmp_path):
    with pytest.raises(ValueError, match="unsupported database URL"):
        create_app({"DATABASE_URL": "mysql://x/y", "INSTANCE_PATH": str(tmp_path)})


def test_errors_are_json_never_html(anon):
    for method, path in [("GET", "/nope"), ("DELETE", "/healthz"), ("GET", "/api/v1/bots/x/y/z")]:
        resp = anon.request(method, path)
        assert resp.is_json, (method, path, resp.data[:80])
        assert b"<html" not in resp.data.lower()

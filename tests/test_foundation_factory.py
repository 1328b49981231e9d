"""The app factory, configuration layering, wsgi entry point, health, SQLite pragmas."""
import ast
import os

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


def test_wsgi_patches_gevent_first():
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "wsgi.py")
    tree = ast.parse(open(path).read())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    first, second = body[0], body[1]
    assert isinstance(first, ast.ImportFrom) and first.module == "gevent"
    assert isinstance(second, ast.Expr) and ast.unparse(second) == "monkey.patch_all()"


def test_wsgi_freezes_what_the_worker_loaded(tmp_path):
    """A worker's boot objects are out of the collector's reach (``gc.freeze()`` in wsgi.py)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env.update({"CHATPORT_INSTANCE_PATH": str(tmp_path), "PYTHONPATH": root})
    out = subprocess.run([sys.executable, "-c", "import gc, wsgi; print(gc.get_freeze_count())"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 50_000  # Flask, the SDKs and the app, frozen


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

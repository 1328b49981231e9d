"""The console's shape and security: / redirects, sign in with an admin key, server-side
sessions in a signed cookie, CSRF on every POST, headers, sign out, idle expiry, the sign-in
rate limit, CONSOLE_ENABLED and the instance's secret key."""
import os
import stat
from datetime import datetime, timedelta

import pytest

from app import clock
from app.storage.db import db
from app.storage.models import Bot, ConsoleSession

from .conftest import create_key, make_app, run_cli
from .console_client import Console, field_error, text_of

# Every page (GET) and a form of each page group (POST): none answers without a session.
PAGES = ["/console/", "/console/bots", "/console/bots/new", "/console/keys", "/console/playground",
         "/console/conversations", "/console/knowledge", "/console/usage", "/console/usage.csv"]
FORMS = ["/console/bots/new", "/console/keys", "/console/playground", "/console/knowledge", "/console/sign-out"]


@pytest.fixture
def console(app):
    return Console(app.test_client())


@pytest.fixture
def signed_in(app, console, admin_key):
    console.sign_in(admin_key)
    return console


def _count(app, model):
    with app.app_context(), db.connection_context():
        return model.select().count()


def test_root_redirects_to_the_console_and_the_console_to_sign_in(app):
    client = app.test_client()
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/console/"
    resp = client.get("/console/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/console/sign-in?next=/console/"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_session(console, path):
    resp = console.get(path)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/console/sign-in?next=")


@pytest.mark.parametrize("path", FORMS)
def test_every_form_needs_a_session_and_changes_nothing(app, console, path):
    before = _count(app, Bot)
    resp = console.post(path, {"name": "x", "model": "echo/echo"})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/console/sign-in")
    assert _count(app, Bot) == before


def test_sign_in_opens_a_server_side_session_in_a_signed_http_only_cookie(app, console, admin_key):
    resp = console.sign_in(admin_key)
    assert resp.headers["Location"] == "/console/"
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("chatport_console="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # plain http
    value = cookie.split(";")[0].split("=", 1)[1]
    assert "." in value  # itsdangerous: payload.signature
    with app.app_context(), db.connection_context():
        row = ConsoleSession.get()
        assert len(row.id) == 64 and row.id not in value  # only the token's hash is stored
    page = console.get("/console/")
    assert page.status_code == 200 and "Overview" in text_of(page)


def test_a_tampered_cookie_opens_nothing(app, console, admin_key):
    console.sign_in(admin_key)
    raw = console.client.get_cookie("chatport_console").value
    payload, _, signature = raw.rpartition(".")
    console.client.set_cookie("chatport_console", payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:])
    assert console.get("/console/").status_code == 302


def test_the_cookie_is_secure_over_https(app, admin_key):
    console = Console(app.test_client())
    console.client.get("/console/sign-in", base_url="https://localhost")
    page = console.client.get("/console/sign-in", base_url="https://localhost")
    token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    resp = console.client.post("/console/sign-in", base_url="https://localhost",
                               data={"key": admin_key, "csrf_token": token})
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("chatport_console="))
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_bad_keys_show_the_error_on_the_form(app, console):
    console.get("/console/sign-in")
    resp = console.post("/console/sign-in", {"key": "cp_not-a-key"})
    assert resp.status_code == 401
    assert "Invalid API key" in field_error(resp, "key")
    resp = console.post("/console/sign-in", {"key": ""})
    assert resp.status_code == 400 and field_error(resp, "key")
    client_key = create_key(app, kind="client")
    resp = console.post("/console/sign-in", {"key": client_key})
    assert resp.status_code == 403 and "admin key" in field_error(resp, "key")
    assert _count(app, ConsoleSession) == 0
    assert console.get("/console/").status_code == 302


def test_sign_in_without_the_csrf_token_is_refused(app, console, admin_key):
    console.get("/console/sign-in")
    for token in (False, "forged"):
        resp = console.post("/console/sign-in", {"key": admin_key}, csrf=token)
        assert resp.status_code == 400 and "security token" in text_of(resp)
    assert _count(app, ConsoleSession) == 0


def test_posts_without_the_session_csrf_token_change_nothing(app, signed_in):
    for token in (False, "forged"):
        resp = signed_in.post("/console/bots/new", {"name": "Sneaky", "model": "echo/echo"}, csrf=token)
        assert resp.status_code == 400 and "security token" in text_of(resp)
    assert _count(app, Bot) == 0
    resp = signed_in.post("/console/sign-out", csrf=False)
    assert resp.status_code == 400 and _count(app, ConsoleSession) == 1
    resp = signed_in.post("/console/bots/new", {"name": "Fine", "model": "echo/echo"})
    assert resp.status_code == 302 and _count(app, Bot) == 1


def test_pages_carry_the_security_headers(signed_in):
    for path in ("/console/", "/console/sign-in", "/console/no-such-page"):
        resp = signed_in.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert resp.headers["Cache-Control"] == "no-store"
    page = signed_in.get("/console/").get_data(as_text=True)
    assert "<script>" not in page and " style=" not in page and "<style" not in page
    assert signed_in.get("/console/static/console.js").status_code == 200


def test_an_unknown_console_page_is_an_html_404(signed_in):
    resp = signed_in.get("/console/no-such-page")
    assert resp.status_code == 404 and resp.mimetype == "text/html"


def test_sign_out_ends_the_session(app, signed_in):
    cookie = signed_in.client.get_cookie("chatport_console").value
    resp = signed_in.post("/console/sign-out")
    assert resp.status_code == 302 and resp.headers["Location"] == "/console/sign-in"
    assert _count(app, ConsoleSession) == 0
    signed_in.client.set_cookie("chatport_console", cookie)  # the old cookie, replayed
    assert signed_in.get("/console/").status_code == 302


def test_sessions_end_after_the_idle_timeout(database_url, tmp_path):
    app = make_app(database_url, tmp_path, CONSOLE_IDLE_TIMEOUT=600)
    console = Console(app.test_client())
    start = datetime(2026, 5, 1, 12, 0, 0)
    clock.freeze(start)
    try:
        console.sign_in(create_key(app, kind="admin"))
        clock.freeze(start + timedelta(seconds=500))
        assert console.get("/console/").status_code == 200  # activity keeps it alive...
        clock.freeze(start + timedelta(seconds=1000))
        assert console.get("/console/").status_code == 200  # ...measured from the last request
        clock.freeze(start + timedelta(seconds=1700))
        resp = console.get("/console/")
        assert resp.status_code == 302 and "sign-in" in resp.headers["Location"]
        assert _count(app, ConsoleSession) == 0
    finally:
        clock.freeze(None)


def test_sessions_end_at_their_lifetime_however_busy(database_url, tmp_path):
    app = make_app(database_url, tmp_path, CONSOLE_IDLE_TIMEOUT=600, CONSOLE_SESSION_LIFETIME=3600)
    console = Console(app.test_client())
    start = datetime(2026, 5, 1, 12, 0, 0)
    try:
        clock.freeze(start)
        console.sign_in(create_key(app, kind="admin"))
        for minutes in range(5, 60, 5):
            clock.freeze(start + timedelta(minutes=minutes))
            assert console.get("/console/").status_code == 200
        clock.freeze(start + timedelta(minutes=61))
        assert console.get("/console/").status_code == 302
    finally:
        clock.freeze(None)


def test_a_disabled_or_deleted_key_ends_its_sessions(app, signed_in, admin_key):
    from app.services import keys

    with app.app_context(), db.connection_context():
        key_id = ConsoleSession.get().key_id
        keys.set_enabled(key_id, False)
    assert signed_in.get("/console/").status_code == 302
    with app.app_context(), db.connection_context():
        keys.set_enabled(key_id, True)
    signed_in.sign_in(admin_key)
    with app.app_context(), db.connection_context():
        keys.delete_key(key_id)
        assert ConsoleSession.select().count() == 0  # cascaded with the key
    assert signed_in.get("/console/").status_code == 302


def test_sign_in_attempts_are_rate_limited_per_address(database_url, tmp_path):
    app = make_app(database_url, tmp_path, CONSOLE_SIGNIN_PER_MINUTE=3)
    key = create_key(app, kind="admin")
    console = Console(app.test_client())
    console.get("/console/sign-in")
    for _ in range(3):
        assert console.post("/console/sign-in", {"key": "cp_wrong"}).status_code == 401
    resp = console.post("/console/sign-in", {"key": key})  # even the right key, for now
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "Too many sign-in attempts" in text_of(resp)
    other = Console(app.test_client())  # another address has its own allowance
    other.get("/console/sign-in")
    resp = other.post("/console/sign-in", {"key": key}, environ_overrides={"REMOTE_ADDR": "10.1.2.3"})
    assert resp.status_code == 302


def test_behind_a_proxy_the_limit_counts_the_forwarded_address(database_url, tmp_path):
    def attempt(console, forwarded, key="cp_wrong"):
        return console.post("/console/sign-in", {"key": key}, environ_overrides={"REMOTE_ADDR": "127.0.0.1"},
                            headers={"X-Forwarded-For": forwarded})

    app = make_app(database_url, tmp_path, CONSOLE_SIGNIN_PER_MINUTE=2, PROXY_HOPS=1)
    key = create_key(app, kind="admin")
    console = Console(app.test_client())
    console.get("/console/sign-in")
    for _ in range(2):  # the client claims a new address each time; only the proxy's last hop counts
        assert attempt(console, f"198.51.100.{_}, 203.0.113.7").status_code == 401
    assert attempt(console, "198.51.100.9, 203.0.113.7", key).status_code == 429
    assert attempt(console, "203.0.113.8", key).status_code == 302  # another client behind the proxy

    app = make_app(database_url, tmp_path, CONSOLE_SIGNIN_PER_MINUTE=2)  # PROXY_HOPS 0: the header is ignored
    console = Console(app.test_client())
    console.get("/console/sign-in")
    for n in range(2):
        assert attempt(console, f"203.0.113.{20 + n}").status_code == 401
    assert attempt(console, "203.0.113.30", key).status_code == 429


def test_next_is_kept_and_never_leaves_the_console(app, console, admin_key):
    console.get("/console/sign-in?next=/console/keys")
    resp = console.post("/console/sign-in", {"key": admin_key, "next": "/console/keys"})
    assert resp.headers["Location"] == "/console/keys"
    for target in ("https://evil.example/", "//evil.example/console", "/api/v1/bots", "/console\\..\\x"):
        console.get("/console/")
        assert console.post("/console/sign-out").status_code == 302
        console.get("/console/sign-in")
        resp = console.post("/console/sign-in", {"key": admin_key, "next": target})
        assert resp.headers["Location"] == "/console/", target


def test_console_disabled_serves_neither_the_console_nor_the_redirect(database_url, tmp_path):
    app = make_app(database_url, tmp_path, CONSOLE_ENABLED=False)
    client = app.test_client()
    assert client.get("/").status_code == 404
    assert client.get("/console/").status_code == 404
    assert client.get("/console/sign-in").status_code == 404


def test_console_pages_write_no_usage_rows(app, signed_in):
    from app.storage.models import Usage

    signed_in.get("/console/")
    signed_in.get("/console/bots")
    signed_in.client.get("/")
    assert _count(app, Usage) == 0


def test_the_secret_key_is_generated_into_the_instance_folder(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path)
    path = os.path.join(app.instance_path, "secret_key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = open(path).read().strip()
    assert len(secret) == 64 and app.config["SECRET_KEY"] == secret
    again = make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path)  # read, not replaced, at start
    assert again.config["SECRET_KEY"] == secret
    set_one = make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path, SECRET_KEY="from-config")
    assert set_one.config["SECRET_KEY"] == "from-config"


def test_chatport_init_writes_the_secret_key(tmp_path):
    from flask import Flask

    app = make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path, SECRET_KEY="set")
    path = os.path.join(app.instance_path, "secret_key")
    assert not os.path.exists(path)  # a configured key: no file needed at start
    app.config["SECRET_KEY"] = None
    result = run_cli(app, "init")
    assert result.exit_code == 0 and os.path.exists(path)
    assert isinstance(app, Flask)


def test_schema_15_adds_the_session_table_idempotently(database_url, tmp_path):
    from app.storage import migrations
    from app.storage.models import SchemaVersion

    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        db.drop_tables([ConsoleSession])
        SchemaVersion.update(version=13).execute()
    app2 = make_app(database_url, tmp_path)
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert ConsoleSession.select().count() == 0
        migrations.STEPS[15](migrations._migrator())  # again: nothing to do, no error

"""Shared fixtures: an app on a real SQLite file (and on PostgreSQL when
CHATPORT_TEST_POSTGRES_URL is set), a client, keys, and a helper that
starts a real ``chatport serve`` (gunicorn + gevent) process.
"""
import os
import uuid
from contextlib import contextmanager

import pytest

from app import create_app
from app.storage.db import db

PG_URL = os.environ.get("CHATPORT_TEST_POSTGRES_URL")
PG_SKIP_REASON = "CHATPORT_TEST_POSTGRES_URL is not set: PostgreSQL variant skipped"


# The fake upstreams the suite starts listen on 127.0.0.1: let providers reach loopback (as an
# operator running Ollama on the same machine would). Tests of the refusal set it to [].
LOOPBACK_PROVIDERS = '["127.0.0.0/8"]'


@pytest.fixture(scope="module")
def upstream():
    """A fake OpenAI server for the module's ``chatport serve`` (``tests.servers.upstream_env``)."""
    from .servers import fake_upstream

    with fake_upstream() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests see only the configuration they set (and loopback providers allowed)."""
    for name in list(os.environ):
        if name.startswith("CHATPORT_") and name != "CHATPORT_TEST_POSTGRES_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATPORT_PROVIDER_ALLOWED_NETWORKS", LOOPBACK_PROVIDERS)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request):
    """Both databases: storage and API tests run on each."""
    if request.param == "postgres" and not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    return request.param


def pg_schema_url(schema):
    """The test server URL with ``search_path`` set to ``schema``."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def database_url(backend, tmp_path):
    """A fresh database: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/chatport.db"
        return
    schema = "t_" + uuid.uuid4().hex[:12]
    with _pg_space(f"CREATE SCHEMA {schema}", f"DROP SCHEMA {schema} CASCADE", pg_schema_url(schema)) as url:
        yield url


@contextmanager
def _pg_space(create, drop, url):
    """Run the statement ``create``, yield ``url``; then close the app's connections and run
    ``drop``."""
    conn = _pg_admin()
    conn.cursor().execute(create)
    try:
        yield url
    finally:
        if db.obj is not None and hasattr(db.obj, "close_all"):
            db.obj.close_all()
        conn.cursor().execute(drop)
        conn.close()


def _pg_url_of(name):
    """``CHATPORT_TEST_POSTGRES_URL`` naming the database ``name`` instead."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(PG_URL)._replace(path="/" + name))


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_template(tmp_path_factory):
    """A PostgreSQL database migrated once per test process, which each test's database is
    copied from (``CREATE DATABASE ... TEMPLATE``: 0.06 s, where migrating a new schema took 0.4 s).
    It takes no connections (autovacuum's included), which a copy needs; dropped at the end."""
    name = f"chatport_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = _pg_admin()
    conn.cursor().execute(f"CREATE DATABASE {name}")
    try:
        make_app(_pg_url_of(name), tmp_path_factory.mktemp("pg-template"))
        db.obj.close_all()
        conn.cursor().execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        yield name
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


@pytest.fixture
def app_database_url(backend, tmp_path, request):
    """A database at the current schema for the ``app`` and ``configured`` fixtures: a new
    SQLite file (migrated by the app, which costs little there), or on PostgreSQL a copy of
    ``pg_template``, dropped afterwards. ``database_url`` gives an empty one."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/chatport.db"
        return
    template = request.getfixturevalue("pg_template")
    name = "t_" + uuid.uuid4().hex[:12]
    with _pg_space(f"CREATE DATABASE {name} TEMPLATE {template}", f"DROP DATABASE {name} WITH (FORCE)",
                   _pg_url_of(name)) as url:
        yield url


def make_app(database_url, tmp_path, **config):
    return create_app({
        "TESTING": True,
        "DATABASE_URL": database_url,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "ECHO_DIRECTIVES": True,  # tests shape echo streams with [echo tokens=N delay=S]
        **config,
    })


@pytest.fixture
def app(app_database_url, tmp_path):
    application = make_app(app_database_url, tmp_path)
    yield application
    if not db.is_closed():
        db.close()


@pytest.fixture
def sqlite_app(tmp_path):
    """An app on a SQLite file only (for tests about SQLite itself)."""
    application = make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path)
    yield application
    if not db.is_closed():
        db.close()


class Api:
    """A test client that sends a bearer key (or none) with every request."""

    def __init__(self, client, key=None, headers=None):
        self.client = client
        self.key = key
        self.headers = dict(headers or {})

    def _headers(self, extra):
        headers = dict(self.headers)
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        headers.update(extra or {})
        return headers

    def request(self, method, path, headers=None, **kw):
        """Send, read the whole body and close the response (as a server does after the last
        byte: that is when the usage row is written)."""
        resp = self.client.open(path, method=method, headers=self._headers(headers), **kw)
        resp.get_data()
        resp.close()
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def create_key(app, **kw):
    """Create an API key directly through the service; return its plaintext."""
    from app.services.keys import create_key as _create

    with app.app_context(), db.connection_context():
        _, plaintext = _create(**kw)
    return plaintext


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin_key(app):
    return create_key(app, kind="admin", name="test admin")


@pytest.fixture
def admin(client, admin_key):
    """The chatport API as an admin."""
    return Api(client, admin_key)


@pytest.fixture
def anon(client):
    """The chatport API without a key."""
    return Api(client)


def run_cli(app, *args):
    """Invoke the ``chatport`` command against ``app`` through Flask's CliRunner."""
    from flask.cli import ScriptInfo

    from app.cli import main

    return app.test_cli_runner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))


@pytest.fixture
def configured(app_database_url, tmp_path):
    """``configured(**settings)``: an app with those settings and an admin ``Api`` on it."""
    def build(**settings):
        application = make_app(app_database_url, tmp_path, **settings)
        return application, Api(application.test_client(), create_key(application, kind="admin"))

    yield build
    if not db.is_closed():
        db.close()


@pytest.fixture
def frozen():
    """The clock frozen a minute before a month ends (2026-03-31 23:59 UTC)."""
    from datetime import datetime

    from app import clock

    start = datetime(2026, 3, 31, 23, 59, 0)
    clock.freeze(start)
    yield start
    clock.freeze(None)

"""API keys: stored hashed, shown once, disable/enable/delete, last_used_at, env admin key."""
import glob
from datetime import timedelta

from app import clock
from app.storage.db import db
from app.storage.models import ApiKey

from .conftest import Api, create_key, make_app


def test_no_plaintext_secret_on_disk(sqlite_app, tmp_path):
    client = sqlite_app.test_client()
    admin = Api(client, create_key(sqlite_app, kind="admin"))
    created = admin.post("/api/v1/keys", json={"name": "k", "kind": "client"}).get_json()
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    channel = admin.post(f"/api/v1/bots/{bot['id']}/channels", json={}).get_json()
    secrets = [admin.key, created["key"], channel["secret"]]
    with sqlite_app.app_context(), db.connection_context():
        raw_before_checkpoint = b"".join(open(p, "rb").read() for p in glob.glob(str(tmp_path / "chatport.db*")))
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = raw_before_checkpoint + open(tmp_path / "chatport.db", "rb").read()
    for secret in secrets:
        assert secret.encode() not in raw
        assert secret[-20:].encode() not in raw
    # the hash is there, so the test looked at the right file
    import hashlib

    assert hashlib.sha256(created["key"].encode()).hexdigest().encode() in raw


def test_key_shown_once(admin):
    created = admin.post("/api/v1/keys", json={"name": "ci"}).get_json()
    assert created["key"].startswith("cp_") and len(created["key"]) > 40
    assert created["prefix"] == created["key"][:10] and created["last4"] == created["key"][-4:]
    shown = admin.get(f"/api/v1/keys/{created['id']}").get_json()
    listed = admin.get("/api/v1/keys?limit=100").get_json()["data"]
    assert "key" not in shown and all("key" not in k for k in listed)
    assert created["key"] not in admin.get("/api/v1/keys?limit=100").get_data(as_text=True)


def test_disable_enable_delete(admin, client):
    created = admin.post("/api/v1/keys", json={"name": "x", "kind": "admin"}).get_json()
    other = Api(client, created["key"])
    assert other.get("/api/v1/account").status_code == 200
    assert admin.post(f"/api/v1/keys/{created['id']}/disable").get_json()["enabled"] is False
    resp = other.get("/api/v1/account")
    assert resp.status_code == 401 and resp.get_json()["message"] == "This API key is disabled"
    admin.post(f"/api/v1/keys/{created['id']}/enable")
    assert other.get("/api/v1/account").status_code == 200
    assert admin.delete(f"/api/v1/keys/{created['id']}").status_code == 204
    assert other.get("/api/v1/account").status_code == 401
    assert admin.delete(f"/api/v1/keys/{created['id']}").status_code == 404


def test_auth_failures(anon, client, app):
    assert anon.get("/api/v1/bots").status_code == 401
    assert Api(client, "cp_wrong").get("/api/v1/bots").status_code == 401
    basic = anon.get("/api/v1/bots", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401
    key = create_key(app, kind="admin")
    assert anon.get(f"/api/v1/bots?api_key={key}").status_code == 401
    assert anon.get(f"/api/v1/bots?key={key}").status_code == 401
    client_key = create_key(app, kind="client")
    for path in ("/api/v1/bots", "/api/v1/keys", "/api/v1/users", "/api/v1/account"):
        resp = Api(client, client_key).get(path)
        assert resp.status_code == 403, path
        assert resp.get_json()["error"] == "forbidden"


def test_last_used_at_is_throttled(admin, app):
    with app.app_context(), db.connection_context():
        row = ApiKey.get(ApiKey.prefix == admin.key[:10])
    assert row.last_used_at is None
    start = clock.now()
    clock.freeze(start)
    try:
        admin.get("/api/v1/account")
        with app.app_context(), db.connection_context():
            first = ApiKey.get_by_id(row.id).last_used_at
        assert first == start
        clock.freeze(start + timedelta(seconds=30))
        admin.get("/api/v1/account")
        with app.app_context(), db.connection_context():
            assert ApiKey.get_by_id(row.id).last_used_at == first  # within a minute: no write
        clock.freeze(start + timedelta(seconds=61))
        admin.get("/api/v1/account")
        with app.app_context(), db.connection_context():
            assert ApiKey.get_by_id(row.id).last_used_at == start + timedelta(seconds=61)
    finally:
        clock.freeze(None)


def test_env_admin_key(database_url, tmp_path, monkeypatch):
    secret = "cp_env_admin_key_for_deployments_0123456789"
    monkeypatch.setenv("CHATPORT_ADMIN_KEY", secret)
    app = make_app(database_url, tmp_path)
    make_app(database_url, tmp_path)  # second start: no duplicate
    api = Api(app.test_client(), secret)
    assert api.get("/api/v1/account").status_code == 200
    with app.app_context(), db.connection_context():
        rows = list(ApiKey.select().where(ApiKey.name == "CHATPORT_ADMIN_KEY"))
        assert len(rows) == 1 and rows[0].kind == "admin" and rows[0].key_hash != secret


def test_scoped_key_validation(admin):
    resp = admin.post("/api/v1/keys", json={"kind": "client", "bot_ids": ["nope"]})
    assert resp.status_code == 400 and "bot_ids" in resp.get_json()["errors"]
    resp = admin.post("/api/v1/keys", json={"kind": "admin", "bot_ids": ["x"]})
    assert resp.status_code == 400
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    ok = admin.post("/api/v1/keys", json={"kind": "client", "bot_ids": [bot["id"]]})
    assert ok.status_code == 201 and ok.get_json()["bot_ids"] == [bot["id"]]

"""Management API: bots, keys, channels, users, account — happy paths and bad input.

Every bad request answers the documented error JSON and changes nothing.
"""
import json

import pytest

from app.storage.db import db
from app.storage.models import ALL_MODELS

from .conftest import Api, create_key


def snapshot(app):
    """Every row of every table: proof that a rejected request changed nothing."""
    with app.app_context(), db.connection_context():
        out = {}
        for model in ALL_MODELS:
            if model.__name__ in ("SchemaVersion", "Usage", "RateLimitState", "CreditCounter", "StreamLease"):
                continue
            rows = [dict(r) for r in model.select().dicts()]
            for r in rows:
                r.pop("last_used_at", None)  # using a key is not a change to the data
            out[model.__name__] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
        return out


def assert_error(resp, status, field=None):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.is_json
    body = resp.get_json()
    assert body["code"] == status and body["message"] and body["status"] and body["error"]
    if field:
        assert field in body.get("errors", {}), body
        assert field in body["message"]
    return body


@pytest.fixture
def bot(admin):
    return admin.post("/api/v1/bots", json={"name": "Support", "greeting": "Hi"}).get_json()


def test_bot_crud(admin):
    created = admin.post("/api/v1/bots", json={
        "name": "Support", "instructions": "Be brief.", "model": "echo/echo", "temperature": 0.3,
        "max_tokens": 200, "greeting": "Hello", "knowledge": {"top_k": 3}, "enabled": True})
    assert created.status_code == 201
    bot = created.get_json()
    assert bot["created_at"].endswith("Z") and len(bot["created_at"]) == 24
    assert admin.get(f"/api/v1/bots/{bot['id']}").get_json()["instructions"] == "Be brief."
    updated = admin.patch(f"/api/v1/bots/{bot['id']}", json={"name": "Help", "enabled": False})
    assert updated.get_json()["name"] == "Help" and updated.get_json()["enabled"] is False
    assert admin.delete(f"/api/v1/bots/{bot['id']}").status_code == 204
    assert_error(admin.get(f"/api/v1/bots/{bot['id']}"), 404)
    assert_error(admin.delete(f"/api/v1/bots/{bot['id']}"), 404)


BAD_BOT_BODIES = [
    ({"instructions": "no name"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": 5}, "name"),
    ({"name": "ok", "temperature": "hot"}, "temperature"),
    ({"name": "ok", "temperature": 3}, "temperature"),
    ({"name": "ok", "max_tokens": 0}, "max_tokens"),
    ({"name": "ok", "instructions": "x" * 40000}, "instructions"),
    ({"name": "ok", "unknown": 1}, "unknown"),
    ({"name": "ok", "enabled": "maybe"}, "enabled"),
]


@pytest.mark.parametrize("body,field", BAD_BOT_BODIES)
def test_bad_bot_bodies_change_nothing(admin, app, bot, body, field):
    before = snapshot(app)
    assert_error(admin.post("/api/v1/bots", json=body), 400, field)
    assert_error(admin.patch(f"/api/v1/bots/{bot['id']}", json={**body, "name": body.get("name", "")}), 400)
    assert snapshot(app) == before


def test_malformed_json_and_wrong_content(admin, app):
    before = snapshot(app)
    resp = admin.post("/api/v1/bots", data="{not json", headers={"Content-Type": "application/json"})
    assert_error(resp, 400)
    resp = admin.post("/api/v1/bots", data="[1, 2]", headers={"Content-Type": "application/json"})
    assert_error(resp, 400)
    assert snapshot(app) == before


def test_oversized_body_is_413(admin, app):
    before = snapshot(app)
    big = json.dumps({"name": "x", "instructions": "y" * (app.config["MAX_CONTENT_LENGTH"] + 10)})
    resp = admin.post("/api/v1/bots", data=big, headers={"Content-Type": "application/json"})
    assert_error(resp, 413)
    assert snapshot(app) == before


def test_wrong_method_is_405(admin, bot):
    for method, path in [("PUT", "/api/v1/bots"), ("POST", f"/api/v1/bots/{bot['id']}"),
                         ("DELETE", "/api/v1/account"), ("PUT", "/api/v1/keys")]:
        body = assert_error(admin.request(method, path), 405)
        assert body["error"] == "method_not_allowed"


def test_channels(admin, client, bot):
    base = f"/api/v1/bots/{bot['id']}/channels"
    created = admin.post(base, json={"name": "site"})
    assert created.status_code == 201
    channel = created.get_json()
    assert channel["secret"].startswith("cps_") and channel["bot_id"] == bot["id"]
    assert "secret" not in admin.get(f"{base}/{channel['id']}").get_json()
    assert "secret" not in admin.get(base).get_json()["data"][0]
    assert admin.post(f"{base}/{channel['id']}/disable").get_json()["enabled"] is False
    assert admin.post(f"{base}/{channel['id']}/enable").get_json()["enabled"] is True
    rotated = admin.post(f"{base}/{channel['id']}/rotate-secret").get_json()
    assert rotated["secret"] != channel["secret"]
    renamed = admin.patch(f"{base}/{channel['id']}", json={"name": "web"}).get_json()
    assert renamed["name"] == "web"
    assert admin.delete(f"{base}/{channel['id']}").status_code == 204
    assert_error(admin.get(f"{base}/{channel['id']}"), 404)
    assert_error(admin.post("/api/v1/bots/nope/channels", json={}), 404)


def test_channel_secret_authentication(admin, app, bot):
    from app.errors import Forbidden, NotFound
    from app.services.channels import authenticate_channel

    base = f"/api/v1/bots/{bot['id']}/channels"
    channel = admin.post(base, json={}).get_json()
    rotated = admin.post(f"{base}/{channel['id']}/rotate-secret").get_json()
    with app.app_context(), db.connection_context():
        assert authenticate_channel(channel["id"], rotated["secret"]).id == channel["id"]
        with pytest.raises(Forbidden):
            authenticate_channel(channel["id"], channel["secret"])  # the old secret
        with pytest.raises(NotFound):
            authenticate_channel("unknown", rotated["secret"])
    admin.post(f"{base}/{channel['id']}/disable")
    with app.app_context(), db.connection_context():
        with pytest.raises(NotFound):
            authenticate_channel(channel["id"], rotated["secret"])


def test_bad_channel_and_key_input(admin, app, bot):
    before = snapshot(app)
    base = f"/api/v1/bots/{bot['id']}/channels"
    assert_error(admin.post(base, json={"name": ""}), 400, "name")
    assert_error(admin.post(base, json={"secret": "mine"}), 400, "secret")
    assert_error(admin.patch(f"{base}/nope", json={"enabled": False}), 404)
    assert_error(admin.post("/api/v1/keys", json={"kind": "root"}), 400, "kind")
    assert_error(admin.post("/api/v1/keys", json={"key_hash": "x"}), 400, "key_hash")
    assert_error(admin.post("/api/v1/keys", json={"credit_quota": -1}), 400, "credit_quota")
    assert_error(admin.patch("/api/v1/keys/nope", json={"name": "x"}), 404)
    assert_error(admin.post("/api/v1/keys/nope/disable"), 404)
    assert snapshot(app) == before


def test_users(admin, app):
    created = admin.post("/api/v1/users", json={"external_id": "alice", "properties": {"plan": "pro"}})
    assert created.status_code == 200
    user = created.get_json()
    merged = admin.post("/api/v1/users", json={"external_id": "alice", "properties": {"lang": "en"}})
    assert merged.get_json()["id"] == user["id"]
    assert merged.get_json()["properties"] == {"plan": "pro", "lang": "en"}
    assert admin.get("/api/v1/users/alice").get_json()["id"] == user["id"]
    replaced = admin.patch(f"/api/v1/users/{user['id']}", json={"properties": {"x": 1}, "replace": True})
    assert replaced.get_json()["properties"] == {"x": 1}
    before = snapshot(app)
    assert_error(admin.post("/api/v1/users", json={"properties": {}}), 400, "external_id")
    assert_error(admin.post("/api/v1/users", json={"external_id": "bob", "properties": [1]}), 400, "properties")
    assert_error(admin.post("/api/v1/users", json={"external_id": "bob",
                                                   "properties": {f"k{i}": i for i in range(51)}}), 400)
    assert_error(admin.patch("/api/v1/users/nope", json={"properties": {}}), 404)
    assert snapshot(app) == before
    assert admin.delete(f"/api/v1/users/{user['id']}").status_code == 204
    assert_error(admin.delete(f"/api/v1/users/{user['id']}"), 404)


def test_account(admin, bot):
    body = admin.get("/api/v1/account").get_json()
    assert body["instance"] == "chatport" and body["version"]
    assert body["counts"]["bots"] == 1 and body["counts"]["api_keys"] == 1
    assert body["limits"]["page_max"] == 100


def test_scoped_client_key_sees_nothing_of_management(app, client, admin, bot):
    scoped = Api(client, create_key(app, kind="client", bot_ids=[bot["id"]]))
    for method, path in [("GET", f"/api/v1/bots/{bot['id']}"), ("GET", f"/api/v1/bots/{bot['id']}/channels"),
                         ("PATCH", f"/api/v1/bots/{bot['id']}"), ("POST", "/api/v1/keys")]:
        resp = scoped.request(method, path, json={})
        assert_error(resp, 403)
        assert "instructions" not in resp.get_data(as_text=True)


def test_deleted_bot_cascades(admin, app, bot):
    admin.post(f"/api/v1/bots/{bot['id']}/channels", json={})
    admin.delete(f"/api/v1/bots/{bot['id']}")
    assert admin.get("/api/v1/account").get_json()["counts"]["channels"] == 0

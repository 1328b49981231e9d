"""Smoke: the app builds, answers health, and a real server serves."""
from app.storage.db import db
from app.storage.models import Bot

from .servers import chatport_server


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "database": "ok"}


def test_admin_creates_and_lists_bot(admin, app):
    resp = admin.post("/api/v1/bots", json={"name": "Support", "instructions": "Be kind."})
    assert resp.status_code == 201, resp.get_json()
    bot_id = resp.get_json()["id"]
    listed = admin.get("/api/v1/bots").get_json()
    assert [b["id"] for b in listed["data"]] == [bot_id]
    with app.app_context(), db.connection_context():
        assert Bot.get_by_id(bot_id).instructions == "Be kind."


def test_real_server_serves(tmp_path):
    import requests

    with chatport_server(tmp_path / "inst") as base:
        assert requests.get(base + "/healthz", timeout=5).json()["status"] == "ok"

"""REST conventions on every route: a wrong method is a 405 in the dialect's own shape;
limits on what a request may ask are enforced before any work is done."""
import re

import pytest

from .conftest import Api, create_key

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def shape_of(path, app):
    if path.startswith("/console/api/"):  # the console's own JSON (docs/console.md)
        return lambda b: b["error"]["code"] == "method_not_allowed" and b["error"]["message"]
    if path.startswith(app.config["CHANNEL_API_PREFIX"]):
        return lambda b: b["success"] is False and b["message"]
    if any(path.startswith(app.config["API_PREFIX"] + p) for p in (
            "/chat", "/create-chatbot", "/update-chatbot", "/get-chatbots", "/delete-chatbot", "/get-conversations")):
        return lambda b: set(b) == {"message"}
    if path.startswith((app.config["OPENAI_PREFIX"] + "/flows", app.config["OPENAI_PREFIX"] + "/generate")):
        return lambda b: b["error"] is True and b["code"] == 405 and b["message"]
    if path.startswith(app.config["HOOKS_PREFIX"] + "/"):
        return lambda b: b["success"] is False and b["error"]["message"]
    if path.startswith(app.config["OPENAI_PREFIX"] + "/"):
        return lambda b: b["error"]["type"] and b["error"]["message"]
    return lambda b: b["code"] == 405 and b["error"] == "method_not_allowed"


def test_wrong_method_is_405_in_dialect_shape_on_every_route(sqlite_app):
    client = Api(sqlite_app.test_client(), create_key(sqlite_app, kind="admin"))
    checked = 0
    allowed = {}
    for rule in sqlite_app.url_map.iter_rules():
        allowed.setdefault(rule.rule, set()).update(rule.methods)
    for rule in sqlite_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        wrong = [m for m in METHODS if m not in allowed[rule.rule]]
        if not wrong:
            continue
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        resp = client.request(wrong[0], path)
        assert resp.status_code == 405, (wrong[0], path, resp.status_code)
        assert wrong[0] not in resp.headers.get("Allow", "")
        if path.startswith("/console/") and not path.startswith("/console/api/"):
            assert resp.mimetype == "text/html", path  # the console's pages are for a browser
            checked += 1
            continue
        assert resp.is_json and b"<html" not in resp.data.lower(), path
        assert shape_of(path, sqlite_app)(resp.get_json()), (path, resp.get_json())
        assert wrong[0] not in resp.headers.get("Allow", "")
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize("setting,value,path,body,status", [
    ("MAX_MESSAGES", 2, "/v1/chat/completions",
     {"model": "echo/echo", "messages": [{"role": "user", "content": "a"}] * 3}, 400),
    ("MAX_MESSAGE_LENGTH", 10, "/v1/chat/completions",
     {"model": "echo/echo", "messages": [{"role": "user", "content": "x" * 11}]}, 400),
    ("MODEL_MAX_CONTENT_LENGTH", 200, "/v1/chat/completions",
     {"model": "echo/echo", "messages": [{"role": "user", "content": "x" * 300}]}, 413),
    ("MAX_CONTENT_LENGTH", 200, "/v1/flows/f/generate", {"inputs": {"x": "y" * 300}}, 413),
])
def test_request_limits_are_configurable(sqlite_app, setting, value, path, body, status):
    from app.storage.db import db
    from app.storage.models import Usage

    sqlite_app.config[setting] = value
    client = Api(sqlite_app.test_client(), create_key(sqlite_app, kind="admin"))
    resp = client.post(path, json=body)
    error = resp.get_json()
    assert resp.status_code == status and (error["error"]["message"] if isinstance(error["error"], dict)
                                           else error["message"])
    with sqlite_app.app_context(), db.connection_context():
        assert Usage.select().where(Usage.model.is_null(False)).count() == 0  # no model was called


def test_page_size_bounds(sqlite_app):
    client = Api(sqlite_app.test_client(), create_key(sqlite_app, kind="admin"))
    assert client.get("/api/v1/conversations?limit=101").status_code == 400
    assert client.get("/api/v1/conversations?limit=0").status_code == 400
    assert client.get("/api/v1/conversations?limit=100").status_code == 200


def test_automation_inputs_count_is_bounded(sqlite_app):
    sqlite_app.config["MAX_AUTOMATION_INPUTS"] = 3
    client = Api(sqlite_app.test_client(), create_key(sqlite_app, kind="admin"))
    flow = client.post("/api/v1/automations", json={
        "name": "f", "endpoint": "f", "inputs": [{"name": "a"}],
        "steps": [{"prompt": "{{ a }}", "model": "echo/echo"}]}).get_json()
    assert client.post("/hooks/f", json={"a": 1, "b": 2, "c": 3}).status_code == 200
    too_many = client.post("/hooks/f", json={"a": 1, "b": 2, "c": 3, "d": 4})
    assert too_many.status_code == 400 and "at most 3 inputs" in too_many.get_json()["error"]["message"]
    assert client.post(f"/v1/flows/{flow['id']}/generate",
                       json={"flow": {"inputs": {k: 1 for k in "abcd"}}}).get_json()["code"] == 400

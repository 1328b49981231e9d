"""Settings do what the README says: each one is read where it applies."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import requests

from .conftest import make_app
from .servers import ROOT, chatport_server, free_port
from .test_channel_api import make_channel
from .test_mgmt_api import snapshot

ADMIN = "cp_test_admin_key_for_the_config_tests_000000"
H = {"Authorization": f"Bearer {ADMIN}"}


def _master_argv(instance):
    with open(instance / "server.pid") as fh:
        pid = int(fh.read())
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().split("\0")


def _stream_seconds_and_deltas(base):
    """Stream a 40-token echo answer (0.1 s a token); return (seconds taken, deltas received)."""
    started = time.monotonic()
    resp = requests.post(base + "/v1/chat/completions", headers=H, stream=True, timeout=30, json={
        "model": "echo/echo", "stream": True,
        "messages": [{"role": "user", "content": "[echo tokens=40 delay=0.1]"}]})
    assert resp.status_code == 200, resp.text
    deltas = 0
    for line in resp.iter_lines():
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                deltas += 1
    return time.monotonic() - started, deltas


@pytest.mark.parametrize("config_py, serve_args", [
    ("STREAM_TIMEOUT = 1\n", ()),
    ("STREAM_TIMEOUT = 600\n", ("--stream-timeout", "1")),
], ids=["instance-config", "flag-overrides-config"])
def test_stream_timeout_of_instance_config_reaches_the_served_app(tmp_path, config_py, serve_args):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(config_py)
    with chatport_server(instance, env={"CHATPORT_ADMIN_KEY": ADMIN}, serve_args=serve_args) as base:
        argv = _master_argv(instance)
        seconds, deltas = _stream_seconds_and_deltas(base)
    assert argv[argv.index("--graceful-timeout") + 1] == "1"  # gunicorn waits as long as a stream may run
    assert 0 < deltas < 40 and seconds < 3.5, (seconds, deltas)  # the stream was cut after ~1 s


# ------------------------------------------------------------ bounds read from configuration


def _chatbot(api, name="Bot"):
    bot = api.post("/api/v1/create-chatbot", json={"chatbotName": name}).get_json()["chatbotId"]
    assert api.post("/api/v1/update-chatbot-settings", json={"chatbotId": bot, "model": "echo/echo"}).status_code == 200
    return bot


def _chatport_400(resp, field, text):
    assert resp.status_code == 400, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "bad_request" and field in body["errors"] and text in body["message"], body


def _chat_api_400(resp, text):
    assert resp.status_code == 400, resp.get_json()
    assert set(resp.get_json()) == {"message"} and text in resp.get_json()["message"], resp.get_json()


def test_page_default_and_page_max(configured):
    app, admin = configured(PAGE_DEFAULT=2, PAGE_MAX=3)
    for i in range(4):
        assert admin.post("/api/v1/bots", json={"name": f"b{i}"}).status_code == 201
    assert len(admin.get("/api/v1/bots").get_json()["data"]) == 2
    assert len(admin.get("/api/v1/bots?limit=3").get_json()["data"]) == 3
    _chatport_400(admin.get("/api/v1/bots?limit=4"), "limit", "between 1 and 3")
    _chatport_400(admin.get("/api/v1/bots?limit=0"), "limit", "between 1 and 3")

    bot = _chatbot(admin)
    for i in range(4):
        assert admin.post("/api/v1/chat", json={"chatbotId": bot, "conversationId": f"c{i}",
                                                "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    listed = admin.get("/api/v1/get-conversations", query_string={"chatbotId": bot}).get_json()
    assert (len(listed["data"]), listed["size"], listed["total"]) == (2, 2, 4)
    assert len(admin.get("/api/v1/get-conversations", query_string={"chatbotId": bot, "size": 3})
               .get_json()["data"]) == 3
    _chat_api_400(admin.get("/api/v1/get-conversations", query_string={"chatbotId": bot, "size": 4}),
                  "size must be between 1 and 3")

    _, ch = make_channel(admin, app.test_client())
    for text in ("one", "two", "three"):
        assert ch.post("message", {"message": text}).status_code == 200
    assert len(ch.post("conversations").get_json()["conversations"]) == 2
    refused = ch.post("conversations", {"limit": 4})
    assert refused.status_code == 400 and refused.get_json() == {
        "success": False, "message": "limit must be between 1 and 3"}


def test_page_max_above_the_default_of_100(configured):
    app, admin = configured(PAGE_MAX=150)
    assert admin.get("/api/v1/bots?limit=150").status_code == 200
    _chatport_400(admin.get("/api/v1/bots?limit=151"), "limit", "between 1 and 150")


def test_max_name_length(configured):
    app, admin = configured(MAX_NAME_LENGTH=5)
    before = snapshot(app)
    _chatport_400(admin.post("/api/v1/bots", json={"name": "abcdef"}), "name", "between 1 and 5")
    _chatport_400(admin.post("/api/v1/knowledge/sources", json={"name": "abcdef"}), "name", "between 1 and 5")
    _chatport_400(admin.post("/api/v1/automations", json={
        "name": "abcdef", "steps": [{"prompt": "hi", "model": "echo/echo"}]}), "name", "between 1 and 5")
    _chat_api_400(admin.post("/api/v1/create-chatbot", json={"chatbotName": "abcdef"}), "between 1 and 5")
    assert snapshot(app) == before
    assert admin.post("/api/v1/bots", json={"name": "abcde"}).status_code == 201
    schemas = admin.get("/api/openapi.json").get_json()["components"]["schemas"]
    assert schemas["BotCreate"]["properties"]["name"]["maxLength"] == 5  # the document says so too

    app, admin = configured(MAX_NAME_LENGTH=200)
    assert admin.post("/api/v1/bots", json={"name": "n" * 200}).status_code == 201
    assert admin.post("/api/v1/create-chatbot", json={"chatbotName": "n" * 200}).status_code == 200
    _chatport_400(admin.post("/api/v1/bots", json={"name": "n" * 201}), "name", "between 1 and 200")


@pytest.mark.parametrize("settings, complaint", [
    ({"MAX_NAME_LENGTH": 201}, "MAX_NAME_LENGTH (201) must not exceed 200"),
    ({"PAGE_DEFAULT": 20, "PAGE_MAX": 10}, "PAGE_DEFAULT (20) must not exceed PAGE_MAX (10)"),
    ({"PAGE_MAX": 0}, "PAGE_MAX must be a positive integer"),
    ({"MAX_PROPERTIES": "many"}, "MAX_PROPERTIES must be a positive integer"),
    ({"PROXY_HOPS": -1}, "PROXY_HOPS must be an integer of 0 or more, not -1"),
    ({"PROXY_HOPS": "1"}, "PROXY_HOPS must be an integer of 0 or more, not '1'"),
])
def test_a_bound_the_server_cannot_honour_stops_it_starting(tmp_path, settings, complaint):
    with pytest.raises(ValueError, match=re.escape(complaint)):
        make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path, **settings)


def test_serve_refuses_a_bound_it_cannot_honour(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text("MAX_NAME_LENGTH = 500\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env["CHATPORT_INSTANCE_PATH"] = str(instance)
    result = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MAX_NAME_LENGTH (500) must not exceed 200" in result.stderr


def test_max_instructions_length(configured):
    app, admin = configured(MAX_INSTRUCTIONS_LENGTH=10)
    bot = _chatbot(admin)
    before = snapshot(app)
    _chatport_400(admin.patch(f"/api/v1/bots/{bot}", json={"instructions": "x" * 11}), "instructions", "10")
    _chat_api_400(admin.post("/api/v1/update-chatbot-settings", json={"chatbotId": bot, "instructions": "x" * 11}),
                  "10")
    assert snapshot(app) == before
    assert admin.patch(f"/api/v1/bots/{bot}", json={"instructions": "x" * 10}).status_code == 200

    app, admin = configured(MAX_INSTRUCTIONS_LENGTH=40000)
    assert admin.post("/api/v1/bots", json={"name": "long", "instructions": "x" * 40000}).status_code == 201


def test_max_message_length_is_the_one_bound_on_message_content(configured):
    app, admin = configured(MAX_MESSAGE_LENGTH=5)
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()["id"]
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot}).get_json()["id"]
    before = snapshot(app)
    _chatport_400(admin.post(f"/api/v1/conversations/{conv}/messages", json={"content": "abcdef"}),
                  "message", "longer than 5 characters")
    assert snapshot(app) == before
    assert admin.post(f"/api/v1/conversations/{conv}/messages", json={"content": "abcde"}).status_code == 200

    big = 1_100_000  # above any bound a schema could hard-code: only the setting decides
    app, admin = configured(MAX_MESSAGE_LENGTH=big, MAX_CONTENT_LENGTH=4 * big, PROMPT_MAX_TOKENS=10 ** 6)
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()["id"]
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot}).get_json()["id"]
    sent = admin.post(f"/api/v1/conversations/{conv}/messages", json={"content": "x" * big})
    assert sent.status_code == 200, sent.get_json()
    _chatport_400(admin.post(f"/api/v1/conversations/{conv}/messages", json={"content": "x" * (big + 1)}),
                  "message", f"longer than {big} characters")


def test_max_properties(configured):
    app, admin = configured(MAX_PROPERTIES=2)
    before = snapshot(app)
    _chatport_400(admin.post("/api/v1/users", json={"external_id": "u", "properties": {"a": 1, "b": 2, "c": 3}}),
                  "properties", "at most 2 properties")
    assert snapshot(app) == before
    user = admin.post("/api/v1/users", json={"external_id": "u", "properties": {"a": 1, "b": 2}})
    assert user.status_code == 200
    before = snapshot(app)
    _chatport_400(admin.patch("/api/v1/users/u", json={"properties": {"c": 3}}), "properties", "at most 2")
    assert snapshot(app) == before
    assert admin.patch("/api/v1/users/u", json={"properties": {"c": 3}, "replace": True}).status_code == 200

    app, admin = configured(MAX_PROPERTIES=60)  # more than the default allows
    many = {f"p{i}": i for i in range(60)}
    assert admin.post("/api/v1/users", json={"external_id": "v", "properties": many}).status_code == 200

"""Security properties across dialects: secrets never echoed or logged, nosniff, scope is 404."""
import requests

from .servers import chatport_server

ADMIN = "cp_security_tests_admin_key_0000000000000000000"


def test_no_full_key_in_responses_or_logs(tmp_path):
    log = tmp_path / "server.log"
    with chatport_server(tmp_path / "inst", env={"CHATPORT_ADMIN_KEY": ADMIN}, log_path=str(log),
                         extra_args=("--access-logfile", "-", "--log-level", "debug")) as base:
        h = {"Authorization": f"Bearer {ADMIN}"}
        key = requests.post(base + "/api/v1/keys", headers=h, json={"name": "k"}, timeout=10).json()["key"]
        bot = requests.post(base + "/api/v1/bots", headers=h, json={"name": "b"}, timeout=10).json()
        secret = requests.post(f"{base}/api/v1/bots/{bot['id']}/channels", headers=h, json={}, timeout=10).json()
        bodies = []
        for auth in (key, key + "x", "cp_" + "A" * 40):
            for path in ("/api/v1/account", "/v1/models", "/api/v1/get-chatbots", "/api/v1/nope"):
                bodies.append(requests.get(base + path, headers={"Authorization": f"Bearer {auth}"}, timeout=10).text)
        ch = f"{base}/api/public/channels/{secret['id']}/1.0/conversation"
        bodies.append(requests.post(ch, headers={"X-API-Secret-Key": secret["secret"] + "x"}, timeout=10).text)
        bodies.append(requests.get(base + "/api/v1/keys", headers=h, timeout=10).text)
    text = log.read_text()
    assert "GET /api/v1/account" in text  # the access log was written
    for value in (ADMIN, key, secret["secret"], key + "x"):
        assert value not in text, "a secret reached the server log"
        assert all(value not in b for b in bodies), "a secret was echoed in a response"


def test_nosniff_and_json_errors_on_every_dialect(admin, anon):
    paths = ["/healthz", "/api/v1/bots", "/v1/models", "/api/v1/chat", "/hooks/x", "/v1/flows/x/generate",
             "/api/public/channels/x/1.0/conversation", "/nope"]
    for path in paths:
        for api in (admin, anon):
            resp = api.get(path)
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
            if resp.status_code >= 400:
                assert resp.is_json and "Traceback" not in resp.get_data(as_text=True), path


def test_scope_is_404_in_every_dialect(app, client, admin):
    from .conftest import Api, create_key

    mine = admin.post("/api/v1/bots", json={"name": "mine"}).get_json()
    theirs = admin.post("/api/v1/bots", json={"name": "theirs", "instructions": "TOP SECRET"}).get_json()
    conv = admin.post("/api/v1/conversations", json={"bot_id": theirs["id"]}).get_json()
    flow = admin.post("/api/v1/automations", json={"name": "f", "endpoint": "theirs",
                                                   "steps": [{"prompt": "hi", "model": "echo/echo"}]}).get_json()
    other_flow = admin.post("/api/v1/automations", json={"name": "g", "endpoint": "mine",
                                                         "steps": [{"prompt": "hi", "model": "echo/echo"}]}).get_json()
    scoped = Api(client, create_key(app, kind="client", bot_ids=[mine["id"]], automation_ids=[other_flow["id"]]))
    checks = [
        scoped.get(f"/api/v1/conversations/{conv['id']}/messages"),
        scoped.post("/v1/chat/completions", json={"model": f"bot/{theirs['id']}", "messages": [{"role": "user", "content": "x"}]}),
        scoped.post("/api/v1/chat", json={"chatbotId": theirs["id"], "messages": [{"role": "user", "content": "x"}]}),
        scoped.get(f"/api/v1/get-conversations?chatbotId={theirs['id']}"),
        scoped.post(f"/v1/flows/{flow['id']}/generate", json={"flow": {"inputs": {}}}),
        scoped.post("/hooks/theirs", json={}),
        scoped.post(f"/api/v1/automations/{flow['id']}/run", json={"inputs": {}}),
    ]
    for resp in checks:
        assert resp.status_code == 404, resp.get_data(as_text=True)
        assert "TOP SECRET" not in resp.get_data(as_text=True)
    assert scoped.post("/hooks/mine", json={}).status_code == 200  # its own automation works
    run_id = admin.post(f"/v1/flows/{flow['id']}/generate", json={"flow": {"inputs": {}}}).get_json()["results"]["logId"]
    assert scoped.get(f"/api/v1/runs/{run_id}").status_code == 404

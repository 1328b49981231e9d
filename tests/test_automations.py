"""Automations: the engine, automation endpoints (/hooks), the flows API and the chatport workflow API."""
import json
import time

import requests

from app.errors import ProviderUnavailable
from app.storage.db import db
from app.storage.models import AutomationRun, Usage

from .conftest import Api, create_key, make_app
from .scripted import scripted
from .servers import chatport_server
from .test_mgmt_api import snapshot

TICKET = {
    "name": "Support reply", "endpoint": "support-reply",
    "inputs": [{"name": "user_name"}, {"name": "ticket_body"}],
    "steps": [{"prompt": "Draft a response to the following support ticket by user {{user_name}}:\n{{ticket_body}}",
               "model": "echo/echo"}],
}
NAME_FLOW = {
    "name": "Greeting", "inputs": [{"name": "name"}, {"name": "lastName"}],
    "steps": [{"prompt": "Say hello to {{ name }} {{ lastName }}", "model": "echo/echo"}],
}


def _create(admin, body):
    resp = admin.post("/api/v1/automations", json=body)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_hooks_spec_example(admin, app):
    _create(admin, TICKET)
    resp = admin.post("/hooks/support-reply", json={
        "user_name": "Andrew Buck", "ticket_body": "I forgot my login credentials, what should I do?"})
    assert resp.status_code == 200
    body = resp.get_json()
    prompt = ("Draft a response to the following support ticket by user Andrew Buck:\n"
              "I forgot my login credentials, what should I do?")
    assert body["success"] is True
    assert body["data"] == {"response": "Echo: " + " ".join(prompt.split())}
    assert body["usage"]["prompt_length"] == len(prompt)
    assert body["usage"]["total_usage"] >= 1
    with app.app_context(), db.connection_context():
        run = AutomationRun.get()
        assert run.status == "succeeded" and run.dialect == "hooks" and run.credits == body["usage"]["total_usage"]
        usage = Usage.select().where(Usage.dialect == "hooks").get()
        assert usage.credits == run.credits and usage.category == "workflow" and usage.automation_id == run.automation_id


def test_flows_spec_example_and_log(admin):
    flow = _create(admin, NAME_FLOW)
    resp = admin.post(f"/v1/flows/{flow['id']}/generate", json={
        "userId": "9hhsOa6pGHes5BCDpCDeLD2i0kw2", "flow": {"inputs": {"name": "Andres", "lastName": "Lopez"}}})
    body = resp.get_json()
    assert resp.status_code == 200 and body["code"] == 200 and body["message"] == "OK" and body["error"] is False
    assert body["results"]["result"] == "Echo: Say hello to Andres Lopez"
    run = admin.get(f"/api/v1/runs/{body['results']['logId']}").get_json()
    assert run["end_user"] == "9hhsOa6pGHes5BCDpCDeLD2i0kw2" and run["status"] == "succeeded"
    assert run["steps"][0]["prompt_length"] == len("Say hello to Andres Lopez") and run["steps"][0]["model"] == "echo/echo"
    rated = admin.post(f"/api/v1/runs/{run['id']}/rating", json={"rating": 5, "comment": "great"}).get_json()
    assert rated["rating"] == 5 and rated["rating_comment"] == "great"
    assert admin.post(f"/api/v1/runs/{run['id']}/rating", json={"rating": 6}).status_code == 400
    single = admin.post("/v1/generate", json={"prompt": {"promptId": flow["id"], "inputs": {"name": "A", "lastName": "B"}},
                                              "endUserId": "u1"}).get_json()
    assert single["results"]["result"] == "Echo: Say hello to A B"
    assert admin.get("/api/v1/runs").get_json()["pagination"]["total"] == 2


def test_two_steps_chain_and_list_results(admin):
    flow = _create(admin, {
        "name": "Chain", "inputs": [{"name": "topic"}, {"name": "n", "default": 3}], "returns": ["ideas", "summary"],
        "steps": [
            {"prompt": "List {{ n }} ideas about {{ topic }}", "model": "echo/echo", "output": "ideas",
             "result_type": "list"},
            {"prompt": "Summarise: {{ ideas | join(', ') }}", "model": "echo/echo", "output": "summary"},
        ]})
    body = admin.post(f"/api/v1/automations/{flow['id']}/run", json={"inputs": {"topic": "tea"}}).get_json()
    assert body["outputs"]["ideas"] == ["Echo: List 3 ideas about tea"]
    assert body["outputs"]["summary"] == "Echo: Summarise: Echo: List 3 ideas about tea"
    assert body["result"] == body["outputs"]["summary"]


def test_tag_filtered_context_changes_retrieval(admin, app):
    from app.services import knowledge

    with app.app_context(), db.connection_context():
        source = knowledge.create_source(name="policies")
        knowledge.add_rows(source, [
            {"name": "billing", "content": "Refund requests are answered within 14 days.", "tags": ["billing"]},
            {"name": "shipping", "content": "Refund of shipping costs happens on return.", "tags": ["shipping"]}])
        knowledge.sync_source(source.id)
    flow = _create(admin, {"name": "Ctx", "inputs": [{"name": "q"}],
                           "steps": [{"prompt": "Refund question: {{ q }}", "model": "echo/echo",
                                      "context": {"sources": ["policies"], "tags": []}}]})
    url = f"/v1/flows/{flow['id']}/generate"
    both = admin.post(url, json={"flow": {"inputs": {"q": "how long"}}}).get_json()["results"]["result"]
    assert "14 days" in both and "shipping costs" in both
    only_shipping = admin.post(url, json={"flow": {"inputs": {"q": "how long"}}, "steps": {"step1": {"context": {
        "folders": {"ids": [], "names": []}, "tags": {"ids": [], "names": ["shipping"]}}}}}).get_json()
    text = only_shipping["results"]["result"]
    assert "shipping costs" in text and "14 days" not in text
    unknown = admin.post(url, json={"flow": {"inputs": {"q": "x"}}, "steps": {"step1": {"context": {
        "tags": {"names": ["nope"]}}}}})
    assert unknown.status_code == 404 and unknown.get_json()["error"] is True


def test_bad_input(admin, app):
    flow = _create(admin, {**TICKET, "endpoint": "t2"})
    hook, gen = "/hooks/t2", f"/v1/flows/{flow['id']}/generate"
    before = {k: v for k, v in snapshot(app).items() if k != "AutomationRun"}
    missing = admin.post(hook, json={}).get_json()
    assert missing["success"] is False and "user_name" in missing["error"]["message"] \
        and "ticket_body" in missing["error"]["message"]
    extra = admin.post(hook, json={"user_name": "a", "ticket_body": "b", "unused": 1})
    assert extra.status_code == 200  # extra variables are ignored
    assert admin.post(gen, json={"flow": {"inputs": ["not", "an", "object"]}}).get_json()["code"] == 400
    assert admin.post(hook, data="[1]", headers={"Content-Type": "application/json"}).status_code == 400
    injected = admin.post(hook, json={"user_name": "{{ ''.__class__.__mro__ }}", "ticket_body": "{{ 7*7 }}"}).get_json()
    assert "{{ ''.__class__.__mro__ }}" in injected["data"]["response"] and "49" not in injected["data"]["response"]
    bad_template = admin.post("/api/v1/automations", json={
        "name": "x", "steps": [{"prompt": "{{ ''.__class__.__mro__ }}", "model": "echo/echo"}]})
    assert bad_template.status_code == 400 and "private" in bad_template.get_json()["message"]
    syntax = admin.post("/api/v1/automations", json={"name": "x", "steps": [{"prompt": "{{ oops", "model": "echo/echo"}]})
    assert syntax.status_code == 400 and "steps.0.prompt" in syntax.get_json()["message"]
    undeclared = admin.post("/api/v1/automations", json={"name": "x", "steps": [{"prompt": "{{ who }}", "model": "echo/echo"}]})
    assert undeclared.status_code == 400 and "who" in undeclared.get_json()["message"]
    assert admin.post("/api/v1/automations", json={"name": "x", "steps": [{"prompt": "hi", "model": "nope/x"}]}).status_code == 400
    assert admin.post("/api/v1/automations", json={**TICKET, "endpoint": "t2"}).status_code == 409
    assert admin.post("/api/v1/automations", json={**TICKET, "endpoint": "Not Safe!"}).status_code == 400
    unknown_flow = admin.post("/v1/flows/nope/generate", json={"flow": {"inputs": {}}})
    assert unknown_flow.status_code == 404 and unknown_flow.get_json() == {
        "code": 404, "message": "Automation nope not found", "error": True}
    assert admin.post("/hooks/nope", json={}).get_json()["success"] is False
    admin.patch(f"/api/v1/automations/{flow['id']}", json={"api_enabled": False})
    disabled = admin.post(hook, json={"user_name": "a", "ticket_body": "b"})
    assert disabled.status_code == 404 and disabled.get_json()["success"] is False
    assert {k: v for k, v in snapshot(app).items() if k not in ("AutomationRun", "Automation")} == \
        {k: v for k, v in before.items() if k != "Automation"}


def test_failing_provider_step(admin, app):
    def broken(request):
        yield "partial"
        raise ProviderUnavailable("upstream down")

    with scripted(app, broken, "broken"):
        flow = _create(admin, {"name": "f", "endpoint": "fails", "inputs": [{"name": "x"}],
                               "steps": [{"prompt": "{{ x }}", "model": "echo/echo", "output": "a"},
                                         {"prompt": "{{ a }}", "model": "scripted/broken"}]})
        hook = admin.post("/hooks/fails", json={"x": "1"})
        flows_ = admin.post(f"/v1/flows/{flow['id']}/generate", json={"flow": {"inputs": {"x": "1"}}})
        api = admin.post(f"/api/v1/automations/{flow['id']}/run", json={"inputs": {"x": "1"}})
    assert hook.status_code == 502 and hook.get_json() == {"success": False, "error": {"message": "upstream down"}}
    assert flows_.status_code == 502 and flows_.get_json() == {"code": 502, "message": "upstream down", "error": True}
    assert api.status_code == 502 and api.get_json()["error"] == "provider_unavailable"
    with app.app_context(), db.connection_context():
        runs = list(AutomationRun.select())
        assert [r.status for r in runs] == ["failed"] * 3 and all(r.error == "upstream down" for r in runs)
        assert all(r.credits >= 1 and len(r.steps) == 1 for r in runs)  # step 1 logged, step 2 failed
        rows = list(Usage.select().where(Usage.category == "workflow", Usage.status == 502))
        assert len(rows) == 3 and all(r.credits >= 1 for r in rows)


def test_client_keys_scoped_to_automations(app, client, admin):
    a = _create(admin, {**TICKET, "endpoint": "a"})
    b = _create(admin, {**TICKET, "endpoint": "b"})
    scoped = Api(client, create_key(app, kind="client", automation_ids=[a["id"]]))
    body = {"user_name": "x", "ticket_body": "y"}
    assert scoped.post("/hooks/a", json=body).status_code == 200
    assert scoped.post("/hooks/b", json=body).status_code == 404
    assert scoped.post(f"/v1/flows/{b['id']}/generate", json={"flow": {"inputs": body}}).status_code == 404
    assert scoped.post(f"/api/v1/automations/{b['id']}/run", json={"inputs": body}).status_code == 404
    assert scoped.get("/api/v1/automations").status_code == 403
    assert scoped.get("/api/v1/runs").get_json()["pagination"]["total"] == 1


def test_empty_hooks_prefix_does_not_shadow(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/x.db", tmp_path, HOOKS_PREFIX="")
    admin = Api(app.test_client(), create_key(app, kind="admin"))
    _create(admin, TICKET)
    ok = admin.post("/support-reply", json={"user_name": "a", "ticket_body": "b"})
    assert ok.status_code == 200 and ok.get_json()["success"] is True
    assert admin.get("/healthz").get_json()["status"] == "ok"
    assert admin.get("/api/v1/bots").status_code == 200
    assert admin.post("/v1/chat/completions", json={"model": "echo/echo", "messages": [
        {"role": "user", "content": "x"}]}).get_json()["choices"][0]["message"]["content"] == "Echo: x"
    missing = admin.post("/no-such-endpoint", json={})
    assert missing.status_code == 404 and missing.get_json()["success"] is False
    # a single path segment is a (POST-only) hook endpoint now: other methods are a JSON 405
    assert admin.get("/no-such-page").get_json()["code"] == 405
    assert admin.get("/no/such/page").get_json()["code"] == 404


ADMIN = "cp_automation_tests_admin_key_00000000000000000"


def test_sse_run_on_real_server(tmp_path):
    with chatport_server(tmp_path / "inst", env={"CHATPORT_ADMIN_KEY": ADMIN}) as base:
        h = {"Authorization": f"Bearer {ADMIN}"}
        flow = requests.post(base + "/api/v1/automations", headers=h, timeout=10, json={
            "name": "s", "inputs": [{"name": "t"}],
            "steps": [{"prompt": "{{ t }}", "model": "echo/echo", "output": "first"},
                      {"prompt": "[echo tokens=8 delay=0.01] {{ first }}", "model": "echo/echo"}]}).json()
        resp = requests.post(f"{base}/api/v1/automations/{flow['id']}/run", headers=h, stream=True, timeout=10,
                             json={"inputs": {"t": "go"}, "stream": True})
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events, name = [], None
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
        kinds = [k for k, _ in events]
        assert kinds[:3] == ["step_start", "step_finish", "step_start"]
        assert kinds.count("delta") == 8 and kinds[-2:] == ["step_finish", "done"]
        assert events[-1][1]["result"] == "t1 t2 t3 t4 t5 t6 t7 t8"
        bad = requests.post(f"{base}/api/v1/automations/{flow['id']}/run", headers=h, timeout=10,
                            json={"inputs": {}, "stream": True})
        assert bad.status_code == 400 and "t" in bad.json()["errors"]


RUNAWAY_TEMPLATES = {
    "loop": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}done",
    "output": "{% for i in range(99999) %}{% for j in range(99999) %}{{ x }}{% endfor %}{% endfor %}",
    "multiplication": "{{ x * 10**9 }}",
    "power": "{{ 10 ** 100000 }}",
    "width": "{{ x|center(10**9) }}{{ x.ljust(999999999) }}",
    "constant": "{{ 'x'|center(999999999) }}{{ 'x' * 999999999 }}",  # never folded while compiling
    "format": "{{ '%999999999s' % x }}",
    "concat": "{% set ns = namespace(s=x) %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "range": "{% for i in range(10**9) %}x{% endfor %}",
    "many": "{{ range(99999)|map('center', 99999)|list|length }}",  # each value fits, together they do not
}


def test_runaway_templates_are_a_400_naming_the_step_and_the_worker_keeps_answering(tmp_path):
    admin_key = "cp_test_admin_key_for_template_bounds_000000000000"
    env = {"CHATPORT_ADMIN_KEY": admin_key, "CHATPORT_TEMPLATE_TIMEOUT": "1",
           "CHATPORT_TEMPLATE_MAX_OUTPUT": "100000"}
    h = {"Authorization": f"Bearer {admin_key}"}
    with chatport_server(tmp_path / "inst", env=env) as base:  # one worker: a stuck render would block it
        flows = {}
        for name, prompt in RUNAWAY_TEMPLATES.items():
            started = time.monotonic()
            resp = requests.post(f"{base}/api/v1/automations", headers=h, timeout=10, json={
                "name": name, "endpoint": name, "inputs": [{"name": "x"}],
                "steps": [{"name": f"{name}-step", "prompt": prompt, "model": "echo/echo"}]})
            assert resp.status_code == 201 and time.monotonic() - started < 5, (name, resp.text)
            flows[name] = resp.json()["id"]
        for name, flow_id in flows.items():
            started = time.monotonic()
            resp = requests.post(f"{base}/api/v1/automations/{flow_id}/run", headers=h, timeout=30,
                                 json={"inputs": {"x": "x"}})
            assert resp.status_code == 400 and f"{name}-step" in resp.json()["message"], (name, resp.text)
            assert time.monotonic() - started < 5, name
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        hook = requests.post(f"{base}/hooks/multiplication", headers=h, timeout=30, json={"x": "x"})
        assert hook.status_code == 400 and "multiplication-step" in json.dumps(hook.json()), hook.text
        # bounded, not broken: the same shapes within the bounds render
        ok = requests.post(f"{base}/api/v1/automations", headers=h, timeout=10, json={
            "name": "ok", "inputs": [{"name": "x"}], "steps": [{"prompt": "{{ x * 3 }} {{ 2 ** 10 }} "
                                                                  "{% for i in range(3) %}{{ i }}{% endfor %}",
                                                                  "model": "echo/echo"}]}).json()
        run = requests.post(f"{base}/api/v1/automations/{ok['id']}/run", headers=h, timeout=10,
                            json={"inputs": {"x": "ab"}})
        assert run.status_code == 200 and run.json()["result"] == "Echo: ababab 1024 012", run.text


def test_a_template_that_fails_at_run_time_is_a_400_naming_the_step(admin):
    flow = _create(admin, {"name": "div", "inputs": [{"name": "x"}],
                           "steps": [{"name": "divide", "prompt": "{{ 1 // (x|length - 1) }} {{ x + 1 }}",
                                      "model": "echo/echo"}]})
    resp = admin.post(f"/api/v1/automations/{flow['id']}/run", json={"inputs": {"x": "a"}})
    assert resp.status_code == 400 and "divide" in resp.get_json()["message"], resp.get_json()
    assert "ZeroDivisionError" in resp.get_json()["message"]
    run = admin.get("/api/v1/runs").get_json()["data"][0]
    assert run["status"] == "failed"

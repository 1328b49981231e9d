"""Fuzz every operation of chatport's OpenAPI document against a live ``chatport serve``.

schemathesis generates requests from ``/api/openapi.json`` (every dialect's routes, with
their own error bodies and credentials) and checks each answer: no 5xx, status codes and
bodies as documented, content types as documented, and that no request without a valid key
gets a 2xx (``ignored_auth``).

Path parameters are pinned to real fixtures (a bot, a channel, a conversation, a message, a
user, an automation and its run, a knowledge source and row, a stored response and a spare API
key), so the fuzzer reaches the handlers' logic rather than stopping at 404; the bodies, query
strings and headers are generated. Mutating the spare key can disable it, never the key the run uses.

Run it: ``python -m tests.fuzz --max-examples 25`` (``make fuzz`` runs a longer one);
``tests/test_fuzz.py`` runs a bounded pass as part of ``make test``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import requests

from .servers import ROOT, chatport_server

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "ignored_auth",
])


def _post(base, key, path, body=None, expect=(200, 201)):
    resp = requests.post(base + path, json=body if body is not None else {},
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert resp.status_code in expect, (path, resp.status_code, resp.text)
    return resp.json()


def seed(base, key):
    """Create what the path parameters name, three times over; return ``(main, mutate, delete,
    channel secret)``, each a dict of path parameter values.

    Operations that change (PATCH, disable, rotate a secret) or destroy (DELETE) get their own
    copies, so the rest of the run still finds the main resources as they were."""
    api = "/api/v1"

    def bot_with_channels(name):
        bot = _post(base, key, api + "/bots", {"name": name, "model": "echo/echo", "greeting": "Hi"})
        main = _post(base, key, f"{api}/bots/{bot['id']}/channels", {"name": "main"})
        spare = _post(base, key, f"{api}/bots/{bot['id']}/channels", {"name": "spare"})
        return bot, main, spare

    def source_with_row(name, bot):
        source = _post(base, key, api + "/knowledge/sources", {"name": name, "bot_ids": [bot["id"]]})
        _post(base, key, f"{api}/knowledge/sources/{source['id']}/rows",
              {"rows": [{"name": "a.md", "content": "Refunds take 14 days.", "tags": ["billing"]}]})
        rows = requests.get(f"{base}{api}/knowledge/sources/{source['id']}/rows",
                            headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
        return source, rows["data"][0]

    def conversation(bot):
        conv = _post(base, key, api + "/conversations", {"bot_id": bot["id"], "end_user_id": "fuzz-user"})
        turn = _post(base, key, f"{api}/conversations/{conv['id']}/messages", {"content": "hello"})
        return conv, _message_id(turn)

    def automation(name):
        flow = _post(base, key, api + "/automations", {
            "name": name, "endpoint": name, "inputs": [{"name": "name"}],
            "steps": [{"prompt": "Say hi to {{name}}", "model": "echo/echo"}]})
        run = _post(base, key, f"{api}/automations/{flow['id']}/run", {"inputs": {"name": "Ann"}})
        return flow, _run_id(run)

    def response():
        return _post(base, key, "/v1/responses", {"model": "echo/echo", "input": "hello"}, expect=(200,))["id"]

    def world(name):
        bot, channel, spare_channel = bot_with_channels(name + "-bot")
        conv, message_id = conversation(bot)
        source, row = source_with_row(name, bot)
        flow, run_id = automation(name + "-hook")
        _post(base, key, api + "/users", {"external_id": name + "-user", "properties": {"a": 1}})
        spare_key = _post(base, key, api + "/keys", {"name": name, "kind": "client"})
        params = {
            "bot_id": bot["id"], "channel_id": spare_channel["id"], "channelId": channel["id"],
            "conversation_id": conv["id"], "message_id": message_id, "user_id": name + "-user",
            "source_id": source["id"], "row_id": row["id"], "automation_id": flow["id"],
            "flow_id": flow["id"], "endpoint": name + "-hook", "run_id": run_id, "key_id": spare_key["id"],
            "response_id": response(),
        }
        return params, channel["secret"]

    main, secret = world("fuzz")
    mutate, _ = world("fuzz-mutate")
    delete, _ = world("fuzz-delete")
    mutate["channelId"] = delete["channelId"] = main["channelId"]  # one channel secret per run
    return main, mutate, delete, secret


def _message_id(turn):
    for name in ("message_id", "id"):
        if name in turn:
            return turn[name]
    return turn["message"]["id"]


def _run_id(run):
    for name in ("run_id", "log_id", "id"):
        if name in run:
            return run[name]
    raise KeyError(f"no run id in {run}")


def write_config(path, key, main, mutate, delete, channel_secret):
    def table(values):
        return [f'"path.{name}" = {json.dumps(value)}' for name, value in sorted(values.items())]

    lines = [
        "[auth.openapi.bearer]", f'bearer = "{key}"',
        "[auth.openapi.channelSecret]", f'api_key = "{channel_secret}"',
        "[parameters]", *table(main),
        "[[operations]]", 'include-method = "PATCH"', "[operations.parameters]", *table(mutate),
        "[[operations]]", 'include-path-regex = "/(disable|rotate-secret)$"',
        "[operations.parameters]", *table(mutate),
        "[[operations]]", 'include-method = "DELETE"', "[operations.parameters]", *table(delete),
    ]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def run_schemathesis(base, key, fixtures, *, max_examples, seed_value, workdir, phases="examples,coverage,fuzzing"):
    """Run the schemathesis CLI; return (exit code, output, JSON report or None)."""
    config = os.path.join(workdir, "schemathesis.toml")
    write_config(config, key, *fixtures)
    report = os.path.join(workdir, "report.json")
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"), "--config-file", config, "run",
        base + "/api/openapi.json", "--url", base, "--checks", CHECKS, "--phases", phases,
        "--max-examples", str(max_examples), "--seed", str(seed_value), "--workers", "1",
        "--request-timeout", "30", "--no-shrink", "--suppress-health-check", "all",
        "--report", "json", "--report-json-path", report, "--output-truncate", "false",
    ]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    data = None
    if os.path.exists(report):
        with open(report) as fh:
            data = json.load(fh)
    return proc.returncode, proc.stdout + proc.stderr, data


def fuzz(instance_path, *, max_examples, seed_value, env=None):
    """Start a server in ``instance_path``, seed fixtures, fuzz; return (code, output, report)."""
    with chatport_server(instance_path, env=env) as base:
        key = _init_key(instance_path)
        fixtures = seed(base, key)
        return run_schemathesis(base, key, fixtures, max_examples=max_examples, seed_value=seed_value,
                                workdir=str(instance_path))


def _init_key(instance_path):
    with open(os.path.join(str(instance_path), "init.json")) as fh:
        return json.load(fh)["admin_key"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--instance", help="keep the server's instance folder (database, "
                        "server.log, schemathesis.toml, report.json) here instead of a temporary one")
    args = parser.parse_args(argv)
    if args.instance:
        os.makedirs(args.instance, exist_ok=True)
        code, output, _ = fuzz(args.instance, max_examples=args.max_examples, seed_value=args.seed)
        print(output)
        return code
    with tempfile.TemporaryDirectory(prefix="chatport-fuzz-") as tmp:
        code, output, _ = fuzz(tmp, max_examples=args.max_examples, seed_value=args.seed)
        print(output)
    return code


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())

"""Settings do what the README says: each one is read where it applies."""
import json
import os
import time

import pytest
import requests

from .servers import chatport_server

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

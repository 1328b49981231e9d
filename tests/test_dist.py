"""The one-file binary (`make dist`, then `make dist-test`; left out of `make test`): run with an
empty environment (`env -i`: no venv, no PATH) in a temporary folder, it initialises an instance,
lists a plugin from the plugins folder, serves with gunicorn's gevent worker, answers /healthz
and chat turns, and stops on SIGTERM."""
import json
import os
import signal
import subprocess
import time

import openai
import pytest
import requests

from .servers import ROOT, free_port
from .test_plugins_dir import WHISPER

pytestmark = pytest.mark.dist

BINARY = os.environ.get("CHATPORT_DIST_BINARY") or os.path.join(ROOT, "dist", "chatport")


def _run(folder, *args, timeout=120):
    """``env -i BINARY ARGS`` in ``folder``; its stdout (it must succeed)."""
    out = subprocess.run(["env", "-i", BINARY, *args], cwd=str(folder), capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"{BINARY} is missing: run `make dist` first")
    folder = tmp_path_factory.mktemp("binary")
    plugins = folder / "instance" / "plugins"  # the default PLUGINS_DIR, in ./instance
    plugins.mkdir(parents=True)
    (plugins / "whisper.py").write_text(WHISPER)
    return folder


def test_init_and_models_list_the_folder_plugin(folder):
    init = json.loads(_run(folder, "init", "--json"))
    assert init["admin_key"] and init["database"] == f"sqlite:///{folder}/instance/chatport.db"
    (folder / "admin_key").write_text(init["admin_key"])
    listed = {m["id"]: m for m in json.loads(_run(folder, "models", "--json"))["data"]}
    assert listed["whisper/soft"]["plugin"] == "whisper"
    assert {"echo/echo", "extractive/extractive"} <= set(listed)  # the built-ins, frozen


def test_serve_healthz_chat_and_sigterm(folder):
    admin = (folder / "admin_key").read_text()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(folder / "serve.log", "wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        ["env", "-i", BINARY, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--", "--no-control-socket"],
        cwd=str(folder), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        cold = None
        while time.monotonic() - started < 120 and proc.poll() is None:
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    cold = time.monotonic() - started
                    break
            except requests.RequestException:
                time.sleep(0.05)
        assert cold is not None, (folder / "serve.log").read_text()[-3000:]
        print(f"\nbinary {os.path.getsize(BINARY) / 2**20:.1f} MiB, cold start to /healthz 200: {cold:.2f} s")

        client = openai.OpenAI(base_url=base + "/v1", api_key=admin, max_retries=0)
        reply = client.chat.completions.create(
            model="echo/echo", messages=[{"role": "user", "content": "hello binary"}])
        assert reply.choices[0].message.content == "Echo: hello binary"
        stream = client.chat.completions.create(
            model="echo/echo", stream=True, messages=[{"role": "user", "content": "streamed"}])
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: streamed"
        plugin = client.chat.completions.create(
            model="whisper/soft", messages=[{"role": "user", "content": "FROM THE FOLDER"}])
        assert plugin.choices[0].message.content == "from the folder..."
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the binary passes it to gunicorn's master
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    text = (folder / "serve.log").read_text()
    assert "Using worker: gevent" in text and "Shutting down: Master" in text
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/healthz", timeout=2)

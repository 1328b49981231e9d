"""Start real processes for tests: ``chatport serve`` (gunicorn + gevent).

Every server listens on 127.0.0.1 only and is stopped by its own pid.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RawServer:
    """A TCP server on 127.0.0.1 (a free port) that serves each connection in a thread of its
    own with ``self._serve(conn)``; ``connections`` counts what it accepted. Subclasses write
    ``_serve``; ``close()`` stops accepting."""

    def __init__(self, backlog=16):
        self.connections = 0
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(backlog)
        self.port = self.srv.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        raise NotImplementedError

    def close(self):
        self.srv.close()


def sse_events(resp):
    """``(event, data)`` of each server-sent event of a streamed ``requests`` response."""
    event = None
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextmanager
def chatport_server(instance_path, *, workers=1, env=None, extra_args=(), log_path=None, serve_args=()):
    """Run ``chatport serve`` on a free port; yield its base URL; stop it by pid.

    ``serve_args`` are options of ``chatport serve`` itself, ``extra_args`` go to gunicorn.

    The instance folder is initialised first (``chatport init``); its JSON output (with the
    admin key, on the first init) is kept in ``<instance>/init.json``, the gunicorn master's pid
    in ``<instance>/server.pid``.
    """
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    environ.update({"CHATPORT_INSTANCE_PATH": str(instance_path),
                    "CHATPORT_PROVIDER_ALLOWED_NETWORKS": '["127.0.0.0/8"]',  # the fakes' address
                    "CHATPORT_ECHO_DIRECTIVES": "true"})  # tests shape echo streams with [echo ...]
    environ.update(env or {})
    cli = [sys.executable, "-m", "app.cli"]
    init = subprocess.run([*cli, "init", "--json"], env=environ, cwd=ROOT, check=True,
                          capture_output=True, timeout=60)
    if init.stdout.strip():  # the first init prints the admin key: keep it for the caller
        with open(os.path.join(str(instance_path), "init.json"), "wb") as fh:
            fh.write(init.stdout)
    log = open(log_path or os.path.join(str(instance_path), "server.log"), "ab")
    proc = subprocess.Popen(
        [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         *serve_args, "--", "--no-control-socket", *extra_args],
        env=environ, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    with open(os.path.join(str(instance_path), "server.pid"), "w") as fh:
        fh.write(str(proc.pid))  # the gunicorn master (``serve`` execs it: app/serve.py)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc=proc)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def worker_pids(master_pid):
    """The pids of a gunicorn master's worker processes (its children)."""
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as fh:
        return [int(pid) for pid in fh.read().split()]


def fake_upstream():
    """The ``FakeOpenAI`` that ``upstream_env`` points a server at (its key and model)."""
    from .fakes import FakeOpenAI

    return FakeOpenAI(api_key="sk-upstream", models=("gpt-test",))


def upstream_env(upstream, admin_key, **settings):
    """Environment for ``chatport serve`` with an admin key and ``openai/gpt-test`` on a
    ``FakeOpenAI`` (key ``sk-upstream``); ``settings`` add ``CHATPORT_<NAME>`` values."""
    env = {"CHATPORT_ADMIN_KEY": admin_key, "CHATPORT_OPENAI_BASE_URL": upstream.base_url,
           "CHATPORT_OPENAI_API_KEY": "sk-upstream", "CHATPORT_OPENAI_MODELS": '["gpt-test"]'}
    env.update({f"CHATPORT_{name}": str(value) for name, value in settings.items()})
    return env

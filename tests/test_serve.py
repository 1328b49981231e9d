"""``chatport serve``'s gunicorn master, run in-process through gunicorn's application API
(app/serve.py): its command line, what the master imports, a live server through it."""
import subprocess
import sys

import requests

from app import serve

from .servers import ROOT, chatport_server, worker_pids


def _config(args, monkeypatch):
    """gunicorn's configuration as ``serve.run`` would build it from ``args``."""
    from gunicorn.app.wsgiapp import WSGIApplication

    monkeypatch.setattr(sys, "argv", ["chatport serve", *args])
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="chatport serve")
    return application.cfg, application.app_uri


def test_the_settings_reach_gunicorn_and_args_after_the_dashes_outrank_them(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no gunicorn.conf.py here
    args = serve.gunicorn_args(host="127.0.0.1", port=8123, workers=3, worker_connections=77,
                               graceful_timeout=9)
    cfg, uri = _config(args, monkeypatch)
    assert uri == "wsgi:app" and not cfg.preload_app
    assert cfg.worker_class_str == "gevent" and cfg.workers == 3 and cfg.worker_connections == 77
    assert cfg.bind == ["127.0.0.1:8123"] and cfg.timeout == 60 and cfg.graceful_timeout == 9
    args = serve.gunicorn_args(host="127.0.0.1", port=8123, workers=3, worker_connections=77,
                               graceful_timeout=9, extra=["--timeout", "5", "--access-logfile", "-"])
    cfg, _ = _config(args, monkeypatch)
    assert cfg.timeout == 5 and cfg.accesslog == "-"


def test_the_master_loads_gunicorn_not_the_app():
    """What `python -m app _gunicorn` imports before gunicorn forks: no peewee, no Flask (their
    module state would be made before the workers' gevent patching)."""
    script = ("import sys\nimport app.__main__, app.serve\n"
              "import gunicorn.app.wsgiapp, gunicorn.arbiter\n"
              "print(sorted(m for m in ('peewee', 'flask', 'app.cli', 'app.storage.db', 'wsgi') "
              "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_live_server_runs_through_the_application_api(tmp_path):
    with chatport_server(tmp_path, workers=2) as base:
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        master = int((tmp_path / "server.pid").read_text())
        with open(f"/proc/{master}/cmdline", "rb") as fh:
            cmdline = fh.read().split(b"\0")
        assert cmdline[1:4] == [b"-m", b"app", b"_gunicorn"]  # serve exec'd the master, same pid
        assert len(worker_pids(master)) == 2

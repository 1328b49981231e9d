"""The gunicorn master of ``chatport serve``, run in-process through gunicorn's application
API, so the one-file binary (which cannot ``exec python -m gunicorn``) serves the same way.

``chatport serve`` reads its settings, then execs a fresh interpreter of the same program
(``python -m app _gunicorn ARGS`` or, frozen, ``chatport _gunicorn ARGS``) that runs ``run``:
the master then holds gunicorn alone, as with ``python -m gunicorn``. A master that had imported
the app (peewee, whose connection state is a ``threading.local`` made at import) would hand
its workers modules that gevent's monkey-patching comes too late for; each worker instead
patches first and imports ``wsgi:app`` itself (wsgi.py), lazily, with no preload.

This module imports nothing of the app: only the standard library and gunicorn.
"""
import sys

APP_URI = "wsgi:app"
# The hidden command of the chatport program that runs this module's ``run``.
COMMAND = "_gunicorn"


def gunicorn_args(*, host, port, workers, worker_connections, graceful_timeout, extra=()):
    """gunicorn's command line for chatport (the app module last): the gevent worker, the
    bind, a 60 s worker timeout, then ``extra`` (what the operator put after ``--``), which
    gunicorn's own parser reads and which outranks what comes before it."""
    return [
        "--worker-class", "gevent",
        "--workers", str(workers),
        "--worker-connections", str(worker_connections),
        "--bind", f"{host}:{port}",
        "--timeout", "60",
        "--graceful-timeout", str(graceful_timeout),
        *extra,
        APP_URI,
    ]


def self_command():
    """The argv prefix that runs this program again: the binary itself when frozen, else this
    interpreter on the ``app`` package (``app/__main__.py``)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "app"]


def run(args):
    """Run gunicorn's master with ``args`` (a gunicorn command line): gunicorn's
    ``WSGIApplication`` parses it with its own parser (plus ``GUNICORN_CMD_ARGS`` and a
    ``gunicorn.conf.py``, as ``python -m gunicorn`` does) and loads the app in each worker."""
    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = ["chatport serve", *args]
    WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="chatport serve").run()

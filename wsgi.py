"""WSGI entry point for gunicorn: ``gunicorn -k gevent wsgi:app``.

gevent must patch before anything imports ssl, socket or peewee.
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001 - must be first

try:  # make psycopg2 cooperative when PostgreSQL is used
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
except ImportError:  # pragma: no cover - psycogreen is only in the postgres extra
    pass

import time  # noqa: E402

import gevent  # noqa: E402
from werkzeug.exceptions import RequestTimeout  # noqa: E402

from app import create_app  # noqa: E402


class BodyReadTimedOut(Exception):
    """Raised inside the server's socket read when the body's time is up. An ``Exception`` (not
    gevent's ``Timeout``, a ``BaseException``): gunicorn then marks the body as failed and closes
    the connection instead of waiting for the rest of the body to reuse it."""


class DeadlineInput:
    """``wsgi.input`` whose reads all end by one deadline, ``seconds`` after the request reached
    the app; a read past it raises werkzeug's ``RequestTimeout`` (a 408 in the dialect's shape)."""

    def __init__(self, stream, seconds):
        self._stream = stream
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def _call(self, method, *args):
        # Past the deadline a read still goes to the server, briefly: what is buffered is read,
        # and a read that would wait fails inside the server's own read (see BodyReadTimedOut).
        remaining = max(self._deadline - time.monotonic(), 0.001)
        try:
            with gevent.Timeout(remaining, BodyReadTimedOut):
                return method(*args)
        except BodyReadTimedOut:
            raise RequestTimeout(f"The request body did not arrive within {self._seconds:g} s") from None

    def read(self, *args):
        return self._call(self._stream.read, *args)

    def readline(self, *args):
        return self._call(self._stream.readline, *args)

    def readlines(self, *args):
        return self._call(self._stream.readlines, *args)

    def __iter__(self):
        return iter(self.readline, b"")


def body_read_deadline(wsgi_app, seconds):
    """WSGI middleware: a request's body must arrive within ``seconds`` (0: no bound), so a
    client that stops sending mid-body holds neither a greenlet nor its connection. (A body the
    app leaves unread gunicorn's gevent worker drains within its keepalive time, or closes.)"""
    if not seconds:
        return wsgi_app

    def middleware(environ, start_response):
        length = environ.get("CONTENT_LENGTH") or ""
        if length in ("", "0") and "HTTP_TRANSFER_ENCODING" not in environ:
            return wsgi_app(environ, start_response)
        environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], float(seconds))
        return wsgi_app(environ, start_response)

    return middleware


app = create_app()
app.wsgi_app = body_read_deadline(app.wsgi_app, app.config["BODY_READ_TIMEOUT"])

# Load the provider plugins and their SDKs as the worker boots, not in its first request
# (importing the openai and anthropic SDKs takes a second or two).
import platform  # noqa: E402

from app.providers.llm import registry  # noqa: E402

registry(app)
# The anthropic SDK puts platform.platform() in its headers (the openai plugin leaves those
# headers out); its first call runs `uname -p` in a subprocess, and under gevent every concurrent
# first request of a fresh worker would fork it. Fill platform's cache once, here.
platform.platform()

# What is loaded by now (Flask, the SDKs, pydantic's models) lives as long as the worker.
# Frozen, it is out of the garbage collector's reach: a full collection under load walks only
# what requests created.
import gc  # noqa: E402

gc.freeze()

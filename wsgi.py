"""WSGI entry point for gunicorn: ``gunicorn -k gevent wsgi:app``.

gevent must patch before anything imports ssl, socket or peewee.
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001 - must be first

try:  # make psycopg2 cooperative when PostgreSQL is used
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
except ImportError:  # pragma: no cover - psycogreen is only in the postgres extra
    pass

from app import create_app  # noqa: E402

app = create_app()

# Load the provider plugins and their SDKs as the worker boots, not in its first request
# (importing the openai and anthropic SDKs takes a second or two).
import platform  # noqa: E402

from app.providers.llm import registry  # noqa: E402

registry(app)
# The anthropic SDK puts platform.platform() in its headers (the openai plugin no longer sends
# them); its first call runs `uname -p` in a subprocess, and under gevent every concurrent first
# request forked it (1,000 streams arriving together on a fresh worker: TTFT p50 10 s instead of
# 4 s). Fill platform's cache once, here.
platform.platform()

# What is loaded by now (Flask, the SDKs, pydantic's models: about 150,000 objects) lives as
# long as the worker. Frozen, it is out of the garbage collector's reach: a full collection
# under load (a thousand streams' objects alive at once) walks only what requests created,
# instead of spending ~50 ms on these each time.
import gc  # noqa: E402

gc.freeze()

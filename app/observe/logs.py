"""Request ids and logs: every log line of a request names its id; ``LOG_FORMAT=json`` writes
JSON lines, with one access line per request.

A request's id is the client's ``X-Request-Id`` when it is sane (1-128 characters of
``[A-Za-z0-9._:-]``), else a new ``req_<24 hex>``; every response carries it as ``X-Request-Id``
(the Anthropic dialect also as its ``request-id``, the same value).
"""
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone

from flask import g, has_request_context, request

SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
HEADER = "X-Request-Id"

access_log = logging.getLogger("chatport.access")


def request_id():
    """This request's id (made on first use)."""
    rid = g.get("request_id")
    if rid is None:
        sent = request.headers.get(HEADER)
        rid = g.request_id = sent if sent and SANE_ID.match(sent) else "req_" + os.urandom(12).hex()
    return rid


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the id of the request being served, or the one an access
    record carries (written after its request's context is gone), or None."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = request_id() if has_request_context() else None
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, request_id, message, the
    fields of an access record (``record.access``) and the traceback of an exception."""

    def format(self, record):
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name,
                 "request_id": getattr(record, "request_id", None), "message": record.getMessage()}
        entry.update(getattr(record, "access", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (as logging's last-resort handler does)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


_handler = None


def configure(config):
    """Give the ``chatport`` loggers one stderr handler (once per process) in ``LOG_FORMAT``
    (``text`` or ``json``); the access log is on with ``ACCESS_LOG`` (default: with json)."""
    global _handler
    fmt = config.get("LOG_FORMAT") or "text"
    if fmt not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, not {fmt!r}")
    if _handler is None:
        _handler = StderrHandler()
        _handler.addFilter(RequestIdFilter())
        logging.getLogger("chatport").addHandler(_handler)
    _handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    enabled = config.get("ACCESS_LOG")
    enabled = fmt == "json" if enabled is None else bool(enabled)
    access_log.setLevel(logging.INFO if enabled else logging.WARNING)
    return enabled


def write_access(rid, method, dialect, route, status, latency_ms, meter):
    """The access line of one request (never the key itself: its id)."""
    fields = {"method": method, "dialect": dialect, "route": route, "status": status,
              "latency_ms": round(latency_ms, 3), "key_id": meter.key_id, "bot_id": meter.bot_id,
              "model": meter.model, "prompt_tokens": meter.prompt_tokens,
              "completion_tokens": meter.completion_tokens}
    access_log.info("%s %s %s %.1fms", method, route, status, latency_ms,
                    extra={"request_id": rid, "access": fields})

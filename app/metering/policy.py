"""Rate limits, credit quotas and usage rows for every dialect, from one place.

- ``classify(path)`` names the dialect and API category of a request from one
  table (README "Rate limits, credits and usage").
- ``enforce(subject, ...)`` runs right after authentication: the bearer-key
  helper ``app.api.common.current_key`` calls it for every key, the channel
  API for its channel (subject ``channel:<id>``). It reserves the call credit
  of a subject with a quota, then checks the rate limit. Over a limit it
  raises the 429 that the dialect's renderer shapes.
- An ``after_request`` hook adds ``RateLimit-*`` headers and, when the
  response is closed (after a stream's last byte, or when the client went
  away), releases the call's stream lease and writes its usage row, which
  settles the credit counter; then it counts the call in the Prometheus
  metrics and writes its access line (``app.observe``).
"""
import logging
import time

from flask import current_app, g, request

from app import metering
from app.errors import QuotaExceeded
from app.metering import limits, usage
from app.metering.credits import CALL_CREDITS
from app.observe import logs, metrics
from app.storage import prepared

log = logging.getLogger("chatport.usage")

UNMETERED = ("/healthz", "/readyz", "/metrics", "/api/docs", "/api/openapi.json", "/static/", "/console")
# The console's pages are not API calls; what it asks of a model (playground turns, automation
# runs) is, metered like the API's under the signed-in admin key.
METERED_CONSOLE = "/console/api/"


def category_table(config):
    """``[(path prefix, dialect, category)]``, longest prefix first."""
    api, ch, oa = config["API_PREFIX"], config["CHANNEL_API_PREFIX"], config["OPENAI_PREFIX"]
    hooks = config.get("HOOKS_PREFIX", "/hooks")
    table = [
        (f"{api}/conversations", "chatport", "conversation"),
        (f"{api}/knowledge", "chatport", "knowledge"),
        (f"{api}/databases", "chatport", "database"),
        (f"{api}/automations", "chatport", "workflow"),
        (f"{api}/runs", "chatport", "workflow"),
        (f"{api}/users", "chatport", "user"),
        (f"{api}/analytics", "chatport", "analytics"),
        (f"{api}/models", "chatport", "models"),
        (f"{api}/account", "chatport", "account"),
        (f"{api}/bots", "chatport", "account"),
        (f"{api}/keys", "chatport", "account"),
        (f"{api}/chat", "chat", "conversation"),
        (f"{api}/get-conversations", "chat", "conversation"),
        (f"{api}/create-chatbot", "chat", "knowledge"),
        (f"{api}/update-chatbot-data", "chat", "knowledge"),
        (f"{api}/update-chatbot-settings", "chat", "account"),
        (f"{api}/get-chatbots", "chat", "account"),
        (f"{api}/delete-chatbot", "chat", "account"),
        (f"{ch}", "channel", "conversation"),  # data-sources paths: knowledge (see classify)
        (f"{oa}/flows", "flows", "workflow"),
        (f"{oa}/generate", "flows", "workflow"),
        (f"{oa}/models", "openai", "models"),
        (f"{oa}/messages", "anthropic", "conversation"),
        (f"{oa}/messages/count_tokens", "anthropic", "models"),  # calls no model: a cheap read
        (f"{oa}", "openai", "conversation"),
        (hooks or "/", "hooks", "workflow"),
        (METERED_CONSOLE.rstrip("/"), "console", "conversation"),
        (f"{METERED_CONSOLE}automations", "console", "workflow"),  # the console's automation runs
    ]
    return sorted(table, key=lambda row: -len(row[0]))


def classify(path):
    """``(dialect, category)`` of a request path."""
    for prefix, dialect, category in current_app.extensions["chatport_categories"]:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            if dialect == "channel" and "/data-sources" in path:
                return dialect, "knowledge"
            return dialect, category
    return "chatport", "account"


def enforce(subject, *, plan=None, overrides=None, quota=None):
    """Quota, then rate limit, for ``subject`` in this request's category.

    Raises QuotaExceeded or RateLimited (both 429, with Retry-After/RateLimit-* headers).
    """
    config = current_app.config
    meter = metering.current()
    meter.key_id = subject
    if quota is not None:
        meter.quota = quota
        try:
            meter.month = limits.reserve(subject, CALL_CREDITS, quota)
        except QuotaExceeded:
            meter.free = True
            raise
        meter.reserved = CALL_CREDITS
    limit = limits.limit_for(plan, overrides, meter.category, config["RATE_LIMIT_PLANS"], config["DEFAULT_PLAN"])
    if limit is not None:
        g.rate_decision = limits.check_rate(subject, meter.category, limit)


def _metered():
    path = request.path
    return path.startswith(METERED_CONSOLE) or (path != "/" and not path.startswith(UNMETERED))


def _start():
    if not _metered():
        return
    g.request_started = time.perf_counter()
    meter = metering.current()
    meter.dialect, meter.category = classify(request.path)
    rule = request.url_rule
    # The metrics' and access log's route: the URL rule, never the raw path (one series per route).
    g.route = rule.rule if rule else "<unmatched>"
    meter.details["endpoint"] = f"{request.method} {rule.rule if rule else request.path}"


def _finish(response):
    if not _metered() or "request_started" not in g:
        return response
    decision = g.get("rate_decision")
    if decision is not None:
        for name, value in limits.headers_for(decision).items():
            response.headers.setdefault(name, value)
    meter, started = metering.current(), g.request_started
    prices, status = current_app.config["MODEL_PRICES"], response.status_code
    route, method, rid = g.route, request.method, logs.request_id()
    access = current_app.extensions.get("chatport_access_log")

    def record_once():  # a response may be closed more than once
        if not meter.details.pop("pending", False):
            return
        if meter.stream_lease is not None:
            try:
                with prepared.session():
                    limits.release_stream(meter.stream_lease)
            except Exception:  # noqa: BLE001 - the lease expires by itself
                log.exception("could not release stream lease %s", meter.stream_lease)
        seconds = time.perf_counter() - started
        credits = usage.record(meter, status=status, latency_ms=seconds * 1000, prices=prices)
        final = meter.status or status  # a stream's error, or the response's status
        if meter.details.get("stream"):
            metrics.OPEN_STREAMS.dec()
        metrics.request_done(meter.dialect, route, final, seconds)
        metrics.model_usage(meter.model, meter.prompt_tokens, meter.completion_tokens, credits)
        if access:
            logs.write_access(rid, method, meter.dialect, route, final, seconds * 1000, meter)

    meter.details["pending"] = True
    response.call_on_close(record_once)
    return response


def check_plans(config):
    """Raises ValueError when ``DEFAULT_PLAN`` or ``CHANNEL_PLAN`` names no plan of
    ``RATE_LIMIT_PLANS`` (such a subject would have no limit at all)."""
    plans = config.get("RATE_LIMIT_PLANS") or {}
    for name in ("DEFAULT_PLAN", "CHANNEL_PLAN"):
        value = config.get(name)
        if value is not None and value not in plans:
            raise ValueError(f"{name} {value!r} is not a plan of RATE_LIMIT_PLANS ({', '.join(sorted(plans))})")


def init_app(app):
    check_plans(app.config)
    app.extensions["chatport_categories"] = category_table(app.config)
    app.before_request(_start)
    app.after_request(_finish)

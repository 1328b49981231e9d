"""Prometheus metrics (``GET /metrics``), one view across gunicorn's workers.

``chatport serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder of the instance folder
before gunicorn starts: each worker then writes its values to memory-mapped files there, a
scrape adds them up (``MultiProcessCollector``) and gunicorn's ``child_exit`` hook
(``app.observe.gunicorn_hooks``) marks a dead worker's live gauges gone. Without the variable
(``flask run``, tests, a bare ``gunicorn wsgi:app``) the values live in this process.

The metric objects are created when this module is first imported, in each worker (there is no
preload), after ``PROMETHEUS_MULTIPROC_DIR`` is known. Everything here is called from the request
hooks of ``app.metering.policy`` and from the engine: a few dictionary lookups and
memory writes per request.
"""
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

# Seconds: API calls run from a millisecond (a read) to minutes (a long stream).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)

REQUESTS = Counter("chatport_requests", "API requests answered, by dialect, URL rule and status",
                   ["dialect", "route", "status"])
LATENCY = Histogram("chatport_request_duration_seconds",
                    "Seconds from a request's arrival to its response's close (a stream's last byte)",
                    ["dialect", "route"], buckets=LATENCY_BUCKETS)
TTFT = Histogram("chatport_time_to_first_token_seconds",
                 "Seconds from a streamed turn's request to the model's first token", ["model"],
                 buckets=TTFT_BUCKETS)
TOKENS = Counter("chatport_tokens", "Tokens of model calls, by model and kind (prompt, completion)",
                 ["model", "kind"])
CREDITS = Counter("chatport_credits", "Credits charged, by model ('' for calls of no model)", ["model"])
OPEN_STREAMS = Gauge("chatport_open_streams", "Streamed turns whose response is still open",
                     multiprocess_mode="livesum")
PROVIDER_ERRORS = Counter("chatport_provider_errors", "Failed model provider calls, by error class",
                          ["kind"])
REFUSALS = Counter("chatport_refusals", "Calls refused for a rate limit or a credit quota, by error code",
                   ["reason"])

# Sync states a knowledge source can be in (app.services.knowledge); each is reported, 0 or not.
KNOWLEDGE_STATES = ("not_synced", "syncing", "synced", "sync_error")
REFUSAL_CODES = frozenset({"rate_limited", "too_many_streams", "quota_exceeded", "credits_exhausted"})


# The labelled children of each request's series, found once: ``labels()`` checks and locks on
# every call, a dict lookup does not (routes, dialects and models are few).
_request_series = {}
_model_series = {}


def request_done(dialect, route, status, seconds):
    """Count one answered request and its latency."""
    key = (dialect, route, status)
    series = _request_series.get(key)
    if series is None:
        series = _request_series[key] = (REQUESTS.labels(dialect, route, str(status)),
                                         LATENCY.labels(dialect, route))
    series[0].inc()
    series[1].observe(seconds)


def model_usage(model, prompt_tokens, completion_tokens, credits):
    """Count a call's tokens and credits under its model ('' for none)."""
    if not (prompt_tokens or completion_tokens or credits):
        return
    model = model or ""
    series = _model_series.get(model)
    if series is None:
        series = _model_series[model] = (TOKENS.labels(model, "prompt"), TOKENS.labels(model, "completion"),
                                          CREDITS.labels(model))
    if prompt_tokens:
        series[0].inc(prompt_tokens)
    if completion_tokens:
        series[1].inc(completion_tokens)
    if credits:
        series[2].inc(credits)


def first_token(model, seconds):
    TTFT.labels(model).observe(seconds)


def provider_error(error):
    """Count a failed provider call: ``error`` is the Provider* error (or the 502 ApiError a
    failing plugin becomes: counted as ``ProviderError``)."""
    from app.errors import ProviderError

    kind = type(error).__name__ if isinstance(error, ProviderError) else "ProviderError"
    PROVIDER_ERRORS.labels(kind).inc()


def refused(error):
    """Count ``error`` when it is a rate-limit or quota refusal (called for every rendered error)."""
    if error.code in REFUSAL_CODES:
        REFUSALS.labels(error.code).inc()


class KnowledgeCollector:
    """``chatport_knowledge_sources{state}``: knowledge sources per sync state, read from the
    database at each scrape (a state nobody is in reads 0)."""

    def collect(self):
        from app.services.knowledge import sources_by_status

        family = GaugeMetricFamily("chatport_knowledge_sources", "Knowledge sources by sync state",
                                   labels=["state"])
        counts = sources_by_status()
        for state in sorted(set(KNOWLEDGE_STATES) | set(counts)):
            family.add_metric([state], counts.get(state, 0))
        yield family


def render():
    """The exposition text of every worker's metrics and the knowledge gauge."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    knowledge = CollectorRegistry(auto_describe=False)
    knowledge.register(KnowledgeCollector())
    return generate_latest(registry) + generate_latest(knowledge)

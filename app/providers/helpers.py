"""Helpers shared by provider plugins (built-in and third-party).

- ``setting``: a value from the app config, else an environment variable.
- ``LazyClient``: one SDK client per process, created on first use (after
  gunicorn forks), never per request.
- ``retry_after``, ``upstream_message``, ``status_error``: error mapping (one rule for every
  plugin: which upstream status becomes which Provider* error); ``sdk_error`` maps the
  exceptions of the Stainless-generated SDKs (openai, anthropic) with it, and
  ``NoRetryOn429`` keeps their clients from sleeping on a 429.
- ``sse_data``: the data of each server-sent event, from response lines; ``byte_lines``:
  the lines of a byte stream (``response.iter_bytes()``) to give it. ``sse_batches``: the same
  grouped by the read that brought them; ``sse_texts``: a stream's text, one piece per read
  (and its other deltas in their place);
  ``body_chunks``: a streamed body without httpx's decoding layers when it has no coding.
- ``check_base_url``: refuse a base URL on a non-public address unless the operator
  allows its network (``PROVIDER_ALLOWED_NETWORKS``).
"""
import json
import math
import os
import threading

from app import errors
from app.providers import netguard
from app.providers.llm import Usage, estimate_tokens, message_tokens


def setting(config, name, default=None, env=None):
    """``config[name]`` if set, else ``os.environ[env]`` if set, else ``default``."""
    value = config.get(name)
    if value is None and env:
        value = os.environ.get(env)
    return default if value is None else value


def check_base_url(provider, base_url, config):
    """Raise ProviderUnavailable when ``base_url`` resolves to a loopback, private, link-local
    or otherwise non-public address outside ``PROVIDER_ALLOWED_NETWORKS`` (a list of CIDRs, from
    the config or the ``CHATPORT_PROVIDER_ALLOWED_NETWORKS`` environment variable). Plugins call
    it before their client is created, so a refused server is never connected to."""
    if not base_url:
        return  # the SDK's own public endpoint
    allowed = as_list(setting(config, "PROVIDER_ALLOWED_NETWORKS", env="CHATPORT_PROVIDER_ALLOWED_NETWORKS"))
    try:
        netguard.check_url(base_url, allowed, setting="PROVIDER_ALLOWED_NETWORKS")
    except netguard.RefusedAddress as exc:
        raise errors.ProviderUnavailable(f"{provider}: base URL refused: {exc}") from None


def as_list(value):
    """A list from a list, a JSON-parsed list, or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        if value.strip().startswith("["):
            return list(json.loads(value))
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


class LazyClient:
    """Holds one client built by ``factory()``; rebuilt if the process forked.

    ``get()`` raises whatever ``factory`` raises (plugins map it).
    """

    def __init__(self, factory):
        self._factory = factory
        self._client = None
        self._pid = None
        self._lock = threading.Lock()

    def get(self):
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._factory()
                    self._pid = os.getpid()
        return self._client

    @property
    def created(self):
        """True once a client exists in this process."""
        return self._client is not None and self._pid == os.getpid()


def status_error(provider, status, headers, detail):
    """The Provider* error for an upstream HTTP error status: 401/403 auth, 429 rate limited
    (with its Retry-After), 408 timeout, other 4xx (but 409) bad request, the rest unavailable."""
    if status in (401, 403):
        return errors.ProviderAuthError(f"{provider} rejected chatport's credentials (HTTP {status})")
    if status == 429:
        return errors.ProviderRateLimited(f"{provider}: {detail}", headers=retry_after(headers))
    if status == 408:
        return errors.ProviderTimeout(f"{provider}: upstream request timeout (HTTP 408)")
    if 400 <= status < 500 and status != 409:
        return errors.ProviderBadRequest(f"{provider}: {detail}")
    return errors.ProviderUnavailable(f"{provider}: HTTP {status}: {detail}")


def sdk_error(exc, provider, sdk):
    """The Provider* error for an exception of ``sdk`` (the ``openai`` or ``anthropic`` module:
    the same exception classes) or of httpx under it; an error already mapped is returned as is.
    Whatever is left (an error event inside a stream, undecodable or misshapen JSON) is
    ``ProviderUnavailable``."""
    import httpx

    if isinstance(exc, errors.ProviderError):
        return exc
    if isinstance(exc, (sdk.APITimeoutError, httpx.TimeoutException)):
        return errors.ProviderTimeout(f"{provider}: no answer within the configured timeout")
    if isinstance(exc, sdk.APIStatusError):
        return status_error(provider, exc.status_code, exc.response.headers, upstream_message(exc))
    if isinstance(exc, (sdk.APIConnectionError, httpx.TransportError)):
        return errors.ProviderUnavailable(f"{provider}: connection failed: {upstream_message(exc)}")
    return errors.ProviderUnavailable(f"{provider}: malformed or failed reply: {upstream_message(exc)}")


class NoRetryOn429:
    """Mixin for an openai/anthropic SDK client: a 429 is not retried (the SDK would sleep on it);
    the caller gets it, with its Retry-After, as ``ProviderRateLimited``."""

    def _should_retry(self, response):
        if response.status_code == 429:
            return False
        return super()._should_retry(response)


def retry_after(headers):
    """Upstream ``Retry-After`` (or ``retry-after-ms``, rounded up) as a header dict, or {}."""
    if headers is None:
        return {}
    value = headers.get("retry-after")
    if value:
        return {"Retry-After": value.strip()}
    millis = headers.get("retry-after-ms")
    try:
        return {"Retry-After": str(max(1, math.ceil(float(millis) / 1000)))} if millis else {}
    except ValueError:
        return {}


def upstream_message(exc, limit=300):
    """A short, single-line description of an upstream error."""
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message")
    text = " ".join(str(message or getattr(exc, "message", None) or exc).split())
    return text[:limit] or type(exc).__name__


def usage_or_estimate(prompt_tokens, completion_tokens, request, text, cached_tokens=0, reasoning_tokens=0):
    """The provider's usage when it reported one, else an estimate marked ``estimated``."""
    if prompt_tokens or completion_tokens:
        return Usage(prompt_tokens=prompt_tokens or 0, completion_tokens=completion_tokens or 0,
                     cached_tokens=cached_tokens or 0, reasoning_tokens=reasoning_tokens or 0)
    prompt = sum(message_tokens(m) for m in request.messages)
    return Usage(prompt_tokens=prompt, completion_tokens=estimate_tokens(text), estimated=True)


def byte_lines(chunks):
    """The lines of a UTF-8 byte stream (LF, CRLF or CR endings), as str, in one pass.

    What ``httpx.Response.iter_lines()`` gives from ``iter_bytes()``, without its text and line
    decoder layers, which cost several percent of a relayed stream's CPU. Splitting at line
    ends never splits a UTF-8 sequence, so each line decodes on its own."""
    for lines in _line_batches(chunks):
        yield from lines


def _line_batches(chunks):
    """For each chunk of a byte stream, the lines it completes (a list, maybe empty); the
    last line, if unterminated, comes after the last chunk."""
    pending = b""
    for chunk in chunks:
        if pending:
            chunk = pending + chunk
        tail = b""
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):  # maybe half of a CRLF: decided by the next chunk
                chunk, tail = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        pending = lines.pop() + tail
        yield [line.decode("utf-8", "replace") for line in lines]
    pending = pending.rstrip(b"\r")
    if pending:
        yield [pending.decode("utf-8", "replace")]


def body_chunks(response):
    """The body of a streamed ``httpx.Response`` as it arrives, as bytes.

    Without a content coding (a provider stream asked for with ``Accept-Encoding: identity``)
    that is the response's own byte stream, without ``iter_bytes()``'s decoder and
    re-chunking layers (three generators and two objects' calls per chunk); with one, it is
    ``iter_bytes()``, which decodes it."""
    if response.headers.get("content-encoding", "").strip().lower() in ("", "identity"):
        return iter(response.stream)
    return response.iter_bytes()


SSE_END = object()  # what an ``sse_texts`` event handler returns for the event that ends the stream


def sse_texts(chunks, on_event):
    """The deltas of a server-sent event stream: its text one piece per read, and the other
    deltas (``Chunk``) in their place.

    ``on_event(data)`` handles each event's data and returns its text (a ``str``, or None), a
    list of deltas (``str`` text and ``Chunk`` objects, for an event that carries more than the
    first choice's text), or ``SSE_END`` to stop there. The text of the events that arrived
    together is passed on as one piece; a ``Chunk`` comes after the text before it. If
    ``on_event`` raises, what the events before it in the same read gave is passed on first,
    so a partial answer keeps everything that arrived."""
    for batch in sse_batches(chunks):
        texts, others, failure, end = [], None, None, False
        try:
            for data in batch:
                text = on_event(data)
                if text is SSE_END:
                    end = True
                    break
                if not text:
                    continue
                if text.__class__ is str:  # the plain-text path: one check per event
                    texts.append(text)
                    continue
                if text.__class__ is not list:
                    raise TypeError(f"an event handler returned {type(text).__name__}")
                if others is None:
                    others = []
                for item in text:
                    if item.__class__ is str:
                        texts.append(item)
                    else:
                        if texts:
                            others.append("".join(texts))
                            texts = []
                        others.append(item)
        except Exception as exc:  # noqa: BLE001 - raised below, after the deltas before it
            failure = exc
        if others:
            yield from others
        if texts:
            yield "".join(texts)
        if failure is not None:
            raise failure
        if end:
            return


def sse_batches(chunks):
    """For each chunk of a byte stream, the ``data`` of the server-sent events it completes.

    What ``sse_data(byte_lines(chunks))`` yields, grouped by the chunk that brought them: a
    provider can then pass on, as one delta, the text of every event that arrived together
    (a worker that falls behind reads many at once) instead of one delta per token."""
    data = []
    for lines in _line_batches(chunks):
        batch = _events(lines, data)
        if batch:
            yield batch
    if data:
        yield ["\n".join(data)]


def sse_data(lines):
    """The ``data`` of each server-sent event in ``lines`` (other fields and comments ignored)."""
    data = []
    for line in lines:
        yield from _events((line,), data)
    if data:
        yield "\n".join(data)


def _events(lines, data):
    """The data of the events that ``lines`` complete. ``data`` holds the data lines of the
    event still open, from one call to the next (the server-sent events format)."""
    done = []
    for line in lines:
        if not line:
            if data:
                done.append("\n".join(data))
                data.clear()
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    return done

"""Built-in ``openai`` provider: the openai SDK against OpenAI or any
OpenAI-compatible server (vLLM, Ollama, llama.cpp server, ...).

Configuration (app config / ``CHATPORT_*``; key and URL also from the usual
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``):

- ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (default: the SDK's, api.openai.com)
- ``OPENAI_MODELS``: model ids registered as ``openai/<id>`` (list or comma
  string; default a few OpenAI models when a key is set, else none)
- ``OPENAI_CONNECT_TIMEOUT`` (5 s), ``OPENAI_READ_TIMEOUT`` (60 s: longest
  silence between bytes), ``OPENAI_MAX_RETRIES`` (1; connection errors and
  5xx before the first delta; a 429 is passed on, never slept on)
- ``OPENAI_COMPATIBLE``: more servers, ``{"ollama": {"base_url": ...,
  "api_key": ..., "models": [...], "connect_timeout", "read_timeout",
  "max_retries", "stream_usage": true}}`` registering ``ollama/<model>``.
"""
import json

import httpx
import openai

from app.providers import (
    SSE_END,
    LazyClient,
    Model,
    NoRetryOn429,
    ProviderAuthError,
    ProviderUnavailable,
    as_list,
    body_chunks,
    check_base_url,
    hookimpl,
    http_client,
    provider_call,
    sdk_error,
    setting,
    sse_texts,
    usage_or_estimate,
)

DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]


class _Client(NoRetryOn429, openai.OpenAI):
    """The SDK client, except that a 429 is not retried (the caller gets it with Retry-After)
    and the SDK's platform telemetry headers (``X-Stainless-OS``, ``-Arch``, ``-Runtime``, ...)
    are not sent: seven headers fewer to build, send and parse on every call. Its default
    headers are built once."""

    def platform_headers(self):
        return {}

    @property
    def default_headers(self):
        # The SDK builds them anew through three classes on every call; for one client they
        # never change (the key goes in the auth headers, built separately).
        cached = self.__dict__.get("_chatport_default_headers")
        if cached is None:
            cached = self.__dict__["_chatport_default_headers"] = super().default_headers
        return cached

    @property
    def user_agent(self):
        return f"OpenAI/Python {self._version}"  # not the subclass's name

    def _prepare_url(self, url):
        # The SDK parses and joins the same path with the same base URL on every call (~3% of a
        # proxied call's CPU); httpx.URL is immutable, so the result is kept per path.
        cache = self.__dict__.setdefault("_chatport_urls", {})
        key = (str(self.base_url), url)
        prepared = cache.get(key)
        if prepared is None:
            prepared = cache[key] = super()._prepare_url(url)
        return prepared


def map_error(exc, provider="openai"):
    """Translate an openai/httpx exception into the ``app.errors`` Provider* taxonomy."""
    if isinstance(exc, openai.OpenAIError) and not isinstance(exc, openai.APIError) and "api_key" in str(exc):
        return ProviderAuthError(f"{provider}: no API key configured")  # raised before any request
    return sdk_error(exc, provider, openai)


# A stream is read as it comes: ask for it uncompressed (body_chunks still decodes one that is not).
_STREAM_HEADERS = {"X-Stainless-Raw-Response": "stream", "Accept-Encoding": "identity"}

try:  # the SDK's own request options type, to copy a template of instead of building one per call
    from openai._compat import model_copy
    from openai._models import FinalRequestOptions
except ImportError:  # pragma: no cover - an SDK that moved them: plain client.post
    FinalRequestOptions = None
_OPTIONS = {}


def _post(client, body, stream=False):
    """What ``client.post("/chat/completions", body=body, cast_to=httpx.Response)`` does.

    ``post`` builds its request options with pydantic's ``model_construct`` on every call
    (about 17 µs, 2% of a proxied call); here a template per kind of call is built once and
    copied (1.4 µs). The request then goes through the same ``client.request``: auth, headers,
    timeouts, retries and status errors."""
    headers = _STREAM_HEADERS if stream else None
    if FinalRequestOptions is None:
        return client.post("/chat/completions", body=body, cast_to=httpx.Response,
                           options={"headers": headers} if headers else {})
    template = _OPTIONS.get(stream)
    if template is None:
        extra = {"headers": headers} if headers else {}
        template = _OPTIONS[stream] = FinalRequestOptions.construct(
            method="post", url="/chat/completions", json_data=None, **extra)
    options = model_copy(template)
    options.json_data = body
    return client.request(httpx.Response, options)


# Undecodable JSON is a ValueError; JSON of the wrong shape surfaces as the others.
UPSTREAM_ERRORS = (openai.OpenAIError, httpx.HTTPError, ValueError, AttributeError, TypeError,
                   KeyError, IndexError)


class OpenAIChatModel(Model):
    """A chat model served by an OpenAI-compatible Chat Completions endpoint."""

    def __init__(self, provider, model_id, client, stream_usage=True, description=""):
        self.provider = provider
        self.model_id = model_id
        self.client = client
        self.stream_usage = stream_usage
        self.description = description

    def _params(self, request):
        params = {"model": self.model_id, "messages": request.messages}
        for name in ("temperature", "max_tokens", "stop", "user"):
            value = getattr(request, name)
            if value is not None:
                params[name] = value
        return params

    def stream(self, request):
        """Yield text deltas then one Usage. Raises Provider* errors (app.errors)."""
        try:
            client = self.client.get()
            if not request.stream:
                # client.post skips the SDK's per-field request transform (several ms for a
                # long history) but keeps its auth, timeouts, retries and status errors.
                with provider_call(stream=False):
                    reply = _post(client, self._params(request)).json()
        except UPSTREAM_ERRORS as exc:
            raise map_error(exc, self.provider) from exc
        if not request.stream:
            try:
                text, usage = self._parse_completion(reply, request)
            except UPSTREAM_ERRORS as exc:
                raise map_error(exc, self.provider) from exc
            if text:
                yield text
            yield usage
            return
        yield from self._from_stream(client, request)

    def _parse_completion(self, reply, request):
        """``(text, Usage)`` of a ``chat.completion``. Raises ProviderUnavailable if it has no choices."""
        if not isinstance(reply, dict) or not reply.get("choices"):
            raise ProviderUnavailable(f"{self.provider}: reply without choices")
        text = (reply["choices"][0].get("message") or {}).get("content") or ""
        usage = reply.get("usage") or {}
        return text, usage_or_estimate(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                                       request, text)

    def _from_stream(self, client, request):
        # The SDK sends the request (auth, timeouts, retries before the stream starts,
        # status errors); the chunks are parsed here with json.loads: building the SDK's
        # pydantic objects for every chunk was over half the CPU time of a stream.
        extra = {"stream_options": {"include_usage": True}} if self.stream_usage else {}
        try:
            with provider_call(stream=True):
                response = _post(client, {**self._params(request), "stream": True, **extra}, stream=True)
        except UPSTREAM_ERRORS as exc:
            raise map_error(exc, self.provider) from exc
        parts, state = [], {"usage": None, "finished": False}

        def on_event(data):
            if data.startswith("[DONE]"):
                return SSE_END
            chunk = json.loads(data)
            if chunk.get("error"):
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise ProviderUnavailable(f"{self.provider}: {message}")
            if chunk.get("usage"):
                state["usage"] = chunk["usage"]
            text = None
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                text = (choice.get("delta") or {}).get("content") or text
                if choice.get("finish_reason"):
                    state["finished"] = True
            return text

        try:
            for text in sse_texts(body_chunks(response), on_event):
                parts.append(text)
                yield text
        except UPSTREAM_ERRORS as exc:
            raise map_error(exc, self.provider) from exc
        finally:
            response.close()  # also on GeneratorExit: releases the HTTP connection
        if not state["finished"]:
            raise ProviderUnavailable(f"{self.provider}: the stream ended before the reply did")
        usage = state["usage"] or {}
        yield usage_or_estimate(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                                request, "".join(parts))


def _client_factory(provider, base_url, api_key, connect_timeout, read_timeout, max_retries, config):
    def factory():
        check_base_url(provider, base_url, config)
        timeout = httpx.Timeout(float(read_timeout), connect=float(connect_timeout))
        return _Client(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=int(max_retries),
                       default_headers={"X-Stainless-Async": openai.Omit()},
                       http_client=http_client(config, timeout))

    return factory


def _servers(config):
    """(provider name, settings) for OpenAI itself and each OPENAI_COMPATIBLE server."""
    key = setting(config, "OPENAI_API_KEY", env="OPENAI_API_KEY")
    models = config.get("OPENAI_MODELS")
    models = as_list(models) if models is not None else (DEFAULT_MODELS if key else [])
    yield "openai", {
        "base_url": setting(config, "OPENAI_BASE_URL", env="OPENAI_BASE_URL"),
        "api_key": key, "models": models,
        "connect_timeout": config.get("OPENAI_CONNECT_TIMEOUT", 5),
        "read_timeout": config.get("OPENAI_READ_TIMEOUT", 60),
        "max_retries": config.get("OPENAI_MAX_RETRIES", 1),
    }
    for name, server in (config.get("OPENAI_COMPATIBLE") or {}).items():
        yield name, {"connect_timeout": config.get("OPENAI_CONNECT_TIMEOUT", 5),
                     "read_timeout": config.get("OPENAI_READ_TIMEOUT", 60),
                     "max_retries": config.get("OPENAI_MAX_RETRIES", 1),
                     "api_key": "not-needed", **server}


@hookimpl
def register_models(register, config):
    for provider, server in _servers(config):
        models = as_list(server.get("models"))
        if not models:
            continue
        # A local server usually needs no key; the SDK insists on one.
        api_key = server.get("api_key") or ("not-needed" if server.get("base_url") else None)
        client = LazyClient(_client_factory(provider, server.get("base_url"), api_key,
                                            server["connect_timeout"], server["read_timeout"],
                                            server["max_retries"], config))
        where = server.get("base_url") or "api.openai.com"
        for model_id in models:
            register(OpenAIChatModel(provider, model_id, client,
                                     stream_usage=server.get("stream_usage", True),
                                     description=f"OpenAI-compatible model at {where}"))

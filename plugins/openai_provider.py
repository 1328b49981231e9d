"""Built-in ``openai`` provider: the openai SDK against OpenAI or any
OpenAI-compatible server (vLLM, Ollama, llama.cpp server, ...).

Configuration (app config / ``CHATPORT_*``; key and URL also from the usual
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``):

- ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (default: the SDK's, api.openai.com)
- ``OPENAI_MODELS``: model ids registered as ``openai/<id>`` (list or comma
  string; default a few OpenAI models when a key is set, else none)
- ``OPENAI_EMBEDDING_MODELS``: embedding model ids registered as
  ``openai/<id>`` (list or comma string; default ``text-embedding-3-small``
  when a key is set, else none)
- ``OPENAI_CONNECT_TIMEOUT`` (5 s), ``OPENAI_READ_TIMEOUT`` (60 s: longest
  silence between bytes), ``OPENAI_MAX_RETRIES`` (1; connection errors and
  5xx before the first delta; a 429 is passed on, never slept on)
- ``OPENAI_COMPATIBLE``: more servers, ``{"ollama": {"base_url": ...,
  "api_key": ..., "models": [...], "embedding_models": [...],
  "connect_timeout", "read_timeout", "max_retries", "stream_usage": true}}``
  registering ``ollama/<model>`` (chat) and ``ollama/<embedding model>``.

Chat models send every field of a ``ChatRequest`` (see ``OpenAIChatModel``);
OpenAI's reasoning models (ids starting ``o1``, ``o3``, ``o4``, ``gpt-5``) get
``max_completion_tokens`` instead of ``max_tokens``. Replies come back as
``str`` deltas for plain text and ``Chunk`` deltas for tool calls, logprobs,
``n`` > 1 choices and finish reasons other than ``stop``.
"""
import array
import base64
import json
import sys
from urllib.parse import urlsplit

import httpx
import openai

from app.providers import (
    FEATURES,
    SSE_END,
    Chunk,
    EmbeddingModel,
    Embeddings,
    LazyClient,
    Model,
    NoRetryOn429,
    ProviderAuthError,
    ProviderUnavailable,
    Usage,
    as_list,
    body_chunks,
    check_base_url,
    content_text,
    estimate_tokens,
    hookimpl,
    http_client,
    provider_call,
    sdk_error,
    setting,
    sse_texts,
    usage_or_estimate,
)

DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]
DEFAULT_EMBEDDING_MODELS = ["text-embedding-3-small"]


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


def _post(client, path, body, stream=False):
    """What ``client.post(path, body=body, cast_to=httpx.Response)`` does.

    ``post`` builds its request options with pydantic's ``model_construct`` on every call
    (about 17 µs, 2% of a proxied call); here a template per kind of call (path, streamed or
    not) is built once and copied (1.4 µs). The request then goes through the same
    ``client.request``: auth, headers, timeouts, retries and status errors."""
    headers = _STREAM_HEADERS if stream else None
    if FinalRequestOptions is None:
        return client.post(path, body=body, cast_to=httpx.Response,
                           options={"headers": headers} if headers else {})
    template = _OPTIONS.get((path, stream))
    if template is None:
        extra = {"headers": headers} if headers else {}
        template = _OPTIONS[(path, stream)] = FinalRequestOptions.construct(
            method="post", url=path, json_data=None, **extra)
    options = model_copy(template)
    options.json_data = body
    return client.request(httpx.Response, options)


# Undecodable JSON is a ValueError; JSON of the wrong shape surfaces as the others.
UPSTREAM_ERRORS = (openai.OpenAIError, httpx.HTTPError, ValueError, AttributeError, TypeError,
                   KeyError, IndexError)

# Model ids of OpenAI's reasoning models: they take ``max_completion_tokens`` (and refuse
# ``max_tokens``).
REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")

# ChatRequest fields sent under their own name when set (None, [] and {} are never sent).
_FIELDS = ("temperature", "stop", "user", "tools", "tool_choice", "parallel_tool_calls", "seed",
           "top_logprobs", "top_p", "presence_penalty", "frequency_penalty", "logit_bias",
           "reasoning_effort")
# What a request's ``passthrough`` may not set: the fields chatport itself decides.
_RESERVED = frozenset({"model", "messages", "stream", "stream_options"})


class OpenAIChatModel(Model):
    """A chat model served by an OpenAI-compatible Chat Completions endpoint.

    Canonical messages are already in the Chat Completions shape and go as they are, except
    that the ``developer`` role (OpenAI's newer name for ``system``) becomes ``system`` unless
    the server is OpenAI's own API (``official``): OpenAI-compatible servers do not all know
    it, and OpenAI reads both alike. Every ``ChatRequest`` field is sent when set
    (``metadata`` to OpenAI's own API only); ``passthrough`` fields are merged into the body.
    ``official`` defaults to ``provider == "openai"``; the plugin registers it as true only
    when that provider's base URL is unset or on api.openai.com."""

    supports = frozenset(FEATURES)  # an OpenAI-compatible server takes every field as it is

    def __init__(self, provider, model_id, client, stream_usage=True, description="", official=None):
        self.provider = provider
        self.model_id = model_id
        self.client = client
        self.stream_usage = stream_usage
        self.description = description
        self.official = provider == "openai" if official is None else official
        self.max_tokens_name = "max_completion_tokens" if model_id.startswith(REASONING_MODELS) \
            else "max_tokens"

    def _params(self, request):
        messages = request.messages
        if not self.official and any(m.get("role") == "developer" for m in messages):
            messages = [{**m, "role": "system"} if m.get("role") == "developer" else m
                        for m in messages]
        params = {"model": self.model_id, "messages": messages}
        if request.max_tokens is not None:
            params[self.max_tokens_name] = request.max_tokens
        for name in _FIELDS:
            value = getattr(request, name)
            if value is not None and value != [] and value != {}:
                params[name] = value
        if request.response_format and request.response_format.get("type", "text") != "text":
            params["response_format"] = request.response_format
        if request.logprobs:
            params["logprobs"] = True
        if request.n is not None and request.n != 1:
            params["n"] = request.n
        if request.metadata and self.official:
            params["metadata"] = request.metadata
        for name, value in request.passthrough.items():
            if name not in params and name not in _RESERVED:
                params[name] = value
        return params

    def stream(self, request):
        """Yield deltas (``str`` for the first choice's plain text, ``Chunk`` for tool calls,
        logprobs, other choices and finish reasons: all but the first choice's ``stop``, which
        is implied) then one Usage. Raises Provider* errors (app.errors)."""
        try:
            client = self.client.get()
            if not request.stream:
                # client.post skips the SDK's per-field request transform (several ms for a
                # long history) but keeps its auth, timeouts, retries and status errors.
                with provider_call(stream=False):
                    reply = _post(client, "/chat/completions", self._params(request)).json()
        except UPSTREAM_ERRORS as exc:
            raise map_error(exc, self.provider) from exc
        if not request.stream:
            try:
                deltas = self._completion_deltas(reply, request)
            except UPSTREAM_ERRORS as exc:
                raise map_error(exc, self.provider) from exc
            yield from deltas
            return
        yield from self._from_stream(client, request)

    def _completion_deltas(self, reply, request):
        """The deltas of a ``chat.completion``, Usage last: for each choice its text (a
        ``str`` for the first choice when that is all it has), else one ``Chunk`` with its
        tool calls, logprobs and finish reason. Raises ProviderUnavailable if it has no choices."""
        if not isinstance(reply, dict) or not reply.get("choices"):
            raise ProviderUnavailable(f"{self.provider}: reply without choices")
        deltas = []
        for choice in reply["choices"]:
            message = choice.get("message") or {}
            text = _text(message.get("content"))
            calls = message.get("tool_calls")
            logprobs = (choice.get("logprobs") or {}).get("content")
            finish = choice.get("finish_reason")
            index = choice.get("index", 0)
            if index == 0 and not calls and not logprobs and finish in (None, "stop"):
                if text:
                    deltas.append(text)
                continue
            tool_calls = None
            if calls:
                tool_calls = [{**_fragment(call, position), "index": position}
                              for position, call in enumerate(calls)]
            deltas.append(Chunk(text, index, tool_calls, logprobs or None, finish))
        deltas.append(_usage(reply.get("usage"), request, deltas))
        return deltas

    def _from_stream(self, client, request):
        # The SDK sends the request (auth, timeouts, retries before the stream starts,
        # status errors); the chunks are parsed here with json.loads: building the SDK's
        # pydantic objects for every chunk was over half the CPU time of a stream.
        extra = {"stream_options": {"include_usage": True}} if self.stream_usage else {}
        try:
            with provider_call(stream=True):
                response = _post(client, "/chat/completions",
                                 {**self._params(request), "stream": True, **extra}, stream=True)
        except UPSTREAM_ERRORS as exc:
            raise map_error(exc, self.provider) from exc
        said, state = [], {"usage": None, "finished": False}

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
            text = more = None
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                finish = choice.get("finish_reason")
                if finish:
                    state["finished"] = True
                logprobs = choice.get("logprobs")
                if logprobs:  # {"content": [...]}; some servers send {"content": null} unasked
                    logprobs = logprobs.get("content")
                if choice.get("index", 0) == 0 and not logprobs and not delta.get("tool_calls") \
                        and finish in (None, "stop"):
                    text = delta.get("content") or text  # the plain-text path
                    continue
                piece = _stream_chunk(choice, delta, finish, logprobs)
                if piece is not None:
                    more = [piece] if more is None else more + [piece]
            if more is None:
                return text
            return [text, *more] if text else more

        try:
            for delta in sse_texts(body_chunks(response), on_event):
                said.append(delta)
                yield delta
        except UPSTREAM_ERRORS as exc:
            raise map_error(exc, self.provider) from exc
        finally:
            response.close()  # also on GeneratorExit: releases the HTTP connection
        if not state["finished"]:
            raise ProviderUnavailable(f"{self.provider}: the stream ended before the reply did")
        yield _usage(state["usage"], request, said)


def _text(content):
    """A reply message's text: a string, or (some servers) a list of text parts. Raises
    TypeError for anything else (a malformed reply)."""
    if content is None or content.__class__ is str:
        return content or ""
    if content.__class__ is not list:
        raise TypeError("message content that is not text")
    return content_text(content)


def _stream_chunk(choice, delta, finish, logprobs):
    """The ``Chunk`` of one streamed choice delta that is more than the first choice's text
    (None when it carries nothing, like another choice's opening ``role`` delta)."""
    text = _text(delta.get("content"))
    calls = delta.get("tool_calls")
    tool_calls = [_fragment(call, position) for position, call in enumerate(calls)] if calls else None
    if not (text or tool_calls or logprobs or finish):
        return None
    return Chunk(text, choice.get("index", 0), tool_calls, logprobs or None, finish)


def _fragment(call, position):
    """A tool call (or a streamed fragment of one) as ``{"index", "id", "name", "arguments"}``.
    Raises ValueError for one whose arguments are not text (a malformed reply)."""
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if arguments is None:
        arguments = ""
    elif arguments.__class__ is not str:
        raise ValueError("tool call arguments that are not a string")
    return {"index": call.get("index", position), "id": call.get("id"), "name": function.get("name"),
            "arguments": arguments}


def _usage(usage, request, said):
    """The reply's ``usage`` (with its cached and reasoning token details) as a Usage, or an
    estimate from the request and ``said`` (the deltas: their text and tool call arguments)
    when there is none."""
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if prompt or completion:  # reported: nothing to estimate
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        return usage_or_estimate(prompt, completion, request, "", cached, reasoning)
    text = []
    for delta in said:
        if delta.__class__ is str:
            text.append(delta)
        else:
            text.append(delta.text)
            text.extend(call["arguments"] for call in delta.tool_calls or ())
    return usage_or_estimate(None, None, request, "".join(text))


# Vector sizes of OpenAI's embedding models (listed with the model; 0: not known).
EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                        "text-embedding-ada-002": 1536}


class OpenAIEmbeddingModel(EmbeddingModel):
    """An embedding model served by an OpenAI-compatible ``/embeddings`` endpoint.

    OpenAI's own API (``official``, as for chat models) is asked for base64 vectors (float32:
    less than half the bytes of JSON numbers, and no float parsing); other servers for plain
    floats, which they all give. A base64 vector in a reply is decoded either way."""

    supports = frozenset({"dimensions", "tokens"})

    def __init__(self, provider, model_id, client, description="", official=None):
        self.provider = provider
        self.model_id = model_id
        self.client = client
        self.description = description
        self.dimensions = EMBEDDING_DIMENSIONS.get(model_id, 0)
        official = provider == "openai" if official is None else official
        self.encoding = "base64" if official else "float"

    def _params(self, request):
        params = {"model": self.model_id, "input": request.inputs, "encoding_format": self.encoding}
        if request.dimensions is not None:
            params["dimensions"] = request.dimensions
        if request.user is not None:
            params["user"] = request.user
        return params

    def embed(self, request):
        """One vector per input, in input order, and the usage (estimated when the server
        reports none). Raises Provider* errors (app.errors)."""
        try:
            client = self.client.get()
            with provider_call(stream=False):
                reply = _post(client, "/embeddings", self._params(request)).json()
            return self._embeddings(reply, request)
        except UPSTREAM_ERRORS as exc:
            raise map_error(exc, self.provider) from exc

    def _embeddings(self, reply, request):
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or len(data) != len(request.inputs):
            raise ProviderUnavailable(f"{self.provider}: reply without one embedding per input")
        vectors = [None] * len(data)
        for position, item in enumerate(data):
            index = item.get("index", position)
            vector = item["embedding"]
            if isinstance(vector, str):
                vector = _floats(vector)
            elif isinstance(vector, list):
                array.array("d", vector)  # numbers only, else TypeError: a malformed reply
            else:
                vector = None
            if not vector or index.__class__ is not int or not 0 <= index < len(vectors):
                raise ProviderUnavailable(f"{self.provider}: a misshapen embedding in the reply")
            vectors[index] = vector
        if any(vector is None for vector in vectors):
            raise ProviderUnavailable(f"{self.provider}: reply without one embedding per input")
        prompt = (reply.get("usage") or {}).get("prompt_tokens")
        if prompt:
            usage = Usage(prompt_tokens=prompt)
        else:
            usage = Usage(prompt_tokens=sum(len(i) if isinstance(i, list) else estimate_tokens(i)
                                            for i in request.inputs), estimated=True)
        return Embeddings(vectors, usage)


def _floats(encoded):
    """The float32 vector of a base64 embedding (little-endian, as OpenAI sends it)."""
    values = array.array("f", base64.b64decode(encoded, validate=True))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


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
    embedding_models = config.get("OPENAI_EMBEDDING_MODELS")
    embedding_models = as_list(embedding_models) if embedding_models is not None else \
        (DEFAULT_EMBEDDING_MODELS if key else [])
    yield "openai", {
        "base_url": setting(config, "OPENAI_BASE_URL", env="OPENAI_BASE_URL"),
        "api_key": key, "models": models, "embedding_models": embedding_models,
        "connect_timeout": config.get("OPENAI_CONNECT_TIMEOUT", 5),
        "read_timeout": config.get("OPENAI_READ_TIMEOUT", 60),
        "max_retries": config.get("OPENAI_MAX_RETRIES", 1),
    }
    for name, server in (config.get("OPENAI_COMPATIBLE") or {}).items():
        yield name, {"connect_timeout": config.get("OPENAI_CONNECT_TIMEOUT", 5),
                     "read_timeout": config.get("OPENAI_READ_TIMEOUT", 60),
                     "max_retries": config.get("OPENAI_MAX_RETRIES", 1),
                     "api_key": "not-needed", **server}


def _official(provider, base_url):
    """Whether ``provider`` is OpenAI's own API (not a server behind OPENAI_BASE_URL)."""
    return provider == "openai" and (not base_url or urlsplit(base_url).hostname == "api.openai.com")


def _registrations(config, kind):
    """(provider, model id, lazy client, settings, where) of each configured model of ``kind``
    (the server setting ``models`` or ``embedding_models``); one client per server and kind,
    created on first use."""
    for provider, server in _servers(config):
        models = as_list(server.get(kind))
        if not models:
            continue
        # A local server usually needs no key; the SDK insists on one.
        api_key = server.get("api_key") or ("not-needed" if server.get("base_url") else None)
        client = LazyClient(_client_factory(provider, server.get("base_url"), api_key,
                                            server["connect_timeout"], server["read_timeout"],
                                            server["max_retries"], config))
        where = server.get("base_url") or "api.openai.com"
        for model_id in models:
            yield provider, model_id, client, server, where


@hookimpl
def register_models(register, config):
    for provider, model_id, client, server, where in _registrations(config, "models"):
        register(OpenAIChatModel(provider, model_id, client,
                                 stream_usage=server.get("stream_usage", True),
                                 description=f"OpenAI-compatible model at {where}",
                                 official=_official(provider, server.get("base_url"))))


@hookimpl
def register_embedding_models(register, config):
    for provider, model_id, client, server, where in _registrations(config, "embedding_models"):
        register(OpenAIEmbeddingModel(provider, model_id, client,
                                      description=f"OpenAI-compatible embedding model at {where}",
                                      official=_official(provider, server.get("base_url"))))

"""Built-in ``anthropic`` provider: the anthropic SDK (Messages API).

Configuration (app config / ``CHATPORT_*``; key and URL also from the usual
``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``):

- ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``
- ``ANTHROPIC_MODELS``: ids registered as ``anthropic/<id>`` (default a few
  Claude models when a key is set, else none)
- ``ANTHROPIC_MAX_TOKENS`` (1024): sent when a request sets none (the API
  requires it)
- ``ANTHROPIC_CONNECT_TIMEOUT`` (5 s), ``ANTHROPIC_READ_TIMEOUT`` (60 s),
  ``ANTHROPIC_MAX_RETRIES`` (1; a 429 is passed on, never slept on)

The request and reply model is translated to and from the Messages API by
``plugins/anthropic_messages.py`` (tools, tool results, images, a ``response_format``
as a forced tool, finish reasons, usage with the prompt cache). An ``error`` event after
HTTP 200 and a stream without ``message_stop`` are provider errors.
"""
import json

import httpx

from app.providers import (
    LazyClient,
    Model,
    ProviderAuthError,
    ProviderUnavailable,
    as_list,
    body_chunks,
    check_base_url,
    hookimpl,
    http_client,
    provider_call,
    setting,
    sse_batches,
    sse_texts,
)

from . import anthropic_messages as messages

DEFAULT_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5"]


def _sdk():
    """The SDK glue (plugins/anthropic_sdk.py), imported when first needed."""
    from . import anthropic_sdk

    return anthropic_sdk


def map_error(exc, provider="anthropic"):
    """Translate an anthropic/httpx exception into the ``app.errors`` Provider* taxonomy."""
    return _sdk().map_error(exc, provider)


class AnthropicChatModel(Model):
    """A Claude model through the Messages API (translation: plugins/anthropic_messages.py).

    What the API has no equivalent for (``n`` > 1, logprobs, seed, penalties, logit_bias,
    audio and file parts, fields passed through) is refused by ``Model.check``; so is
    ``reasoning_effort`` (extended thinking needs its own token budget and sampling rules)."""

    provider = "anthropic"
    supports = frozenset({"stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "images",
                          "top_p"})

    def __init__(self, model_id, client, default_max_tokens=1024, description=""):
        self.model_id = model_id
        self.client = client
        self.default_max_tokens = int(default_max_tokens)
        self.description = description

    def _params(self, request):
        """The Messages API parameters and the name of the response tool (or None)."""
        return messages.params(request, self.model_id, self.default_max_tokens)

    def stream(self, request):
        """Yield deltas (text, tool-call Chunks, a finish reason other than ``stop``), then one
        Usage. Raises Provider* errors (app.errors)."""
        params, response_tool = self._params(request)
        try:
            client = self.client.get()
            if not request.stream:
                with provider_call(stream=False):
                    raw = client.messages.with_raw_response.create(**params)
                # Parsed with json.loads, as the stream is: the SDK's objects cost more and
                # are not needed.
                reply = json.loads(raw.http_response.content)
                deltas = list(messages.reply_deltas(reply, request, response_tool))
        except _sdk().UPSTREAM_ERRORS as exc:
            raise map_error(exc) from exc
        if not request.stream:
            yield from deltas
            return
        yield from self._from_stream(client, request, params, response_tool)

    def _from_stream(self, client, request, params, response_tool):
        # The SDK sends the request (auth, timeouts, retries, status errors); events are
        # parsed here with json.loads, which costs half the CPU of the SDK's event objects.
        try:
            with provider_call(stream=True):
                response = client.messages.with_streaming_response.create(**params, stream=True).__enter__()
        except _sdk().UPSTREAM_ERRORS as exc:
            raise map_error(exc) from exc
        state = messages.StreamState(response_tool)
        parts = []
        chunks = body_chunks(response.http_response)
        if "tools" in params:
            deltas = messages.batched(sse_batches(chunks), state.on_event)
        else:  # text only: the text of each read as one str, and no per-event work beyond it
            def on_event(data):
                event = json.loads(data)
                if event.get("type") == "content_block_delta":
                    return event["delta"].get("text")
                return state.on_meta(event)

            deltas = sse_texts(chunks, on_event)
        try:
            for delta in deltas:
                if delta.__class__ is str:
                    parts.append(delta)
                yield delta
        except _sdk().UPSTREAM_ERRORS as exc:
            raise map_error(exc) from exc
        finally:
            response.close()  # also on GeneratorExit: releases the HTTP connection
        if not state.finished:
            raise ProviderUnavailable("anthropic: the stream ended before message_stop")
        yield from state.end(request, "".join(parts))


@hookimpl
def register_models(register, config):
    key = setting(config, "ANTHROPIC_API_KEY", env="ANTHROPIC_API_KEY")
    models = config.get("ANTHROPIC_MODELS")
    models = as_list(models) if models is not None else (DEFAULT_MODELS if key else [])
    if not models:
        return
    base_url = setting(config, "ANTHROPIC_BASE_URL", env="ANTHROPIC_BASE_URL")
    connect = float(config.get("ANTHROPIC_CONNECT_TIMEOUT", 5))
    read = float(config.get("ANTHROPIC_READ_TIMEOUT", 60))
    retries = int(config.get("ANTHROPIC_MAX_RETRIES", 1))

    def factory():
        if not key:
            raise ProviderAuthError("anthropic: no API key configured (ANTHROPIC_API_KEY)")
        check_base_url("anthropic", base_url, config)
        timeout = httpx.Timeout(read, connect=connect)
        return _sdk().Client(api_key=key, base_url=base_url, max_retries=retries, timeout=timeout,
                             http_client=http_client(config, timeout))

    client = LazyClient(factory)
    for model_id in models:
        register(AnthropicChatModel(model_id, client, config.get("ANTHROPIC_MAX_TOKENS", 1024),
                                    description=f"Anthropic model at {base_url or 'api.anthropic.com'}"))

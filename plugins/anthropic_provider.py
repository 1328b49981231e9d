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

System messages become the ``system`` parameter. An ``error`` event after
HTTP 200 and a stream without ``message_stop`` are provider errors.
"""
import json

import httpx

from app.providers import (
    LazyClient,
    Model,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderRateLimited,
    ProviderUnavailable,
    as_list,
    body_chunks,
    check_base_url,
    hookimpl,
    http_client,
    provider_call,
    setting,
    sse_texts,
    usage_or_estimate,
)

DEFAULT_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5"]
# Error event types (sent after HTTP 200) → the status they stand for.
EVENT_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
                "api_error": 500, "overloaded_error": 529}


def _sdk():
    """The SDK glue (plugins/anthropic_sdk.py), imported when first needed."""
    from . import anthropic_sdk

    return anthropic_sdk


def map_error(exc, provider="anthropic"):
    """Translate an anthropic/httpx exception into the ``app.errors`` Provider* taxonomy."""
    return _sdk().map_error(exc, provider)


class AnthropicChatModel(Model):
    """A Claude model through the Messages API."""

    provider = "anthropic"

    def __init__(self, model_id, client, default_max_tokens=1024, description=""):
        self.model_id = model_id
        self.client = client
        self.default_max_tokens = int(default_max_tokens)
        self.description = description

    def _params(self, request):
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        params = {"model": self.model_id,
                  "messages": [{"role": m["role"], "content": m["content"]}
                               for m in request.messages if m["role"] != "system"],
                  "max_tokens": request.max_tokens or self.default_max_tokens}
        if system:
            params["system"] = system
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.user:
            params["metadata"] = {"user_id": request.user}
        return params

    def stream(self, request):
        """Yield text deltas then one Usage. Raises Provider* errors (app.errors)."""
        try:
            client = self.client.get()
            if not request.stream:
                with provider_call(stream=False):
                    reply = client.messages.create(**self._params(request))
        except _sdk().UPSTREAM_ERRORS as exc:
            raise map_error(exc) from exc
        if not request.stream:
            try:
                text = "".join(block.text for block in reply.content if block.type == "text")
                usage = usage_or_estimate(reply.usage.input_tokens, reply.usage.output_tokens,
                                          request, text)
            except _sdk().UPSTREAM_ERRORS as exc:
                raise map_error(exc) from exc
            if text:
                yield text
            yield usage
            return
        yield from self._from_stream(client, request)

    def _from_stream(self, client, request):
        # The SDK sends the request (auth, timeouts, retries, status errors); events are
        # parsed here with json.loads, which costs half the CPU of the SDK's event objects.
        try:
            with provider_call(stream=True):
                response = client.messages.with_streaming_response.create(
                    **self._params(request), stream=True).__enter__()
        except _sdk().UPSTREAM_ERRORS as exc:
            raise map_error(exc) from exc
        parts, state = [], {"prompt": None, "completion": None, "finished": False}

        def on_event(data):
            event = json.loads(data)
            kind = event.get("type")
            if kind == "content_block_delta":
                return event["delta"].get("text")
            if kind == "message_start":
                usage = event["message"].get("usage") or {}
                state["prompt"], state["completion"] = usage.get("input_tokens"), usage.get("output_tokens")
            elif kind == "message_delta":
                usage = event.get("usage") or {}
                state["completion"] = usage.get("output_tokens", state["completion"])
                state["prompt"] = usage.get("input_tokens") or state["prompt"]
            elif kind == "message_stop":
                state["finished"] = True
            elif kind == "error":
                raise stream_error(event.get("error") or {})
            return None

        try:
            for text in sse_texts(body_chunks(response.http_response), on_event):
                parts.append(text)
                yield text
        except _sdk().UPSTREAM_ERRORS as exc:
            raise map_error(exc) from exc
        finally:
            response.close()  # also on GeneratorExit: releases the HTTP connection
        if not state["finished"]:
            raise ProviderUnavailable("anthropic: the stream ended before message_stop")
        yield usage_or_estimate(state["prompt"], state["completion"], request, "".join(parts))


def stream_error(error):
    """The Provider* error for an ``error`` event sent after HTTP 200."""
    status = EVENT_STATUS.get(error.get("type"), 500)
    message = f"anthropic: {error.get('type', 'error')}: {error.get('message', '')}"
    if status in (401, 403):
        return ProviderAuthError(f"anthropic rejected chatport's credentials ({error.get('type')})")
    if status == 429:
        return ProviderRateLimited(message)
    if 400 <= status < 500:
        return ProviderBadRequest(message)
    return ProviderUnavailable(message)


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

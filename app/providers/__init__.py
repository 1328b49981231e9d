"""LLM providers: the model interface, the plugin hooks, and what a provider plugin needs.

A plugin imports everything it uses from this module::

    from app.providers import ChatRequest, Chunk, Model, Usage, hookimpl

Inside the package: ``llm`` (the model interface and the registry), ``hookspecs`` and
``loading`` (pluggy hooks and plugin loading), ``helpers`` (settings, lazy clients, error
mapping, SSE reading), ``http_transport`` (the HTTP client under the SDKs: ``http_client``, ``provider_call``), ``streaming``
(heartbeats around a provider's stream) and ``netguard`` (the address guard).
"""
from app.errors import (
                        ProviderAuthError,
                        ProviderBadRequest,
                        ProviderError,
                        ProviderRateLimited,
                        ProviderTimeout,
                        ProviderUnavailable,
)
from app.providers.helpers import (
                        SSE_END,
                        LazyClient,
                        NoRetryOn429,
                        as_list,
                        body_chunks,
                        byte_lines,
                        check_base_url,
                        retry_after,
                        sdk_error,
                        setting,
                        sse_batches,
                        sse_data,
                        sse_texts,
                        status_error,
                        upstream_message,
                        usage_or_estimate,
)
from app.providers.hookspecs import hookimpl
from app.providers.http_transport import FastTransport, GuardedTransport, Limits, http_client, provider_call
from app.providers.llm import (
                        FEATURES,
                        ChatRequest,
                        Chunk,
                        EmbeddingModel,
                        EmbeddingRequest,
                        Embeddings,
                        Model,
                        Usage,
                        content_text,
                        estimate_tokens,
                        message_tokens,
)

__all__ = [
    "FEATURES", "ChatRequest", "Chunk", "EmbeddingModel", "EmbeddingRequest", "Embeddings", "Model", "Usage",
    "content_text", "estimate_tokens", "message_tokens", "hookimpl",
    "ProviderAuthError", "ProviderBadRequest", "ProviderError", "ProviderRateLimited", "ProviderTimeout",
    "ProviderUnavailable",
    "SSE_END", "LazyClient", "NoRetryOn429", "as_list", "body_chunks", "byte_lines", "check_base_url",
    "retry_after", "sdk_error", "setting", "sse_batches", "sse_data", "sse_texts", "status_error",
    "upstream_message", "usage_or_estimate",
    "FastTransport", "GuardedTransport", "Limits", "http_client", "provider_call",
]

"""The anthropic SDK glue of the anthropic plugin: its client class and error mapping.

Imported on first use (``anthropic_provider._sdk()``), so a worker that has no Anthropic
model configured never loads the SDK (about 17 MB of memory).
"""
import anthropic
import httpx

from app.providers import NoRetryOn429, sdk_error


class Client(NoRetryOn429, anthropic.Anthropic):
    """The SDK client, except that a 429 is not retried: the caller gets it with Retry-After."""


def map_error(exc, provider="anthropic"):
    """Translate an anthropic/httpx exception into the ``app.errors`` Provider* taxonomy."""
    return sdk_error(exc, provider, anthropic)


# Undecodable JSON is a ValueError; JSON of the wrong shape surfaces as the others.
UPSTREAM_ERRORS = (anthropic.AnthropicError, httpx.HTTPError, ValueError, AttributeError,
                   TypeError, KeyError, IndexError)

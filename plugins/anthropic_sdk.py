"""The anthropic SDK glue of the anthropic plugin: its client class and error mapping.

Imported on first use (``anthropic_provider._sdk()``), so a worker that has no Anthropic
model configured never loads the SDK (about 17 MB of memory).
"""
import anthropic
import httpx

from app import errors
from app.providers import status_error, upstream_message


class Client(anthropic.Anthropic):
    """The SDK client, except that a 429 is not retried: the caller gets it with Retry-After."""

    def _should_retry(self, response):
        if response.status_code == 429:
            return False
        return super()._should_retry(response)


def map_error(exc, provider="anthropic"):
    """Translate an anthropic/httpx exception into the ``app.errors`` Provider* taxonomy."""
    if isinstance(exc, errors.ProviderError):
        return exc
    if isinstance(exc, (anthropic.APITimeoutError, httpx.TimeoutException)):
        return errors.ProviderTimeout(f"{provider}: no answer within the configured timeout")
    if isinstance(exc, anthropic.APIStatusError):
        return status_error(provider, exc.status_code, exc.response.headers, upstream_message(exc))
    if isinstance(exc, (anthropic.APIConnectionError, httpx.TransportError)):
        return errors.ProviderUnavailable(f"{provider}: connection failed: {upstream_message(exc)}")
    return errors.ProviderUnavailable(f"{provider}: malformed or failed reply: {upstream_message(exc)}")


# Undecodable JSON is a ValueError; JSON of the wrong shape surfaces as the others.
UPSTREAM_ERRORS = (anthropic.AnthropicError, httpx.HTTPError, ValueError, AttributeError,
                   TypeError, KeyError, IndexError)

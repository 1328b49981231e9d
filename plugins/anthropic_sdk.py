"""The anthropic SDK glue of the anthropic plugin: its client class and error mapping.

Imported on first use (``anthropic_provider._sdk()``), so a worker that has no Anthropic
model configured never loads the SDK (about 17 MB of memory).
"""
import anthropic
import httpx

from app import errors
from app.providers import retry_after, upstream_message


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
        status, headers = exc.status_code, exc.response.headers
        if status in (401, 403):
            return errors.ProviderAuthError(
                f"{provider} rejected chatport's credentials (HTTP {status})")
        if status == 429:
            return errors.ProviderRateLimited(f"{provider}: {upstream_message(exc)}",
                                              headers=retry_after(headers))
        if status == 408:
            return errors.ProviderTimeout(f"{provider}: upstream request timeout (HTTP 408)")
        if 400 <= status < 500 and status != 409:
            return errors.ProviderBadRequest(f"{provider}: {upstream_message(exc)}")
        return errors.ProviderUnavailable(f"{provider}: HTTP {status}: {upstream_message(exc)}")
    if isinstance(exc, (anthropic.APIConnectionError, httpx.TransportError)):
        return errors.ProviderUnavailable(f"{provider}: connection failed: {upstream_message(exc)}")
    return errors.ProviderUnavailable(f"{provider}: malformed or failed reply: {upstream_message(exc)}")


# Undecodable JSON is a ValueError; JSON of the wrong shape surfaces as the others.
UPSTREAM_ERRORS = (anthropic.AnthropicError, httpx.HTTPError, ValueError, AttributeError,
                   TypeError, KeyError, IndexError)

"""One error taxonomy for services, rendered by each dialect in its own shape.

Services raise ``ApiError`` subclasses; nothing here knows Flask. ``app.api.errors``
renders them, each dialect in its own shape.
"""


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a human message.

    ``default_message`` is what the client reads when the raiser gives no message."""

    status = 500
    code = "internal_error"
    default_message = "Internal server error"

    def __init__(self, message=None, *, status=None, code=None, fields=None, headers=None):
        self.message = message or self.default_message
        super().__init__(self.message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.fields = fields or {}
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """A malformed request or an invalid field."""

    status, code = 400, "bad_request"
    default_message = "The request is malformed or a field is invalid."


class Unauthorized(ApiError):
    """No API key, or one that is unknown or disabled."""

    status, code = 401, "unauthorized"
    default_message = "A valid API key is required."


class Forbidden(ApiError):
    """The key is valid but may not do this."""

    status, code = 403, "forbidden"
    default_message = "This key may not do that."


class NotFound(ApiError):
    """The object does not exist or is outside the caller's scope."""

    status, code = 404, "not_found"
    default_message = "Not found."


class Conflict(ApiError):
    """The request conflicts with the object's current state."""

    status, code = 409, "conflict"
    default_message = "Conflicts with the current state."


class TooLarge(ApiError):
    """The request body exceeds a configured size."""

    status, code = 413, "payload_too_large"
    default_message = "The request body is too large."


class RateLimited(ApiError):
    """The key's rate limit for this category is reached."""

    status, code = 429, "rate_limited"
    default_message = "Too many requests."


class QuotaExceeded(ApiError):
    """The key's monthly credit quota is used up."""

    status, code = 429, "quota_exceeded"
    default_message = "Out of credits."


# Provider errors: every plugin maps its upstream's failures to these, so each dialect renders
# them the same way.
class ProviderError(ApiError):
    """The model provider failed in a way no subclass names."""

    status, code = 502, "provider_error"
    default_message = "The model provider failed."


class ProviderAuthError(ProviderError):
    """The provider refused chatport's credentials (a 502: the client's own credentials are fine)."""

    status, code = 502, "provider_auth"
    default_message = "The model provider rejected chatport's credentials."


class ProviderRateLimited(ProviderError):
    """The provider answered 429 or said it is overloaded."""

    status, code = 429, "provider_rate_limited"
    default_message = "The model provider is rate limiting or overloaded."


class ProviderBadRequest(ProviderError):
    """The provider refused the request as invalid."""

    status, code = 400, "provider_bad_request"
    default_message = "The model provider rejected the request."


class ProviderUnavailable(ProviderError):
    """The provider cannot be reached, answered 5xx, or its address is refused."""

    status, code = 502, "provider_unavailable"
    default_message = "The model provider is unavailable."


class ProviderTimeout(ProviderError):
    """The provider did not answer within its deadline."""

    status, code = 504, "provider_timeout"
    default_message = "The model provider did not answer in time."

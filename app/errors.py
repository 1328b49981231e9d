"""One error taxonomy for services, rendered by each dialect in its own shape.

Services raise ``ApiError`` subclasses; nothing here knows Flask. ``app.api.errors``
renders them, each dialect in its own shape.
"""


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a human message."""

    status = 500
    code = "internal_error"

    def __init__(self, message=None, *, status=None, code=None, fields=None, headers=None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.fields = fields or {}
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """The request is malformed or a field is invalid."""

    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    """A valid API key is required."""

    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    """This key may not do that."""

    status, code = 403, "forbidden"


class NotFound(ApiError):
    """Not found."""

    status, code = 404, "not_found"


class Conflict(ApiError):
    """Conflicts with the current state."""

    status, code = 409, "conflict"


class TooLarge(ApiError):
    """The request body is too large."""

    status, code = 413, "payload_too_large"


class RateLimited(ApiError):
    """Too many requests."""

    status, code = 429, "rate_limited"


class QuotaExceeded(ApiError):
    """Out of credits."""

    status, code = 429, "quota_exceeded"


# Provider errors: one taxonomy, mapped once (see README "Providers").
class ProviderError(ApiError):
    """The model provider failed."""

    status, code = 502, "provider_error"


class ProviderAuthError(ProviderError):
    """The model provider rejected chatport's credentials."""

    status, code = 502, "provider_auth"


class ProviderRateLimited(ProviderError):
    """The model provider is rate limiting or overloaded."""

    status, code = 429, "provider_rate_limited"


class ProviderBadRequest(ProviderError):
    """The model provider rejected the request."""

    status, code = 400, "provider_bad_request"


class ProviderUnavailable(ProviderError):
    """The model provider is unavailable."""

    status, code = 502, "provider_unavailable"


class ProviderTimeout(ProviderError):
    """The model provider did not answer in time."""

    status, code = 504, "provider_timeout"

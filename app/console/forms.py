"""Form input: from the request's form fields to the values the services take, checked by the
same marshmallow schemas as the API's JSON bodies (one set of bounds and messages).

A form that does not pass raises ``Invalid`` with a message per field; views render the form
again with them (status 400) and nothing is saved. Errors the services raise (``ApiError`` with
``fields``) are shown the same way (``Invalid.of``).
"""
from flask import request
from marshmallow import ValidationError

from app.errors import ApiError


class Invalid(Exception):
    """A form that cannot be saved: ``message`` for the page, ``fields`` {name: message}."""

    def __init__(self, message="Check the fields marked below.", fields=None, status=400):
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        self.status = status

    @classmethod
    def of(cls, exc):
        """An ``Invalid`` from a service's ApiError or a marshmallow ValidationError."""
        if isinstance(exc, Invalid):
            return exc
        if isinstance(exc, ValidationError):
            return cls(fields=_flatten(exc.messages))
        if isinstance(exc, ApiError):
            return cls(exc.message, {k: str(v) for k, v in (exc.fields or {}).items()},
                       status=exc.status if exc.status < 500 else 400)
        raise TypeError(exc)


def _flatten(messages, prefix=""):
    out = {}
    for key, value in (messages.items() if isinstance(messages, dict) else enumerate(messages)):
        name = f"{prefix}{key}"
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[name] = " ".join(value)
        elif isinstance(value, (dict, list)):
            for sub, text in _flatten(value, "").items():  # nested: the outer field's name
                out.setdefault(name if not isinstance(value, dict) else sub, text)
        else:
            out[name] = str(value)
    return out


def text(name, default=""):
    """A text field as sent (``default`` when absent)."""
    return request.form.get(name, default)


def optional(name):
    """A field's text stripped, or None when it is blank."""
    value = request.form.get(name, "").strip()
    return value or None


def checked(name):
    """A checkbox: True when sent."""
    return name in request.form


def many(name):
    """Every value of a repeated field (checkboxes, multiple select), blanks dropped."""
    return [v for v in request.form.getlist(name) if v.strip()]


def load(schema, data):
    """``schema`` (class or instance) loaded from ``data``. Raises Invalid."""
    schema = schema() if isinstance(schema, type) else schema
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise Invalid.of(exc) from None


def one_of(value, choices, field, message):
    """Raise Invalid unless ``value`` is one of ``choices`` (a select's options)."""
    if value not in choices:
        raise Invalid(fields={field: message})
    return value

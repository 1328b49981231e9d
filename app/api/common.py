"""Pieces every chatport-API blueprint shares: the blueprint class, auth, schemas."""
from flask import current_app, g, request
from flask_smorest import Blueprint as _SmorestBlueprint
from marshmallow import Schema, fields, validate
from webargs.flaskparser import FlaskParser

from app import clock
from app.metering import policy
from app.services import keys


class Parser(FlaskParser):
    """Bad bodies are 400s (webargs defaults to 422)."""

    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(_SmorestBlueprint):
    ARGUMENTS_PARSER = Parser()

    def arguments(self, schema, *args, **kwargs):
        """As flask-smorest's, with one schema instance per route: webargs instantiates a schema
        class on every request (with its nested schemas: ~8% of a small request's CPU)."""
        if isinstance(schema, type):
            schema = schema()
        return super().arguments(schema, *args, **kwargs)


def bearer_token():
    """The key from ``Authorization: Bearer <key>`` (never from the query string)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def current_key():
    """Authenticate the request once; raises Unauthorized."""
    if "api_key" not in g:
        key = keys.authenticate(
            bearer_token(), last_used_interval=current_app.config["KEY_LAST_USED_INTERVAL"],
            cache_seconds=float(current_app.config.get("KEY_CACHE_SECONDS") or 0),
        )
        g.api_key = key
        policy.enforce(key.id, plan=key.plan, overrides=key.rate_limits, quota=key.credit_quota)
    return g.api_key


def scope_key():
    """The current key as the services' ``key=`` scope: None for an admin key (everything)."""
    return keys.scope_of(current_key())


def admin_only():
    """``before_request`` hook for management blueprints: 401 / 403 before any parsing."""
    keys.require_admin(current_key())


def any_key():
    """``before_request`` hook for blueprints open to client keys."""
    current_key()


class Timestamp(fields.Field):
    """ISO 8601 UTC with milliseconds and ``Z``."""

    def _serialize(self, value, attr, obj, **kwargs):
        return clock.iso(value)


class PageArgs(Schema):
    limit = fields.Int(load_default=10, validate=validate.Range(1, 100),
                       metadata={"description": "Page size, 1..100"})
    cursor = fields.Str(load_default=None, validate=validate.Length(max=64),
                        metadata={"description": "The `last` id of the previous page"})


class Pagination(Schema):
    total = fields.Int()
    last = fields.Str(allow_none=True)


def page_schema(item_schema, name):
    """A ``{data: [items], pagination: {total, last}}`` schema class."""
    return Schema.from_dict(
        {"data": fields.List(fields.Nested(item_schema)), "pagination": fields.Nested(Pagination)},
        name=name,
    )


def page(items, pagination):
    return {"data": items, "pagination": pagination}


def name_field(required=False, **kw):
    return fields.Str(required=required, validate=validate.Length(1, 200), **kw)

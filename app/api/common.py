"""Pieces every chatport-API blueprint shares: the blueprint class, auth, schemas."""
from flask import current_app, g, has_app_context, request
from flask_smorest import Blueprint as _SmorestBlueprint
from marshmallow import Schema, ValidationError, fields, validate
from webargs.flaskparser import FlaskParser

from app import clock
from app.metering import policy
from app.errors import BadRequest
from app.services import keys, sampling


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


class Temperature(fields.Float):
    """A sampling temperature, checked by ``sampling.check_temperature`` (one range and one
    message in every dialect); absent or null leaves the bot's or the model's default."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_none", True)
        kwargs.setdefault("metadata", {"minimum": sampling.TEMPERATURE_MIN,
                                       "maximum": sampling.TEMPERATURE_MAX,
                                       "description": "Absent: the bot's or the model's default"})
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            value = super()._deserialize(value, attr, data, **kwargs)
        except ValidationError:
            pass  # not a number: the check below says what is expected
        try:
            return sampling.check_temperature(value)
        except BadRequest:
            raise ValidationError(sampling.TEMPERATURE_RULE) from None


class SettingLength(validate.Length):
    """``validate.Length`` whose maximum is the configuration setting ``setting``, read when a
    request is validated (and when the OpenAPI document is built)."""

    def __init__(self, setting, min=None, **kwargs):
        self.setting = setting
        super().__init__(min=min, max=None, **kwargs)

    @property
    def max(self):
        return int(current_app.config[self.setting]) if has_app_context() else None

    @max.setter
    def max(self, value):
        """The bound is the setting's; ``Length.__init__``'s assignment is ignored."""


def page_limit_field(**kwargs):
    """A page size: checked by ``pagination.page_size`` (1..PAGE_MAX, absent: PAGE_DEFAULT)."""
    return fields.Int(load_default=None, allow_none=True,
                      metadata={"description": "Page size, 1..PAGE_MAX (default PAGE_DEFAULT)"}, **kwargs)


class PageArgs(Schema):
    limit = page_limit_field()
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
    """A name: 1..MAX_NAME_LENGTH characters."""
    return fields.Str(required=required, validate=SettingLength("MAX_NAME_LENGTH", min=1), **kw)


def instructions_field(**kw):
    """A bot's instructions (system prompt): at most MAX_INSTRUCTIONS_LENGTH characters."""
    return fields.Str(validate=SettingLength("MAX_INSTRUCTIONS_LENGTH"), **kw)

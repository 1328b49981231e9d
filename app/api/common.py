"""Pieces every blueprint shares: the one JSON body reader, the blueprint class, auth, schemas."""
import json
import math
import re

from flask import current_app, g, has_app_context, request
from flask_smorest import Blueprint as _SmorestBlueprint
from marshmallow import Schema, ValidationError, fields, validate
from webargs import core
from webargs.flaskparser import FlaskParser

from app import clock, ids, metering
from app.errors import ApiError, BadRequest
from app.metering import policy
from app.services import bots, keys, sampling

# ---------------------------------------------------------------- JSON bodies
#
# Every dialect reads its JSON body through ``read_json`` (webargs' ``Parser`` below too), so
# what a hostile body can do is decided here once: every failure is a 400 (a 415 for a body
# that is not JSON at all) in the dialect's error shape, and what gets through is safe to store.

EMPTY = core.missing  # what ``read_json`` answers for an empty body
MAX_INT_DIGITS = 100  # longer integers fit no field and overflow float()
_CACHE = "chatport.json_body"
# Cheap tests on the raw bytes that decide whether the parsed value needs a walk: a body with
# fewer brackets than the depth bound cannot be too deep, and a lone surrogate or NUL can only
# arrive as a \u escape (raw surrogate bytes are invalid UTF-8, raw NULs invalid JSON).
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UnsupportedMediaType(ApiError):
    """The body must be JSON."""

    status, code = 415, "unsupported_media_type"


class _Refused(ValueError):
    pass


def _no_constant(name):
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:20]} is out of range")
    return value


def _bounded_int(text):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)


def _check_tree(value, max_depth):
    """Raise BadRequest when ``value`` nests deeper than ``max_depth`` containers or holds a
    string (or key) with a NUL or a lone surrogate, which no database stores as text."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                raise BadRequest("The body holds a string with a NUL character or a lone UTF-16 surrogate")
            continue
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise BadRequest(f"The JSON body is nested deeper than {max_depth} levels")
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str):
                    stack.append((key, depth))
                stack.append((child, depth + 1))


def parse_json(raw, max_depth):
    """Parse a JSON body (bytes) strictly: UTF-8, no NaN or Infinity, bounded integers and
    nesting, no NUL or lone surrogate in strings. Raises BadRequest."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The body is not valid UTF-8 (byte {exc.start})")
    try:
        value = _DECODER.decode(text.lstrip("\ufeff"))
    except RecursionError:
        raise BadRequest(f"The JSON body is nested deeper than {max_depth} levels")
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    except ValueError as exc:  # _Refused, or an integer past Python's conversion limit
        reason = str(exc) if isinstance(exc, _Refused) else "an integer is too long"
        raise BadRequest(f"The body is not valid JSON: {reason}")
    if raw.count(b"[") + raw.count(b"{") > max_depth or _SUSPECT_ESCAPE.search(raw):
        _check_tree(value, max_depth)
    return value


def _is_json_type(mimetype):
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def read_json():
    """The request's JSON body, parsed once per request; ``EMPTY`` for an empty body.

    The Content-Type must be ``application/json`` or ``application/*+json``. Two clients that
    send JSON without saying so are read as JSON too: a request with no Content-Type, and curl's
    ``-d`` default ``application/x-www-form-urlencoded`` when the body starts with ``{`` or
    ``[`` (no form starts so). Anything else with a body is a 415. Raises BadRequest for a body
    that is not safe JSON (see ``parse_json``).
    """
    cached = request.environ.get(_CACHE, None)
    if cached is not None:
        return cached[0]
    raw = request.get_data(cache=True)
    stripped = raw.lstrip()
    if not stripped:
        value = EMPTY
    else:
        mimetype = request.mimetype
        if not (_is_json_type(mimetype) or mimetype == ""
                or (mimetype == "application/x-www-form-urlencoded" and stripped[:1] in (b"{", b"["))):
            raise UnsupportedMediaType(f"The body must be JSON (Content-Type: application/json), not {mimetype}")
        value = parse_json(raw, int(current_app.config["JSON_MAX_DEPTH"]))
    request.environ[_CACHE] = (value,)
    return value


def json_object(message="The body must be a JSON object"):
    """The JSON body as a dict (``{}`` for an empty body). Raises BadRequest."""
    value = read_json()
    if value is EMPTY:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(message)
    return value


class Parser(FlaskParser):
    """webargs reading bodies through ``read_json``; bad bodies are 400s (webargs defaults to 422)."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req):
        return read_json()


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


def x_api_key():
    """The key from ``x-api-key: <key>`` (Anthropic's header, read by the Messages API only),
    else from ``Authorization: Bearer <key>``."""
    return request.headers.get("x-api-key", "").strip() or bearer_token()


def current_key(read_token=bearer_token):
    """Authenticate the request once, with the key ``read_token()`` finds (the dialect's
    header); raises Unauthorized."""
    if "api_key" not in g:
        key = keys.authenticate(
            read_token(), last_used_interval=current_app.config["KEY_LAST_USED_INTERVAL"],
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


def model_body_limit():
    """``before_request`` hook (first) of the model-facing blueprints: their bodies may carry
    inline images and files, up to ``MODEL_MAX_CONTENT_LENGTH`` bytes."""
    request.max_content_length = current_app.config["MODEL_MAX_CONTENT_LENGTH"]


def model_or_bot(name):
    """``(bot or None, provider model name or None)`` of a model face's ``model`` for the
    current key (``bots.model_or_bot``); the meter names the bot."""
    bot, model_name = bots.model_or_bot(name, current_key())
    metering.for_bot(bot)
    return bot, model_name


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


def id_field(max_length=ids.CLIENT_ID_MAX, **kw):
    """A client-supplied id: 1..max_length visible ASCII characters (no space, CR, LF, NUL)."""
    def check(value):
        if not ids.is_client_id(value, max_length):
            raise ValidationError(f"Must be 1 to {max_length} visible ASCII characters "
                                  "(no spaces or control characters).")
    metadata = {"pattern": f"^[!-~]{{1,{max_length}}}$", **kw.pop("metadata", {})}
    return fields.Str(validate=check, metadata=metadata, **kw)


def user_label_field(max_length=ids.USER_LABEL_MAX, min_length=1, **kw):
    """A client's label for an end user: printable text, no control characters."""
    def check(value):
        if not ids.is_user_label(value, max_length, min_length):
            raise ValidationError(f"Must be {min_length} to {max_length} printable characters "
                                  "(no control characters).")
    metadata = {"minLength": min_length, "maxLength": max_length, "pattern": "^[^\\x00-\\x1f\\x7f]*$",
                **kw.pop("metadata", {})}
    return fields.Str(validate=check, metadata=metadata, **kw)

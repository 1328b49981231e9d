"""chatport API: API keys (admin keys). The full key is returned once, at creation."""
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.common import Blueprint, PageArgs, Timestamp, admin_only, id_field, name_field, page, page_schema
from app.services import keys

blp = Blueprint("keys", __name__, url_prefix="/keys", description="API keys")
blp.before_request(admin_only)

_ids = fields.List(id_field(), validate=validate.Length(max=1000))
# Requests per minute per category: at least one (a key that may do nothing is disabled instead).
_limits = fields.Dict(keys=fields.Str(validate=validate.Length(1, 30)),
                      values=fields.Int(strict=True, validate=validate.Range(1, 1_000_000)))


class KeyCreate(Schema):
    name = name_field()
    kind = fields.Str(load_default="client", validate=validate.OneOf(keys.KINDS))
    bot_ids = _ids
    automation_ids = _ids
    plan = fields.Str(allow_none=True, validate=validate.Length(1, 50))
    rate_limits = _limits
    credit_quota = fields.Int(allow_none=True, validate=validate.Range(0, 10**12))


class KeyUpdate(Schema):
    name = name_field()
    enabled = fields.Bool()
    bot_ids = _ids
    automation_ids = _ids
    plan = fields.Str(allow_none=True, validate=validate.Length(1, 50))
    rate_limits = _limits
    credit_quota = fields.Int(allow_none=True, validate=validate.Range(0, 10**12))


class KeyOut(Schema):
    id = fields.Str()
    name = fields.Str()
    kind = fields.Str()
    prefix = fields.Str(metadata={"description": "First characters of the key, for display"})
    last4 = fields.Str()
    enabled = fields.Bool()
    bot_ids = fields.List(fields.Str())
    automation_ids = fields.List(fields.Str())
    plan = fields.Str(allow_none=True)
    rate_limits = fields.Dict()
    credit_quota = fields.Int(allow_none=True)
    created_at = Timestamp()
    last_used_at = Timestamp(allow_none=True)


class KeyCreated(KeyOut):
    key = fields.Str(metadata={"description": "The full key: shown once, never stored"})


KeyPage = page_schema(KeyOut, "KeyPage")


@blp.route("")
class KeyList(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, KeyPage)
    def get(self, args):
        """List API keys (never their secrets)"""
        return page(*keys.list_keys(**args))

    @blp.arguments(KeyCreate)
    @blp.response(201, KeyCreated)
    def post(self, data):
        """Create an API key; the full key is in this response only"""
        row, plaintext = keys.create_key(**data)
        row.key = plaintext
        return row


@blp.route("/<key_id>")
class KeyItem(MethodView):
    @blp.response(200, KeyOut)
    def get(self, key_id):
        """Show an API key"""
        return keys.get_key(key_id)

    @blp.arguments(KeyUpdate)
    @blp.response(200, KeyOut)
    def patch(self, data, key_id):
        """Rename, re-scope, enable or disable an API key"""
        return keys.update_key(key_id, **data)

    @blp.response(204)
    def delete(self, key_id):
        """Delete an API key"""
        keys.delete_key(key_id)


@blp.route("/<key_id>/enable", methods=["POST"])
@blp.response(200, KeyOut)
def enable_key(key_id):
    """Enable an API key"""
    return keys.set_enabled(key_id, True)


@blp.route("/<key_id>/disable", methods=["POST"])
@blp.response(200, KeyOut)
def disable_key(key_id):
    """Disable an API key (its calls get 401)"""
    return keys.set_enabled(key_id, False)

"""chatport API: bots and their API channels (admin keys)."""
from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.common import (
    Blueprint,
    PageArgs,
    Temperature,
    Timestamp,
    admin_only,
    current_key,
    instructions_field,
    name_field,
    page,
    page_schema,
)
from app.services import bots, channels

blp = Blueprint("bots", __name__, url_prefix="/bots", description="Bots and their API channels")
blp.before_request(admin_only)


class KnowledgeSettings(Schema):
    top_k = fields.Int(validate=validate.Range(0, 50))
    max_chars = fields.Int(validate=validate.Range(0, 100000))
    context_messages = fields.Int(validate=validate.Range(0, 20))
    records = fields.Int(validate=validate.Range(0, 50))
    tables_tool = fields.Bool()


class BotFields(Schema):
    instructions = instructions_field()
    model = fields.Str(validate=validate.Length(1, 200))
    temperature = Temperature()
    max_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))
    greeting = fields.Str(validate=validate.Length(max=4000))
    knowledge = fields.Nested(KnowledgeSettings)
    allowed_models = fields.List(fields.Str(validate=validate.Length(1, 200)),
                                 validate=validate.Length(max=50))
    enabled = fields.Bool()


class BotCreate(BotFields):
    name = name_field(required=True)


class BotUpdate(BotFields):
    name = name_field()


class BotOut(Schema):
    id = fields.Str()
    name = fields.Str()
    instructions = fields.Str()
    model = fields.Str()
    temperature = fields.Float(allow_none=True)
    max_tokens = fields.Int(allow_none=True)
    greeting = fields.Str()
    knowledge = fields.Dict()
    allowed_models = fields.List(fields.Str())
    enabled = fields.Bool()
    created_at = Timestamp()
    updated_at = Timestamp()


BotPage = page_schema(BotOut, "BotPage")


@blp.route("")
class BotList(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, BotPage)
    def get(self, args):
        """List bots"""
        return page(*bots.list_bots(current_key(), **args))

    @blp.arguments(BotCreate)
    @blp.response(201, BotOut)
    def post(self, data):
        """Create a bot"""
        return bots.create_bot(default_model=current_app.config["DEFAULT_MODEL"], **data)


@blp.route("/<bot_id>")
class BotItem(MethodView):
    @blp.response(200, BotOut)
    def get(self, bot_id):
        """Show a bot"""
        return bots.get_bot(bot_id, current_key())

    @blp.arguments(BotUpdate)
    @blp.response(200, BotOut)
    def patch(self, data, bot_id):
        """Update a bot"""
        return bots.update_bot(bot_id, current_key(), **data)

    @blp.response(204)
    def delete(self, bot_id):
        """Delete a bot (its channels and conversations go with it)"""
        bots.delete_bot(bot_id, current_key())


# ------------------------------------------------------------------ channels


class ChannelCreate(Schema):
    name = name_field()


class ChannelUpdate(Schema):
    name = name_field()
    enabled = fields.Bool()


class ChannelOut(Schema):
    id = fields.Str()
    bot_id = fields.Function(lambda c: c.bot_id)
    name = fields.Str()
    secret_prefix = fields.Str()
    enabled = fields.Bool()
    created_at = Timestamp()
    updated_at = Timestamp()


class ChannelWithSecret(ChannelOut):
    secret = fields.Str(metadata={"description": "Shown once; only a hash is stored"})


ChannelPage = page_schema(ChannelOut, "ChannelPage")


def _with_secret(row, secret):
    row.secret = secret
    return row


@blp.route("/<bot_id>/channels")
class ChannelList(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, ChannelPage)
    def get(self, args, bot_id):
        """List a bot's API channels"""
        return page(*channels.list_channels(bot_id, current_key(), **args))

    @blp.arguments(ChannelCreate)
    @blp.response(201, ChannelWithSecret)
    def post(self, data, bot_id):
        """Create an API channel; the secret is in this response only"""
        return _with_secret(*channels.create_channel(bot_id, key=current_key(), **data))


@blp.route("/<bot_id>/channels/<channel_id>")
class ChannelItem(MethodView):
    @blp.response(200, ChannelOut)
    def get(self, bot_id, channel_id):
        """Show an API channel"""
        return channels.get_channel(bot_id, channel_id, current_key())

    @blp.arguments(ChannelUpdate)
    @blp.response(200, ChannelOut)
    def patch(self, data, bot_id, channel_id):
        """Rename, enable or disable an API channel"""
        return channels.update_channel(bot_id, channel_id, current_key(), **data)

    @blp.response(204)
    def delete(self, bot_id, channel_id):
        """Delete an API channel"""
        channels.delete_channel(bot_id, channel_id, current_key())


@blp.route("/<bot_id>/channels/<channel_id>/enable", methods=["POST"])
@blp.response(200, ChannelOut)
def enable_channel(bot_id, channel_id):
    """Enable an API channel"""
    return channels.set_enabled(bot_id, channel_id, True, current_key())


@blp.route("/<bot_id>/channels/<channel_id>/disable", methods=["POST"])
@blp.response(200, ChannelOut)
def disable_channel(bot_id, channel_id):
    """Disable an API channel (its calls get 404)"""
    return channels.set_enabled(bot_id, channel_id, False, current_key())


@blp.route("/<bot_id>/channels/<channel_id>/rotate-secret", methods=["POST"])
@blp.response(200, ChannelWithSecret)
def rotate_channel_secret(bot_id, channel_id):
    """Replace the channel's secret; the new one is in this response only"""
    return _with_secret(*channels.rotate_secret(bot_id, channel_id, current_key()))

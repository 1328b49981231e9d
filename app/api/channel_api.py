"""The channel API dialect (docs/channel-api.md): one bot's API channel.

Every route is ``<prefix>/<channelId>/1.0/...`` with ``X-API-Secret-Key``.
Errors are ``{"success": false, "message": "..."}``: 403 wrong secret (or a shared data source), 404
unknown or disabled channel (or object), 400 bad body, 429 no credits /
provider overloaded / sync running / storage exhausted, 500 otherwise.
A channel sees only its bot's conversations and data sources, and changes
only the data sources attached to its bot alone (a shared one is a 403).
"""
from flask import current_app, g, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from app import clock, metering
from app.api.common import Blueprint, id_field, json_object, page_limit_field
from app.api.errors import register_dialect
from app.api.openai_format import chunk_stream
from app.api.sse import SSE_EVENT_SCHEMA, stream_response
from app.errors import BadRequest
from app.metering import policy
from app.providers.llm import registry
from app.services import channels, chat, knowledge

blp = Blueprint("channel_api", __name__, url_prefix="", description="Channel API (one bot's API channel)")


def render_error(err):
    return {"success": False, "message": err.message}, err.status, err.headers


def register(app, api):
    prefix = app.config["CHANNEL_API_PREFIX"]
    api.register_blueprint(blp, url_prefix=prefix + "/<channelId>/1.0")
    register_dialect(app, prefix, render_error)


@blp.url_value_preprocessor
def _pop_channel(endpoint, values):
    g.channel_id = values.pop("channelId", None) if values else None


@blp.before_request
def _authenticate():
    g.channel = channels.authenticate_channel(g.channel_id, request.headers.get("X-API-Secret-Key"))
    metering.current().bot_id = g.channel.bot_id
    config = current_app.config
    policy.enforce(f"channel:{g.channel.id}", plan=config["CHANNEL_PLAN"], quota=config["CHANNEL_CREDIT_QUOTA"])


def _bot():
    return g.channel.bot


def _body(schema_cls):
    """The JSON body through ``schema_cls`` (an empty or missing body is ``{}``). Raises BadRequest."""
    data = json_object()
    try:
        return schema_cls().load(data)
    except ValidationError as exc:
        names = sorted(exc.messages)
        detail = "; ".join(f"{k}: {' '.join(v) if isinstance(v, list) else v}" for k, v in sorted(exc.messages.items()))
        raise BadRequest(f"Invalid field(s) {', '.join(names)} — {detail}",
                         fields={k: str(v) for k, v in exc.messages.items()})


class Body(Schema):
    class Meta:
        unknown = EXCLUDE


class PageBody(Body):
    limit = page_limit_field()
    cursor = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=64))


def _page_args(args):
    return {"limit": args["limit"], "cursor": args["cursor"]}


# ---------------------------------------------------------------- conversations


@blp.route("/conversation", methods=["POST"])
@blp.response(200)
def start_conversation():
    """Start a conversation; `response` is the bot's greeting"""
    conv = chat.start_conversation(_bot(), surface="channel", channel=g.channel)
    return {"success": True, "conversationId": conv.id, "response": _bot().greeting or ""}


class MessageBody(Body):
    message = fields.Str(validate=validate.Length(min=1))
    response = fields.Str(validate=validate.Length(min=1))  # the other name clients of this API use for it
    conversationId = id_field(allow_none=True)
    stream = fields.Bool(load_default=False)

    @validates_schema
    def _one_message(self, data, **kwargs):
        if not (data.get("message") or data.get("response")):
            raise ValidationError("message is required (or response, its other name)", "message")


@blp.route("/message", methods=["POST"])
@blp.response(200)
@blp.alt_response(200, description="chat.completion.chunk lines when stream is true",
                  content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
def send_message():
    """Send a message (a new conversation when no conversationId is given); `stream` for chunks"""
    data = _body(MessageBody)
    bot = _bot()
    text = data.get("message") or data.get("response")
    if data.get("conversationId"):
        conv = chat.get_conversation(data["conversationId"], channel=g.channel)
    else:
        conv = None
    turn_args = dict(registry=registry(), config=current_app.config, bot=bot, content=text,
                     options={"stream": data["stream"]})
    if conv is None:
        chat.prepare_turn(**{**turn_args, "persist": False})  # validate before creating anything
        conv = chat.start_conversation(bot, surface="channel", channel=g.channel)
    turn = chat.prepare_turn(**turn_args, conversation=conv)
    meter = metering.start_turn(turn)
    if data["stream"]:
        events = turn.events(heartbeat=current_app.config["SSE_HEARTBEAT"])
        finish = metering.stream_finish(turn, events)
        resp = stream_response(chunk_stream(events, turn.model.model_id, on_finish=finish))
        resp.headers["X-Conversation-Id"] = conv.id
        return resp
    done = turn.run()
    meter.add_tokens(done.usage, turn.model.name)
    return {"success": True, "conversationId": conv.id, "response": done.content}


def _iso(dt):
    return clock.iso(dt)


@blp.route("/conversations", methods=["POST"])
@blp.response(200)
def list_conversations():
    """List this bot's conversations (limit 1..100, cursor)"""
    args = _body(PageBody)
    items, pagination = chat.list_conversations(channel=g.channel, **_page_args(args))
    first = chat.first_user_messages([c.id for c in items])
    return {"success": True,
            "conversations": [{"id": c.id, "createdAt": _iso(c.created_at), "initialMessage": first.get(c.id, "")}
                              for c in items],
            "pagination": pagination}


class MessagesBody(PageBody):
    conversationId = id_field(required=True)


@blp.route("/messages", methods=["POST"])
@blp.response(200)
def list_messages():
    """A conversation's messages, oldest first (limit 1..100, cursor)"""
    args = _body(MessagesBody)
    conv = chat.get_conversation(args["conversationId"], channel=g.channel)
    items, pagination = chat.list_messages(conv, **_page_args(args))
    return {"success": True,
            "messages": [{"id": m.id, "message": m.content, "role": m.role, "createdAt": _iso(m.created_at)}
                         for m in items],
            "pagination": pagination}


# ---------------------------------------------------------------- data sources


def _source_out(s):
    return {"id": s.id, "type": s.type, "state": s.status, "lastSync": _iso(s.last_sync),
            "syncInterval": s.sync_interval, "createdAt": _iso(s.created_at)}


class SourceIdBody(Body):
    dataSourceId = id_field(required=True)


def _source(source_id):
    return knowledge.get_source(source_id, bot_id=g.channel.bot_id)


@blp.route("/data-sources", methods=["POST"])
@blp.response(200)
def create_data_source():
    """Create a MANUAL data source attached to this channel's bot"""
    source = knowledge.create_source(name=f"{_bot().name} channel data source", type="MANUAL",
                                     bot_ids=[g.channel.bot_id])
    return {"success": True, "dataSource": _source_out(source)}


@blp.route("/data-sources", methods=["GET"])
@blp.response(200)
def get_data_source():
    """A data source's state (`dataSourceId` in the query string)"""
    source_id = request.args.get("dataSourceId")
    if not source_id:
        raise BadRequest("dataSourceId is required", fields={"dataSourceId": "missing"})
    return {"success": True, "dataSource": _source_out(_source(source_id))}


class UpdateSourceBody(SourceIdBody):
    syncInterval = fields.Str(allow_none=True, load_default=None, validate=validate.OneOf(knowledge.INTERVALS))


@blp.route("/data-sources", methods=["PUT"])
@blp.response(200)
def update_data_source():
    """Set a data source's sync interval (day, week, month or null)"""
    data = _body(UpdateSourceBody)
    source = knowledge.update_source(_source(data["dataSourceId"]), only_bot=g.channel.bot_id,
                                     sync_interval=data["syncInterval"])
    return {"success": True, "dataSource": _source_out(source)}


@blp.route("/data-sources", methods=["DELETE"])
@blp.response(200)
def delete_data_source():
    """Delete a data source with its rows"""
    data = _body(SourceIdBody)
    knowledge.delete_source(_source(data["dataSourceId"]), only_bot=g.channel.bot_id)
    return {"success": True}


@blp.route("/data-sources/list", methods=["POST"])
@blp.response(200)
def list_data_sources():
    """List this bot's data sources (limit 1..100, cursor)"""
    args = _body(PageBody)
    items, pagination = knowledge.list_sources(g.channel.bot_id, **_page_args(args))
    return {"success": True, "dataSources": [_source_out(s) for s in items], "pagination": pagination}


class NewRow(Body):
    name = fields.Str(load_default="", validate=validate.Length(max=500))
    content = fields.Str(required=True, validate=validate.Length(min=1))


class CreateRowsBody(SourceIdBody):
    dataSourceRows = fields.List(fields.Nested(NewRow), required=True, validate=validate.Length(1, 1000))


@blp.route("/data-sources/row", methods=["POST"])
@blp.response(200)
def create_rows():
    """Add rows (name + markdown content) to a data source, all or nothing"""
    data = _body(CreateRowsBody)
    knowledge.add_rows(_source(data["dataSourceId"]), data["dataSourceRows"],
                       max_row_chars=current_app.config["KNOWLEDGE_MAX_ROW_CHARS"],
                       quota=current_app.config["KNOWLEDGE_MAX_CHARS"], only_bot=g.channel.bot_id)
    return {"success": True}


class RowListBody(PageBody):
    dataSourceId = id_field(required=True)


@blp.route("/data-sources/row/list", methods=["POST"])
@blp.response(200)
def list_rows():
    """List a data source's rows (id and name; limit 1..100, cursor)"""
    args = _body(RowListBody)
    items, pagination = knowledge.list_rows(_source(args["dataSourceId"]), **_page_args(args))
    return {"success": True, "dataSourceRows": [{"id": r.id, "name": r.name} for r in items],
            "pagination": pagination}


@blp.route("/data-sources/row", methods=["GET"])
@blp.response(200)
def get_row():
    """One row with its content (`dataSourceId` and `dataSourceRowId` in the query string)"""
    source_id, row_id = request.args.get("dataSourceId"), request.args.get("dataSourceRowId")
    missing = [n for n, v in (("dataSourceId", source_id), ("dataSourceRowId", row_id)) if not v]
    if missing:
        raise BadRequest(f"{', '.join(missing)} required", fields={n: "missing" for n in missing})
    source = _source(source_id)
    row = knowledge.get_row(source, row_id)
    return {"success": True, "dataSourceRow": {
        "id": row.id, "type": source.type, "state": row.status, "lastSync": _iso(row.last_sync),
        "createdAt": _iso(row.created_at), "content": row.content}}


class RowUpdate(Body):
    id = id_field(required=True)
    name = fields.Str(validate=validate.Length(max=500))
    content = fields.Str(validate=validate.Length(min=1))


class UpdateRowsBody(SourceIdBody):
    dataSourceRows = fields.List(fields.Nested(RowUpdate), required=True, validate=validate.Length(1, 1000))


@blp.route("/data-sources/row", methods=["PUT"])
@blp.response(200)
def update_rows():
    """Update rows by id, one or many, all or nothing"""
    data = _body(UpdateRowsBody)
    knowledge.update_rows(_source(data["dataSourceId"]), data["dataSourceRows"],
                          max_row_chars=current_app.config["KNOWLEDGE_MAX_ROW_CHARS"],
                          quota=current_app.config["KNOWLEDGE_MAX_CHARS"], only_bot=g.channel.bot_id)
    return {"success": True}


class RowRef(Body):
    id = id_field(required=True)


class DeleteRowsBody(SourceIdBody):
    dataSourceRows = fields.List(fields.Nested(RowRef), required=True, validate=validate.Length(1, 1000))


@blp.route("/data-sources/rows", methods=["DELETE"])
@blp.response(200)
def delete_rows():
    """Delete rows by id, one or many, all or nothing"""
    data = _body(DeleteRowsBody)
    knowledge.delete_rows(_source(data["dataSourceId"]), [r["id"] for r in data["dataSourceRows"]],
                          only_bot=g.channel.bot_id)
    return {"success": True}


@blp.route("/data-sources/sync", methods=["POST"])
@blp.response(200)
def sync_data_source():
    """Start a sync in the background (429 while one is running)"""
    data = _body(SourceIdBody)
    knowledge.sync_in_background(_source(data["dataSourceId"]).id, knowledge.fetch_options(current_app.config))
    return {"success": True}

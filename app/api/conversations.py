"""chatport API: conversations with bots (any key; client keys only see their bots).

Sending a message answers JSON, or ``text/event-stream`` with typed events
when ``stream`` is true: ``start`` (ids), ``delta`` (text), ``done`` (usage,
status, citations) or ``error``; ``: keep-alive`` comments while the model
is silent.
"""
from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, post_dump, validate

from app import clock, metering
from app.api.common import (
    Blueprint,
    PageArgs,
    Temperature,
    Timestamp,
    any_key,
    current_key,
    id_field,
    page,
    page_schema,
    user_label_field,
)
from app.api.sse import HEARTBEAT_FRAME, SSE_EVENT_SCHEMA, sse, stream_response
from app.metering import for_bot as _meter
from app.providers.llm import registry
from app.services import bots, chat, keys, users
from app.services.events import Delta, Done, Error, Heartbeat, Start

blp = Blueprint("conversations", __name__, url_prefix="/conversations",
                description="Conversations with bots")
blp.before_request(any_key)


def _conversation(conversation_id):
    return chat.get_conversation(conversation_id, bot_ids=keys.bot_scope(current_key()))


class ConversationCreate(Schema):
    bot_id = id_field(required=True)
    end_user_id = user_label_field(metadata={"description": "Your label for the end user"})
    title = fields.Str(validate=validate.Length(max=200))


class ConversationOut(Schema):
    id = fields.Str()
    bot_id = fields.Function(lambda c: c.bot_id)
    model = fields.Str(allow_none=True, metadata={"description": "The provider model of a conversation "
                                                                "without a bot (the Responses API's)"})
    surface = fields.Str()
    end_user_id = fields.Function(lambda c: c.end_user.external_id if c.end_user_id else None)
    title = fields.Str()
    greeting = fields.Str(dump_default=None, allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class ConversationArgs(PageArgs):
    bot_id = id_field()
    end_user_id = user_label_field()


def _structure(name):
    return fields.Function(lambda m: (getattr(m, "structure", None) or {}).get(name),
                           metadata={"description": "Only on a message that is more than text"})


class MessageOut(Schema):
    id = fields.Str()
    conversation_id = fields.Function(lambda m: m.conversation_id)
    role = fields.Str()
    content = fields.Str(metadata={"description": "The text (of the text parts, when there are parts)"})
    # A message that is more than text, as it was sent: its content parts, the tool calls an
    # answer made, the tool call a result answers.
    parts = _structure("content")
    tool_calls = _structure("tool_calls")
    tool_call_id = _structure("tool_call_id")
    status = fields.Str()
    error = fields.Str(allow_none=True)
    model = fields.Str(allow_none=True)
    prompt_tokens = fields.Int()
    completion_tokens = fields.Int()
    tokens_estimated = fields.Bool()
    citations = fields.List(fields.Dict())
    rating = fields.Str(allow_none=True)
    rating_comment = fields.Str(allow_none=True)
    created_at = Timestamp()

    @post_dump
    def _text_only(self, data, **kwargs):
        for name in ("parts", "tool_calls", "tool_call_id"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class SendMessage(Schema):
    content = fields.Str(required=True, validate=validate.Length(min=1),
                         metadata={"description": "At most MAX_MESSAGE_LENGTH characters (checked by the turn)"})
    stream = fields.Bool(load_default=False)
    model = fields.Str(validate=validate.Length(1, 200))
    temperature = Temperature()
    max_tokens = fields.Int(validate=validate.Range(1, 1_000_000))
    stop = fields.List(fields.Str(validate=validate.Length(1, 100)), validate=validate.Length(max=4))


class UsageOut(Schema):
    prompt_tokens = fields.Int()
    completion_tokens = fields.Int()
    total_tokens = fields.Int()
    estimated = fields.Bool()


class TurnOut(Schema):
    conversation_id = fields.Str()
    user_message_id = fields.Str()
    message = fields.Nested(MessageOut)
    usage = fields.Nested(UsageOut)
    finish_reason = fields.Str()


class RateMessage(Schema):
    rating = fields.Str(required=True, allow_none=True, validate=validate.OneOf(["like", "dislike"]))
    comment = fields.Str(allow_none=True, validate=validate.Length(max=2000))


ConversationPage = page_schema(ConversationOut, "ConversationPage")
MessagePage = page_schema(MessageOut, "MessagePage")


@blp.route("")
class ConversationList(MethodView):
    @blp.arguments(ConversationArgs, location="query")
    @blp.response(200, ConversationPage)
    def get(self, args):
        """List conversations (filter by bot and end user)"""
        _meter()
        end_user = None
        if args.get("end_user_id"):
            end_user = users.find(args["end_user_id"])
            if end_user is None:
                return page([], {"total": 0, "last": None})
        return page(*chat.list_conversations(bot_ids=keys.bot_scope(current_key()), bot_id=args.get("bot_id"),
                                             end_user=end_user, limit=args["limit"], cursor=args["cursor"]))

    @blp.arguments(ConversationCreate)
    @blp.response(201, ConversationOut)
    def post(self, data):
        """Start a conversation with a bot; answers its id and greeting"""
        key = current_key()
        bot = bots.get_bot(data["bot_id"], key)
        _meter(bot)
        conv = chat.start_conversation(bot, surface="api", api_key=key, title=data.get("title", ""),
                                       end_user=users.touch(data.get("end_user_id")))
        conv.greeting = bot.greeting or None
        return conv


@blp.route("/<conversation_id>")
class ConversationItem(MethodView):
    @blp.response(200, ConversationOut)
    def get(self, conversation_id):
        """Show a conversation"""
        _meter()
        return _conversation(conversation_id)

    @blp.response(204)
    def delete(self, conversation_id):
        """Delete a conversation and its messages"""
        _meter()
        chat.delete_conversation(_conversation(conversation_id))


@blp.route("/<conversation_id>/messages")
class MessageList(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, MessagePage)
    def get(self, args, conversation_id):
        """List a conversation's messages, oldest first (with citations)"""
        _meter()
        conv = _conversation(conversation_id)
        return page(*chat.list_messages(conv, **args))

    @blp.arguments(SendMessage)
    @blp.response(200, TurnOut)
    @blp.alt_response(200, description="Typed server-sent events when stream is true",
                      content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
    def post(self, data, conversation_id):
        """Send a message and get the bot's answer (JSON, or SSE when stream is true)"""
        conv, bot = chat.conversation_for_turn(conversation_id, bot_ids=keys.bot_scope(current_key()))
        meter = _meter(bot)
        turn = chat.prepare_turn(
            registry=registry(), config=current_app.config, bot=bot,
            model=data.get("model") or (conv.model if bot is None else None),
            content=data["content"], conversation=conv,
            options={k: data.get(k) for k in ("temperature", "max_tokens", "stop")} | {"stream": data["stream"]},
        )
        metering.start_turn(turn)
        if data["stream"]:
            return stream_response(_sse_events(turn, meter, current_app.config["SSE_HEARTBEAT"]))
        done = turn.run()
        meter.add_tokens(done.usage, turn.model.name)
        # Every turn answers this: rendered from the saved row's values, as TurnOut would
        # render it (tests/test_conversations_api.py holds them equal), without a schema pass.
        message = (_message_json(turn.saved) if turn.saved is not None
                   else MessageOut().dump(chat.get_message(done.message_id)))
        return current_app.json.response({
            "conversation_id": conv.id,
            "user_message_id": turn.user_message_id,
            "message": message,
            "usage": _usage(done.usage),
            "finish_reason": done.finish_reason,
        })


def _message_json(row):
    """``MessageOut`` of a message given as its column values."""
    out = {"id": row["id"], "conversation_id": row["conversation"], "role": row["role"],
           "content": row["content"], "status": row["status"], "error": row["error"], "model": row["model"],
           "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
           "tokens_estimated": row["tokens_estimated"], "citations": row["citations"],
           "rating": row["rating"], "rating_comment": row["rating_comment"],
           "created_at": clock.iso(row["created_at"])}
    for name, key in (("parts", "content"), ("tool_calls", "tool_calls"), ("tool_call_id", "tool_call_id")):
        if (row["structure"] or {}).get(key) is not None:
            out[name] = row["structure"][key]
    return out


def _usage(usage):
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "estimated": usage.estimated}


def _sse_events(turn, meter, heartbeat):
    """chatport SSE: start, delta..., done | error."""
    try:
        for event in turn.events(heartbeat=heartbeat):
            if isinstance(event, Start):
                yield sse({"conversation_id": event.conversation_id, "user_message_id": event.user_message_id,
                           "message_id": event.assistant_message_id, "model": event.model}, "start")
            elif isinstance(event, Delta):
                yield sse({"text": event.text}, "delta")
            elif isinstance(event, Heartbeat):
                yield HEARTBEAT_FRAME
            elif isinstance(event, Done):
                yield sse({"message_id": event.message_id, "status": event.status,
                           "finish_reason": event.finish_reason, "usage": _usage(event.usage),
                           "citations": event.citations}, "done")
            elif isinstance(event, Error):
                err = event.error
                meter.status = err.status
                yield sse({"message_id": event.message_id, "error": {
                    "code": err.status, "error": err.code, "message": err.message}}, "error")
    finally:
        meter.add_tokens(getattr(turn, "usage", None), turn.model.name)


@blp.route("/<conversation_id>/messages/<message_id>/rating", methods=["POST"])
@blp.arguments(RateMessage)
@blp.response(200, MessageOut)
def rate_message(data, conversation_id, message_id):
    """Like or dislike an answer, with an optional comment"""
    _meter()
    return chat.rate_message(_conversation(conversation_id), message_id, data["rating"], data.get("comment"))


class StopOut(Schema):
    message_id = fields.Str()
    stop_requested = fields.Bool()


@blp.route("/<conversation_id>/messages/<message_id>/stop", methods=["POST"])
@blp.response(202, StopOut)
def stop_generation(conversation_id, message_id):
    """Stop an in-flight answer (the message id from the stream's start event); the partial answer is saved.

    `stop_requested` is false when the answer had already finished; 404 for an id that is not an
    answer of this conversation."""
    _meter()
    running = chat.request_stop(_conversation(conversation_id), message_id,
                                max_age=float(current_app.config["STREAM_TIMEOUT"]))
    return {"message_id": message_id, "stop_requested": running}

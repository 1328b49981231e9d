"""The chat API dialect (Chatbase-style): ``/api/v1/chat`` and chatbot management.

Errors are ``{"message": "..."}`` with the HTTP status (the platform's clients
read ``errorData.message``). Streaming answers are plain text chunks, no SSE.
"""

from flask import current_app
from marshmallow import EXCLUDE, Schema, fields, validate

from app import clock, metering
from app.api.common import (
    Blueprint,
    Temperature,
    Timestamp,
    any_key,
    current_key,
    id_field,
    instructions_field,
    json_object,
    name_field,
    page_limit_field,
)
from app.api.errors import register_dialect
from app.api.sse import stream_response
from app.errors import BadRequest
from app.ids import is_client_id
from app.metering import for_bot as _meter
from app.providers.llm import registry
from app.services import bots, chat, chatbots, keys
from app.services.events import Delta, Error
from app.storage.pagination import page_size

blp = Blueprint("chat_api", __name__, url_prefix="", description="Chat API (Chatbase-style)")

PATHS = ("/chat", "/create-chatbot", "/update-chatbot-data", "/update-chatbot-settings",
         "/get-chatbots", "/delete-chatbot", "/get-conversations")


def render_error(err):
    return {"message": err.message}, err.status, err.headers


def register(app, api, prefix):
    api.register_blueprint(blp, url_prefix=prefix)
    for path in PATHS:
        register_dialect(app, prefix + path, render_error)


blp.before_request(any_key)  # 401 before any body is looked at


def _admin():
    keys.require_admin(current_key())


class ChatApiLoose(Schema):
    class Meta:
        unknown = EXCLUDE  # clients of hosted platforms send fields chatport does not use


class ChatApiMessage(ChatApiLoose):
    content = fields.Str(required=True)
    role = fields.Str(required=True, validate=validate.OneOf(["user", "assistant"]))


class ChatApiRequest(ChatApiLoose):
    messages = fields.List(fields.Nested(ChatApiMessage), required=True, validate=validate.Length(min=1))
    chatbotId = id_field(required=True)
    stream = fields.Bool(load_default=False)
    temperature = Temperature()
    conversationId = id_field(36)
    model = fields.Str(validate=validate.Length(1, 200))


class ChatReply(Schema):
    text = fields.Str()


@blp.route("/chat", methods=["POST"])
@blp.arguments(ChatApiRequest)
@blp.response(200, ChatReply)
@blp.alt_response(200, description="The answer as plain text chunks when stream is true",
                  content_type="text/plain", success=True, schema={"type": "string"})
def chat_endpoint(data):
    """Chat with a chatbot: the whole history in, the answer out (JSON or plain-text stream)"""
    key = current_key()
    bot = bots.get_bot(data["chatbotId"], key)
    meter = _meter(bot)
    model = chatbots.check_model(bot, data.get("model"))
    conv = None
    if data.get("conversationId"):
        conv = chatbots.conversation_for(bot, data["conversationId"], api_key=key)
    turn = chat.prepare_turn(
        registry=registry(), config=current_app.config, bot=bot, model=model,
        messages=data["messages"], conversation=conv, persist=conv is not None,
        options={"temperature": data.get("temperature"), "stream": data["stream"]})
    metering.start_turn(turn)
    if data["stream"]:
        def text_chunks():
            try:
                for event in turn.events():
                    if isinstance(event, Delta):
                        yield event.text
                    elif isinstance(event, Error):
                        meter.status = event.error.status
            finally:
                meter.add_tokens(getattr(turn, "usage", None), turn.model.name)

        return stream_response(text_chunks(), mimetype="text/plain")
    done = turn.run()
    meter.add_tokens(done.usage, turn.model.name)
    return {"text": done.content}


class CreateChatbot(ChatApiLoose):
    chatbotName = name_field(required=True)
    sourceText = fields.Str(validate=validate.Length(max=1_000_000))


class ChatbotId(Schema):
    chatbotId = fields.Str()


def _knowledge_limits():
    config = current_app.config
    return {"max_row_chars": config["KNOWLEDGE_MAX_ROW_CHARS"], "quota": config["KNOWLEDGE_MAX_CHARS"]}


@blp.route("/create-chatbot", methods=["POST"])
@blp.arguments(CreateChatbot)
@blp.response(200, ChatbotId)
def create_chatbot(data):
    """Create a chatbot; `sourceText` becomes its knowledge (synced before this returns)"""
    _admin()
    _meter()
    bot = chatbots.create_chatbot(data["chatbotName"], data.get("sourceText"),
                                  default_model=current_app.config["CHAT_API_MODEL"], **_knowledge_limits())
    return {"chatbotId": bot.id}


class UpdateChatbotData(ChatApiLoose):
    chatbotId = id_field(required=True)
    chatbotName = name_field()
    sourceText = fields.Str(validate=validate.Length(max=1_000_000))


@blp.route("/update-chatbot-data", methods=["POST"])
@blp.arguments(UpdateChatbotData)
@blp.response(200, ChatbotId)
def update_chatbot_data(data):
    """Rename a chatbot and/or replace its `sourceText` knowledge (re-synced)"""
    _admin()
    bot = bots.get_bot(data["chatbotId"], current_key())
    _meter(bot)
    chatbots.update_chatbot_data(bot, name=data.get("chatbotName"), source_text=data.get("sourceText"),
                                 **_knowledge_limits())
    return {"chatbotId": bot.id}


class UpdateChatbotSettings(ChatApiLoose):
    chatbotId = id_field(required=True)
    chatbotName = name_field()
    instructions = instructions_field()
    model = fields.Str(validate=validate.Length(1, 200))
    temperature = Temperature()


@blp.route("/update-chatbot-settings", methods=["POST"])
@blp.arguments(UpdateChatbotSettings)
@blp.response(200, ChatbotId)
def update_chatbot_settings(data):
    """Change a chatbot's name, instructions, model or temperature"""
    _admin()
    bot = bots.get_bot(data["chatbotId"], current_key())
    _meter(bot)
    changes = {"name": data.get("chatbotName"), "instructions": data.get("instructions"),
               "model": data.get("model"), "temperature": data.get("temperature")}
    changes = {k: v for k, v in changes.items() if v is not None}
    if "model" in changes:
        registry().get(changes["model"])  # 400 listing models when unknown
    bots.update_bot(bot.id, current_key(), **changes)
    return {"chatbotId": bot.id}


class ChatbotOut(Schema):
    id = fields.Str()
    name = fields.Str()
    instructions = fields.Str()
    model = fields.Str()
    temperature = fields.Float(allow_none=True)
    created_at = Timestamp()


class ChatbotList(Schema):
    chatbots = fields.Dict()


@blp.route("/get-chatbots", methods=["GET"])
@blp.response(200, ChatbotList)
def get_chatbots():
    """List chatbots"""
    _admin()
    _meter()
    rows = bots.all_bots(current_key())
    return {"chatbots": {"data": ChatbotOut(many=True).dump(rows)}}


class DeleteArgs(ChatApiLoose):
    chatbotId = id_field()


class Deleted(Schema):
    message = fields.Str()


@blp.route("/delete-chatbot", methods=["DELETE"])
@blp.arguments(DeleteArgs, location="query", required=False)
@blp.response(200, Deleted)
def delete_chatbot(args):
    """Delete a chatbot (`chatbotId` in the query string or the JSON body)"""
    _admin()
    chatbot_id = args.get("chatbotId") or json_object().get("chatbotId")
    if chatbot_id is None:
        raise BadRequest("chatbotId is required (query string or body)", fields={"chatbotId": "missing"})
    if not is_client_id(chatbot_id):
        raise BadRequest("chatbotId must be 1 to 64 visible ASCII characters", fields={"chatbotId": "invalid"})
    bot = bots.get_bot(chatbot_id, current_key())
    _meter(bot)
    chatbots.delete_chatbot(bot)
    return {"message": "Chatbot deleted"}


class ChatApiConversationArgs(ChatApiLoose):
    chatbotId = id_field(required=True)
    startDate = fields.Str()
    endDate = fields.Str()
    page = fields.Int(load_default=1, validate=validate.Range(1, 1_000_000))
    size = page_limit_field()


class ConversationsOut(Schema):
    data = fields.List(fields.Dict())
    page = fields.Int()
    size = fields.Int()
    total = fields.Int()


@blp.route("/get-conversations", methods=["GET"])
@blp.arguments(ChatApiConversationArgs, location="query")
@blp.response(200, ConversationsOut)
def get_conversations(args):
    """A chatbot's conversations with their messages, newest first, by page"""
    key = current_key()
    bot = bots.get_bot(args["chatbotId"], key)
    _meter(bot)
    start = clock.parse_time(args.get("startDate"), "startDate")
    end = clock.parse_time(args.get("endDate"), "endDate", end_of_day=True)
    size = page_size(args["size"], "size")
    rows, total = chat.conversations_with_messages(bot, start=start, end=end, page=args["page"], size=size)
    data = []
    for conv in rows:
        data.append({"id": conv.id, "chatbot_id": bot.id, "source": conv.surface,
                     "created_at": Timestamp()._serialize(conv.created_at, None, None),
                     "messages": [{"role": m.role, "content": m.content} for m in conv.messages_in_order]})
    return {"data": data, "page": args["page"], "size": size, "total": total}

"""OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

``model`` is a provider model (``echo/echo``, ``openai/gpt-4o-mini``, an
alias) or a bot (``bot/<id or name>``: the bot's instructions and knowledge
apply). These calls are stateless: nothing is stored but the usage row.
Keys scoped to some bots may only use those bots.
"""
import calendar

from flask import current_app
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from app import metering
from app.api.common import Blueprint, Temperature, any_key, current_key, user_label_field
from app.api.openai_format import chunk_stream, completion_body
from app.api.sse import SSE_EVENT_SCHEMA, stream_response
from app.errors import BadRequest, Forbidden
from app.providers.llm import registry
from app.services import bots, chat, keys
from app.services.models import list_models

blp = Blueprint("openai", __name__, url_prefix="/v1", description="OpenAI-compatible API")
blp.before_request(any_key)


class OpenAILoose(Schema):
    class Meta:
        unknown = EXCLUDE  # OpenAI clients send many optional fields


class StreamOptions(OpenAILoose):
    include_usage = fields.Bool(load_default=False)


class OpenAIMessage(OpenAILoose):
    role = fields.Str(required=True, validate=validate.OneOf(["system", "developer", "user", "assistant"]))
    content = fields.Raw(required=True)
    name = fields.Str()


class ChatCompletionRequest(OpenAILoose):
    model = fields.Str(required=True, validate=validate.Length(1, 300))
    messages = fields.List(fields.Nested(OpenAIMessage), required=True, validate=validate.Length(min=1))
    stream = fields.Bool(load_default=False)
    stream_options = fields.Nested(StreamOptions, allow_none=True)
    temperature = Temperature()
    max_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))
    max_completion_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))
    stop = fields.Raw(allow_none=True)
    user = user_label_field(min_length=0, allow_none=True)
    n = fields.Int(allow_none=True)

    @validates_schema
    def _n_is_one(self, data, **kwargs):
        if data.get("n") not in (None, 1):
            raise ValidationError("only n=1 is supported", "n")


def _text(content):
    """OpenAI content: a string or a list of parts; only text parts are supported."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text", "") for p in content if p.get("type") == "text"]
        if len(texts) == len(content):
            return "".join(texts)
    raise BadRequest("message content must be a string or a list of text parts",
                     fields={"messages": "unsupported content"})


@blp.route("/chat/completions", methods=["POST"])
@blp.arguments(ChatCompletionRequest)
@blp.response(200)
@blp.alt_response(200, description="chat.completion.chunk events when stream is true",
                  content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
def chat_completions(data):
    """Create a chat completion (OpenAI wire format; streaming with SSE chunks)"""
    key = current_key()
    meter = metering.current()
    bot, model_name = None, data["model"]
    if model_name.startswith("bot/"):
        bot = bots.find_bot(model_name[4:], key)
        meter.bot_id = bot.id
        model_name = None
    elif keys.bot_scope(key) is not None:
        raise Forbidden("This key may only use its bots (model 'bot/<id>')")
    messages = [{"role": "system" if m["role"] == "developer" else m["role"], "content": _text(m["content"])}
                for m in data["messages"]]
    stop = data.get("stop")
    options = {"temperature": data.get("temperature"),
               "max_tokens": data.get("max_completion_tokens") or data.get("max_tokens"),
               "stop": stop, "user": data.get("user"), "stream": data["stream"]}
    turn = chat.prepare_turn(registry=registry(), config=current_app.config, bot=bot, model=model_name,
                             messages=messages, options=options, persist=False)
    metering.start_turn(turn)
    shown_model = data["model"]
    if data["stream"]:
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        events = turn.events(heartbeat=current_app.config["SSE_HEARTBEAT"])
        finish = metering.stream_finish(turn, events)
        return stream_response(chunk_stream(events, shown_model, include_usage=include_usage, on_finish=finish))
    done = turn.run()
    meter.add_tokens(done.usage, turn.model.name)
    return completion_body(done, shown_model, turn.created)


@blp.route("/models", methods=["GET"])
@blp.response(200)
def models():
    """List models (OpenAI format): provider models and bots (`bot/<id>`)"""
    key = current_key()
    data = []
    if keys.bot_scope(key) is None:
        for m in list_models(registry()):
            if m.get("kind", "chat") == "chat":
                data.append({"id": m["id"], "object": "model", "created": 0, "owned_by": m["provider"]})
    for bot in bots.enabled_bots(key):
        data.append({"id": f"bot/{bot.id}", "object": "model", "created": calendar.timegm(bot.created_at.timetuple()),
                     "owned_by": "chatport", "name": bot.name})
    return {"object": "list", "data": data}

"""OpenAI-compatible API: ``POST /v1/chat/completions``, ``POST /v1/completions`` (legacy),
``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /v1/models/{id}``.

``model`` is a provider model (``echo/echo``, ``openai/gpt-4o-mini``, an alias) or, for
completions, a bot (``bot/<id or name>``: the bot's instructions and knowledge apply). These
calls are stateless: nothing is stored but the usage row. Keys scoped to some bots may only use
those bots.

The views only translate: the messages, tools and options are checked by the chat engine
(``app.services.messages``, ``chat.prepare_turn``), which also asks the model whether it honours
each of them. Request fields this dialect does not know are not dropped: they travel as
``passthrough`` to the model, which takes them (OpenAI-compatible servers) or refuses them with a
400 naming the field (``IGNORED`` lists the few that never change an answer).
"""
import calendar

from flask import current_app
from marshmallow import EXCLUDE, Schema, fields, missing, validate

from app import metering
from app.api.common import (
    Blueprint,
    Temperature,
    any_key,
    current_key,
    model_body_limit,
    model_or_bot,
    read_json,
    user_label_field,
)
from app.api.openai_format import (
    chunk_stream,
    completion_body,
    embeddings_body,
    text_completion_body,
    text_completion_stream,
)
from app.api.sse import SSE_EVENT_SCHEMA, stream_response
from app.errors import BadRequest, Forbidden, NotFound
from app.providers.llm import registry
from app.services import bots, chat, embeddings, keys
from app.services.models import list_models

blp = Blueprint("openai", __name__, url_prefix="/v1", description="OpenAI-compatible API")
blp.before_request(model_body_limit)
blp.before_request(any_key)

# Fields OpenAI's clients send that change nothing in the answer: where OpenAI keeps it
# (``store``), its billing tier, cache routing, an abuse-tracking id, and a predicted output
# (which only speeds up an answer that comes out the same). ``modalities: ["text"]`` is the
# default too; anything else in it (audio out) is passed on.
IGNORED = frozenset(("store", "service_tier", "prompt_cache_key", "safety_identifier", "prediction"))
# Fields of OpenAI's API that chatport refuses rather than pass on: what answers them is not
# rendered back (``function_call`` in the message).
REFUSED = {"functions": "functions are deprecated in OpenAI's API: send tools",
           "function_call": "function_call is deprecated in OpenAI's API: send tool_choice"}


class OpenAILoose(Schema):
    class Meta:
        unknown = EXCLUDE  # the fields a schema does not declare are read from the body (``_passthrough``)


def loaded_fast(schema_cls):
    """An instance of ``schema_cls`` that skips its optional fields when they are absent.

    A declared field costs marshmallow a deserialisation call even when the body lacks it;
    marshmallow's ``partial`` (the names whose absence is fine) skips those at once, so a
    plain request pays for the few fields it sends, not for the twenty it could. Required
    fields and fields with a default are left out of it and work as usual."""
    schema = schema_cls()
    schema.partial = frozenset(name for name, f in schema.load_fields.items()
                               if not f.required and f.load_default is missing)
    return schema


class StreamOptions(OpenAILoose):
    include_usage = fields.Bool(load_default=False)


def _doc(kind, description, **more):
    return {"type": kind, "description": description, **more}


MESSAGE_DOC = {"type": "object", "required": ["role"], "properties": {
    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
    "content": {"description": "a string, a list of parts (text, image_url, input_audio, file) or null "
                               "(an assistant message with tool_calls)"},
    "tool_calls": {"type": "array", "items": {"type": "object"}},
    "tool_call_id": {"type": "string"}, "name": {"type": "string"}}}


class ChatCompletionRequest(OpenAILoose):
    model = fields.Str(required=True, validate=validate.Length(1, 300))
    messages = fields.Raw(required=True, metadata=_doc("array", "The conversation (checked by the chat engine)",
                                                       items=MESSAGE_DOC, minItems=1))
    stream = fields.Bool(load_default=False, allow_none=True)
    stream_options = fields.Nested(StreamOptions, allow_none=True)
    temperature = Temperature()
    max_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))
    max_completion_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))
    stop = fields.Raw(allow_none=True, metadata={"description": "a string or a list of up to 4 strings"})
    user = user_label_field(min_length=0, allow_none=True)
    n = fields.Int(allow_none=True, metadata={"description": "choices, 1..MAX_CHOICES"})
    tools = fields.Raw(allow_none=True, metadata=_doc("array", "function tools, at most MAX_TOOLS",
                                                      items={"type": "object"}))
    tool_choice = fields.Raw(allow_none=True, metadata={"description": "auto, none, required or a named function"})
    parallel_tool_calls = fields.Bool(allow_none=True)
    response_format = fields.Raw(allow_none=True, metadata=_doc("object", "text, json_object or json_schema"))
    seed = fields.Int(allow_none=True)
    logprobs = fields.Bool(allow_none=True)
    top_logprobs = fields.Int(allow_none=True, metadata={"description": "0..20, with logprobs"})
    top_p = fields.Float(allow_none=True)
    presence_penalty = fields.Float(allow_none=True)
    frequency_penalty = fields.Float(allow_none=True)
    logit_bias = fields.Raw(allow_none=True, metadata=_doc("object", "token id -> bias (-100..100)"))
    metadata = fields.Raw(allow_none=True, metadata=_doc("object", "up to 16 string pairs"))
    reasoning_effort = fields.Str(allow_none=True)


# The request fields that become turn options of the same name, when set.
CHAT_OPTIONS = frozenset(("temperature", "stop", "user", "n", "tools", "tool_choice", "parallel_tool_calls",
                          "response_format", "seed", "logprobs", "top_logprobs", "top_p", "presence_penalty",
                          "frequency_penalty", "logit_bias", "metadata", "reasoning_effort"))
# Values that are each field's default: left out, so a plain request stays a plain text turn.
DEFAULTS = {"n": 1, "logprobs": False}


def _passthrough(schema):
    """The body's fields ``schema`` does not declare (null ones and ``IGNORED`` left out).
    Raises BadRequest for the ``REFUSED`` ones."""
    body = read_json()
    out = {}
    for name in body.keys() - schema.fields.keys():
        value = body[name]
        if value is None or name in IGNORED or (name == "modalities" and value == ["text"]):
            continue
        if name in REFUSED:
            raise BadRequest(REFUSED[name], fields={name: "not supported"})
        out[name] = value
    return out


def _options(data, names, schema):
    """The turn options of a loaded body: ``names`` that are set to something but their
    default, and the pass-through fields."""
    options = {"stream": bool(data["stream"]), "max_tokens": data.get("max_completion_tokens") or data.get("max_tokens")}
    for name, value in data.items():  # only the fields the body holds
        if name in names and value is not None and not (name in DEFAULTS and value == DEFAULTS[name]):
            options[name] = value
    passthrough = _passthrough(schema)
    if passthrough:
        options["passthrough"] = passthrough
    return options



_chat_schema = loaded_fast(ChatCompletionRequest)


@blp.route("/chat/completions", methods=["POST"])
@blp.arguments(_chat_schema)
@blp.response(200)
@blp.alt_response(200, description="chat.completion.chunk events when stream is true",
                  content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
def chat_completions(data):
    """Create a chat completion (OpenAI wire format; streaming with SSE chunks)"""
    bot, model_name = model_or_bot(data["model"])
    options = _options(data, CHAT_OPTIONS, _chat_schema)
    turn = chat.prepare_turn(registry=registry(), config=current_app.config, bot=bot, model=model_name,
                             messages=data["messages"], options=options, persist=False)
    meter = metering.start_turn(turn)
    shown_model = data["model"]
    if options["stream"]:
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        events = turn.events(heartbeat=current_app.config["SSE_HEARTBEAT"])
        finish = metering.stream_finish(turn, events)
        return stream_response(chunk_stream(events, shown_model, include_usage=include_usage, on_finish=finish,
                                            n=turn.request.n))
    done = turn.run()
    meter.add_tokens(done.usage, turn.model.name)
    return completion_body(done, shown_model, turn.created)


# ---------------------------------------------------------------- legacy text completions


class CompletionRequest(OpenAILoose):
    model = fields.Str(required=True, validate=validate.Length(1, 300))
    prompt = fields.Raw(required=True, metadata={"description": "a string (or a list of one string)"})
    stream = fields.Bool(load_default=False, allow_none=True)
    stream_options = fields.Nested(StreamOptions, allow_none=True)
    max_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))
    temperature = Temperature()
    top_p = fields.Float(allow_none=True)
    n = fields.Int(allow_none=True)
    stop = fields.Raw(allow_none=True, metadata={"description": "a string or a list of up to 4 strings"})
    logprobs = fields.Int(allow_none=True, validate=validate.Range(0, 5),
                          metadata={"description": "the log probabilities of this many likely tokens at each position"})
    echo = fields.Bool(load_default=False, allow_none=True)
    suffix = fields.Str(allow_none=True, metadata={"description": "no model supports it: refused"})
    seed = fields.Int(allow_none=True)
    presence_penalty = fields.Float(allow_none=True)
    frequency_penalty = fields.Float(allow_none=True)
    logit_bias = fields.Raw(allow_none=True, metadata=_doc("object", "token id -> bias (-100..100)"))
    best_of = fields.Int(allow_none=True, metadata={"description": "only 1 (or n): more is passed to the model"})
    user = user_label_field(min_length=0, allow_none=True)


COMPLETION_OPTIONS = frozenset(("temperature", "stop", "user", "n", "top_p", "seed", "presence_penalty",
                                "frequency_penalty", "logit_bias"))
_completion_schema = loaded_fast(CompletionRequest)


def _prompt(value):
    """The prompt's text: a string, or a list of one string."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    elif isinstance(value, list) and len(value) > 1 and all(isinstance(v, str) for v in value):
        raise BadRequest("prompt: one prompt per request (send several requests, or n for several choices)",
                         fields={"prompt": "more than one prompt"})
    if not isinstance(value, str):
        raise BadRequest("prompt must be a string (token arrays are not supported)", fields={"prompt": "invalid"})
    if not value.strip():
        raise BadRequest("prompt must be a non-empty string", fields={"prompt": "empty"})
    return value


@blp.route("/completions", methods=["POST"])
@blp.arguments(_completion_schema)
@blp.response(200)
@blp.alt_response(200, description="text_completion events when stream is true",
                  content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
def completions(data):
    """Create a text completion (OpenAI's legacy completions: the prompt is one user message)"""
    bot, model_name = model_or_bot(data["model"])
    prompt = _prompt(data["prompt"])
    options = _options(data, COMPLETION_OPTIONS, _completion_schema)
    if data.get("logprobs") is not None:
        options["logprobs"], options["top_logprobs"] = True, data["logprobs"]
    if data.get("best_of") not in (None, 1, data.get("n") or 1):
        options.setdefault("passthrough", {})["best_of"] = data["best_of"]
    try:
        turn = chat.prepare_turn(registry=registry(), config=current_app.config, bot=bot, model=model_name,
                                 messages=[{"role": "user", "content": prompt}], options=options, persist=False)
    except BadRequest as exc:  # the prompt is the one message: say so
        if any(f.startswith("messages") for f in exc.fields):
            exc.fields = {"prompt": next(iter(exc.fields.values()))}
            exc.message = exc.message.replace("messages[0]", "prompt")
        raise
    if data.get("suffix"):
        name = turn.model.name
        raise BadRequest(f"Model {name} does not support suffix", code="unsupported_parameter",
                         fields={"suffix": f"not supported by {name}"})
    meter = metering.start_turn(turn)
    shown_model, prefix = data["model"], prompt if data.get("echo") else ""
    logprobs = data.get("logprobs") is not None
    if options["stream"]:
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        events = turn.events(heartbeat=current_app.config["SSE_HEARTBEAT"])
        finish = metering.stream_finish(turn, events)
        return stream_response(text_completion_stream(events, shown_model, prefix=prefix, logprobs=logprobs,
                                                      include_usage=include_usage, on_finish=finish,
                                                      n=turn.request.n))
    done = turn.run()
    meter.add_tokens(done.usage, turn.model.name)
    return text_completion_body(done, shown_model, turn.created, prefix=prefix, logprobs=logprobs)


# ---------------------------------------------------------------- embeddings


class EmbeddingsRequest(OpenAILoose):
    model = fields.Str(required=True, validate=validate.Length(1, 300))
    input = fields.Raw(required=True, metadata={
        "description": "a string, a list of strings, a token array or a list of token arrays (at most 2048)"})
    encoding_format = fields.Str(load_default="float", validate=validate.OneOf(["float", "base64"]))
    dimensions = fields.Int(allow_none=True)
    user = user_label_field(min_length=0, allow_none=True)


_embeddings_schema = loaded_fast(EmbeddingsRequest)


@blp.route("/embeddings", methods=["POST"])
@blp.arguments(_embeddings_schema)
@blp.response(200)
def create_embeddings(data):
    """Create embeddings (OpenAI wire format): one vector per input, as floats or base64"""
    key = current_key()
    if keys.bot_scope(key) is not None:
        raise Forbidden("This key may only use its bots (model 'bot/<id>')")
    unknown = sorted(_passthrough(_embeddings_schema))
    if unknown:  # an embedding model takes nothing more: refuse rather than drop it
        raise BadRequest(f"Unknown parameter {unknown[0]!r} for embeddings", code="unsupported_parameter",
                         fields={unknown[0]: "not supported"})
    model, result = embeddings.embed(registry(), data["model"], data["input"], data.get("dimensions"),
                                     data.get("user"))
    metering.current().add_tokens(result.usage, model.name)
    return embeddings_body(result.vectors, result.usage, data["model"], data["encoding_format"])


# ---------------------------------------------------------------- models


def _created(bot):
    return calendar.timegm(bot.created_at.timetuple())


def _bot_entry(bot, shown=None):
    return {"id": shown or f"bot/{bot.id}", "object": "model", "created": _created(bot), "owned_by": "chatport",
            "kind": "chat", "name": bot.name}


def _model_entry(shown, provider, kind, dimensions=None):
    entry = {"id": shown, "object": "model", "created": 0, "owned_by": provider, "kind": kind}
    if kind == "embedding":
        entry["dimensions"] = dimensions
    return entry


@blp.route("/models", methods=["GET"])
@blp.response(200)
def models():
    """List models (OpenAI format): chat and embedding models, and bots (`bot/<id>`)"""
    key = current_key()
    data = []
    if keys.bot_scope(key) is None:
        data.extend(_model_entry(m["id"], m["provider"], m["kind"], m.get("dimensions"))
                    for m in list_models(registry(), configuration=False))
    data.extend(_bot_entry(bot) for bot in bots.enabled_bots(key))
    return {"object": "list", "data": data}


@blp.route("/models/<path:model_id>", methods=["GET"])
@blp.response(200)
def model(model_id):
    """One model (OpenAI format): a chat or embedding model (a name or an alias), or a bot"""
    key = current_key()
    missing = NotFound(f"The model {model_id!r} does not exist or you do not have access to it",
                       code="model_not_found", fields={"model": "unknown model"})
    if model_id.startswith("bot/"):
        try:
            bot = bots.find_bot(model_id[4:], key)
        except NotFound:
            raise missing from None
        if not bot.enabled:
            raise missing
        return _bot_entry(bot, model_id)
    if keys.bot_scope(key) is not None:
        raise missing
    reg = registry()
    name = reg.resolve_name(model_id)
    for kind, known in (("chat", reg.models), ("embedding", reg.embedding_models)):
        if name in known:
            return _model_entry(model_id, known[name].provider, kind, getattr(known[name], "dimensions", None))
    raise missing

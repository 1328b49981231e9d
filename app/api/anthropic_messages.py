"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

The anthropic SDKs and tools written for Claude work against any chatport model (``echo/echo``,
``openai/...``, ``anthropic/...``, an alias, ``bot/<id or name>``). The key comes in
``x-api-key`` (Anthropic's header, read by this dialect only: ``common.x_api_key``) or
``Authorization: Bearer``; ``anthropic-version`` and ``anthropic-beta`` are accepted and not
used. Calls are stateless, as ``/v1/chat/completions``: nothing is stored but the usage row.

A request is translated here into the canonical (OpenAI-chat-shaped) messages and options of
the engine (``app.services.messages``, ``app.providers.llm.ChatRequest``); the engine's events
are rendered back as Anthropic's message body or its typed stream events. Errors are
``{"type": "error", "error": {"type", "message"}, "request_id"}`` with a ``request-id`` header.
See docs/anthropic-api.md.
"""
import base64
import binascii
import json
import logging

from flask import current_app
from marshmallow import EXCLUDE, INCLUDE, Schema, fields, validate

from app import metering
from app.api.common import (
    Blueprint,
    Temperature,
    current_key,
    model_body_limit,
    model_or_bot,
    user_label_field,
    x_api_key,
)
from app.api.errors import register_dialect
from app.api.sse import SSE_EVENT_SCHEMA, sse, stream_response
from app.errors import BadRequest, NotFound, Unauthorized
from app.ids import new_id
from app.observe import logs
from app.providers.llm import estimate_tokens, message_tokens, registry
from app.services import chat
from app.services import messages as canonical
from app.services.events import Delta, Done, Error, Heartbeat, Start

log = logging.getLogger("chatport.anthropic")

blp = Blueprint("anthropic", __name__, description="Anthropic Messages API")


def register(app, api):
    """Mount the blueprint beside the OpenAI-compatible API (``OPENAI_PREFIX``); errors under
    ``<prefix>/messages`` (also 404/405 of paths no route matches) are Anthropic's."""
    prefix = app.config["OPENAI_PREFIX"]
    api.register_blueprint(blp, url_prefix=prefix)
    register_dialect(app, prefix + "/messages", render_error)


# ---------------------------------------------------------------- authentication and errors


blp.before_request(model_body_limit)


@blp.before_request
def _authenticate():
    if not x_api_key():
        raise Unauthorized("Missing API key: send 'x-api-key: <key>' (or 'Authorization: Bearer <key>')")
    current_key(x_api_key)


def request_id():
    """This request's id (``req_...`` unless the client sent a sane ``X-Request-Id``): the
    ``request-id`` header and the error body's, the same as ``X-Request-Id`` and the logs'."""
    return logs.request_id()


@blp.after_request
def _request_id_header(response):
    response.headers.setdefault("request-id", request_id())
    return response


# Anthropic's error types by status (its API's table); any other status below 500 is an
# invalid_request_error (405, 409, 415), any other from 500 an api_error (502).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 504: "timeout_error",
               529: "overloaded_error"}


def _status(err):
    # Anthropic answers an unknown model with a 404 not_found_error (the SDKs' NotFoundError);
    # the engine's model_not_found is a 400 in the other dialects.
    return 404 if err.code == "model_not_found" else err.status


def error_body(err, rid, status=None):
    """``{"type": "error", "error": {"type", "message"}, "request_id": rid}`` for an ApiError."""
    status = status or _status(err)
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}, "request_id": rid}


def render_error(err):
    status = _status(err)
    headers = dict(err.headers)
    headers.setdefault("request-id", request_id())
    return error_body(err, request_id(), status), status, headers


# ---------------------------------------------------------------- request schemas


class AnthropicLoose(Schema):
    class Meta:
        unknown = EXCLUDE


class AnthropicMessage(AnthropicLoose):
    role = fields.Str(required=True, validate=validate.OneOf(["user", "assistant"]))
    content = fields.Raw(required=True, metadata={"description": "A string or a list of content blocks"})


class Metadata(AnthropicLoose):
    user_id = user_label_field(min_length=0, allow_none=True)


class CountTokensRequest(AnthropicLoose):
    model = fields.Str(required=True, validate=validate.Length(1, 300))
    messages = fields.List(fields.Nested(AnthropicMessage), required=True, validate=validate.Length(min=1))
    system = fields.Raw(allow_none=True, metadata={"description": "A string or a list of text blocks"})
    tools = fields.List(fields.Raw(), allow_none=True)
    tool_choice = fields.Dict(allow_none=True)
    thinking = fields.Dict(allow_none=True)
    output_config = fields.Dict(allow_none=True)


class MessagesRequest(CountTokensRequest):
    class Meta:
        unknown = INCLUDE  # fields chatport does not model go to the provider (request_options)

    max_tokens = fields.Int(required=True, strict=True, validate=validate.Range(1, 1_000_000))
    metadata = fields.Nested(Metadata, allow_none=True)
    stop_sequences = fields.List(fields.Str(), allow_none=True)
    stream = fields.Bool(load_default=False)
    temperature = Temperature()
    top_p = fields.Float(allow_none=True, validate=validate.Range(0, 1))
    top_k = fields.Int(allow_none=True, strict=True, validate=validate.Range(min=0))


# Anthropic fields that do not change the answer: accepted and not used.
IGNORED = frozenset(("service_tier", "cache_control", "inference_geo", "container", "anthropic_version"))
MODELLED = frozenset(MessagesRequest().fields) | IGNORED


# ---------------------------------------------------------------- request translation

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
EFFORTS = ("low", "medium", "high")


def _bad(message, field, why="invalid"):
    return BadRequest(message, fields={field: why})


def _blocks(content, field):
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise _bad(f"{field} must be a string or a list of content blocks", field)
    return content


def _text(block, field):
    if not isinstance(block.get("text"), str):
        raise _bad(f"{field}.text must be a string", f"{field}.text")
    return {"type": "text", "text": block["text"]}


def _parts(parts):
    """A user or tool message's content: one text part as its string, else the parts."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _image(block, field):
    """An image block as an ``image_url`` part: a base64 source as a data URL, a url source as
    its URL. The base64 and the URL's scheme are checked here, to name the block (the engine
    checks them again, and the size, in the translated messages)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if media not in IMAGE_TYPES or not isinstance(data, str):
            raise _bad(f"{field}.source: a base64 image needs media_type ({', '.join(IMAGE_TYPES)}) and data",
                       f"{field}.source")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"{field}.source.data is not valid base64", f"{field}.source.data", "not base64") from None
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url[:8].lower().startswith(("https://", "http://")):
            raise _bad(f"{field}.source.url must be an http(s) URL", f"{field}.source.url", "not http(s)")
    else:
        raise _bad(f"{field}.source must be {{'type': 'base64', 'media_type', 'data'}} or "
                   f"{{'type': 'url', 'url'}}", f"{field}.source", "unsupported image source")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block, field):
    """A document block as parts: a base64 PDF as a ``file`` part, plain text or a content
    source as their text (and images). URL and file-id sources are refused: chatport does not
    fetch them."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and source.get("media_type") == "application/pdf" and isinstance(source.get("data"), str):
        title = block.get("title") if isinstance(block.get("title"), str) else None
        return [{"type": "file", "file": {"file_data": f"data:application/pdf;base64,{source['data']}",
                                          "filename": title or "document.pdf"}}]
    if kind == "text" and isinstance(source.get("data"), str):
        return [{"type": "text", "text": source["data"]}]
    if kind == "content":
        content = source.get("content")
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        out = []
        for k, sub in enumerate(_blocks(content, f"{field}.source.content")):
            sub_field = f"{field}.source.content.{k}"
            if sub.get("type") == "text":
                out.append(_text(sub, sub_field))
            elif sub.get("type") == "image":
                out.append(_image(sub, sub_field))
            else:
                raise _bad(f"{sub_field}: a document's content may hold text and image blocks", sub_field)
        return out
    raise _bad(f"{field}.source must be a base64 PDF (media_type application/pdf), a text source or a content "
               f"source; url and file sources are not supported", f"{field}.source", "unsupported document source")


def _tool_result(block, field, calls):
    """A tool_result block as a ``tool`` message, and the images it held (for the user message
    that follows the tool messages: a tool message carries text only)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or call_id not in calls:
        raise _bad(f"{field}.tool_use_id {call_id!r} matches no tool_use block of an earlier assistant message",
                   f"{field}.tool_use_id", "matches no tool_use")
    content = block.get("content")
    parts, images = [], []
    if content is None:
        content = ""
    if isinstance(content, str):
        parts.append({"type": "text", "text": content})
    else:
        for k, sub in enumerate(_blocks(content, f"{field}.content")):
            sub_field = f"{field}.content.{k}"
            if sub.get("type") == "text":
                parts.append(_text(sub, sub_field))
            elif sub.get("type") == "image":
                images.append(_image(sub, sub_field))
            else:
                raise _bad(f"{sub_field}: a tool_result's content may hold text and image blocks", sub_field)
    if block.get("is_error") is True:  # the canonical tool message has no error flag: say it in the text
        parts.insert(0, {"type": "text", "text": "Error: "})
    elif block.get("is_error") not in (None, False):
        raise _bad(f"{field}.is_error must be a boolean", f"{field}.is_error")
    return {"role": "tool", "tool_call_id": call_id, "content": _parts(parts) if parts else ""}, images


def _user(i, content, calls):
    """A user message: its tool results as ``tool`` messages, in order, then the rest of its
    content (text, images, documents, the tool results' images) as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out, parts, images = [], [], []
    for j, block in enumerate(_blocks(content, f"messages.{i}.content")):
        field, kind = f"messages.{i}.content.{j}", block.get("type")
        if kind == "text":
            parts.append(_text(block, field))
        elif kind == "image":
            parts.append(_image(block, field))
        elif kind == "document":
            parts.extend(_document(block, field))
        elif kind == "tool_result":
            message, found = _tool_result(block, field, calls)
            out.append(message)
            images.extend(found)
        else:
            raise _bad(f"{field}: a user message's blocks may be text, image, document or tool_result, "
                       f"not {kind!r}", field, "unsupported block")
    if images or parts or not out:
        out.append({"role": "user", "content": _parts(images + parts) if images or parts else ""})
    return out


def _assistant(i, content, calls):
    """An assistant message: its text, and its tool_use blocks as ``tool_calls``. Thinking blocks
    from an earlier Claude answer are left out (chatport does not think aloud)."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, tool_calls = [], []
    for j, block in enumerate(_blocks(content, f"messages.{i}.content")):
        field, kind = f"messages.{i}.content.{j}", block.get("type")
        if kind == "text":
            texts.append(_text(block, field)["text"])
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"{field}.id must be a non-empty string", f"{field}.id")
            if not isinstance(name, str) or not canonical.TOOL_NAME.match(name):
                raise _bad(f"{field}.name must be 1-64 letters, digits, '_', '-' or '.'", f"{field}.name")
            if not isinstance(arguments, dict):
                raise _bad(f"{field}.input must be an object", f"{field}.input")
            tool_calls.append({"id": call_id, "type": "function",
                               "function": {"name": name, "arguments": json.dumps(arguments)}})
            calls.add(call_id)
        elif kind not in ("thinking", "redacted_thinking"):
            raise _bad(f"{field}: an assistant message's blocks may be text or tool_use, not {kind!r}", field,
                       "unsupported block")
    message = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _system(value):
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [{"role": "system", "content": value}]
    parts = []
    for j, block in enumerate(_blocks(value, "system")):
        if block.get("type") != "text":
            raise _bad(f"system.{j} must be a text block", f"system.{j}")
        parts.append(_text(block, f"system.{j}"))
    return [{"role": "system", "content": _parts(parts)}] if parts else []


def canonical_messages(data):
    """The request's ``system`` and ``messages`` as canonical messages. Raises BadRequest
    naming the Anthropic field."""
    out, calls = _system(data.get("system")), set()
    for i, message in enumerate(data["messages"]):
        if message["role"] == "user":
            out.extend(_user(i, message["content"], calls))
        else:
            out.append(_assistant(i, message["content"], calls))
    return out


def canonical_tools(data):
    """``(tools, tool_choice, parallel_tool_calls)`` in the canonical shape (None: not set)."""
    tools, out = data.get("tools"), []
    for i, tool in enumerate(tools or ()):
        field = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _bad(f"{field} must be an object", field)
        if tool.get("type") not in (None, "custom"):
            raise _bad(f"{field}: the server tool {tool.get('type')!r} is not supported; only client tools "
                       "({name, description, input_schema})", f"{field}.type", "unsupported tool")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not canonical.TOOL_NAME.match(name):
            raise _bad(f"{field}.name must be 1-64 letters, digits, '_', '-' or '.'", f"{field}.name")
        if not isinstance(schema, dict):
            raise _bad(f"{field}.input_schema must be a JSON Schema object", f"{field}.input_schema")
        function = {"name": name, "parameters": schema}
        for key in ("description", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    choice = data.get("tool_choice")
    if choice is None:
        return out or None, None, None
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise _bad("tool_choice.type must be auto, any, tool or none", "tool_choice.type")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise _bad("tool_choice.disable_parallel_tool_use must be a boolean", "tool_choice.disable_parallel_tool_use")
    if kind == "none":
        return out or None, "none", None
    if not out:
        if kind == "auto":  # auto without tools asks nothing
            return None, None, None
        raise _bad(f"tool_choice {kind!r} needs tools", "tool_choice", "no tools")
    parallel = False if disable else None
    if kind == "auto":
        return out, None, parallel  # auto is the default: not a field a model must support
    if kind == "any":
        return out, "required", parallel
    name = choice.get("name")
    if not isinstance(name, str):
        raise _bad("tool_choice of type tool needs the tool's name", "tool_choice.name")
    return out, {"type": "function", "function": {"name": name}}, parallel


def _output_config(value, options):
    """``output_config``: ``format`` (a JSON schema) as ``response_format``, ``effort`` as
    ``reasoning_effort``; anything else is refused."""
    if not value:
        return
    unknown = sorted(set(value) - {"format", "effort"})
    if unknown:
        raise _bad(f"output_config.{unknown[0]} is not supported", f"output_config.{unknown[0]}")
    fmt = value.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise _bad("output_config.format must be {'type': 'json_schema', 'schema': {...}}", "output_config.format")
        options["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}
    effort = value.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise _bad(f"output_config.effort must be one of {', '.join(EFFORTS)} here", "output_config.effort")
        options["reasoning_effort"] = effort


def _thinking(value):
    if value is not None and value.get("type") != "disabled":
        raise _bad("thinking is not supported: leave it out or send {'type': 'disabled'}", "thinking",
                   "not supported")


def request_options(data):
    """The turn's options: only those the request sets, so a text call stays a text turn."""
    options = {"max_tokens": data["max_tokens"], "stream": data["stream"]}
    if data.get("temperature") is not None:
        options["temperature"] = data["temperature"]
    stop = data.get("stop_sequences")
    if stop:
        if len(stop) > 4:
            raise _bad("at most 4 stop_sequences", "stop_sequences", "too many")
        options["stop"] = stop
    user = (data.get("metadata") or {}).get("user_id")
    if user:
        options["user"] = user
    _thinking(data.get("thinking"))
    tools, choice, parallel = canonical_tools(data)
    for name, value in (("tools", tools), ("tool_choice", choice), ("parallel_tool_calls", parallel),
                        ("top_p", data.get("top_p"))):
        if value is not None:
            options[name] = value
    _output_config(data.get("output_config"), options)
    passthrough = {k: v for k, v in data.items() if k not in MODELLED and v is not None}
    if data.get("top_k") is not None:
        passthrough["top_k"] = data["top_k"]
    if passthrough:  # for OpenAI-compatible servers; a provider that cannot take them refuses
        options["passthrough"] = passthrough
    return options


# ---------------------------------------------------------------- replies


def message_id(turn_message_id):
    return "msg_" + turn_message_id.replace("-", "")


def stop_reason(finish_reason, called):
    """Anthropic's ``stop_reason`` for the engine's finish reason (``called``: the answer has
    tool calls, which some OpenAI-compatible servers end with ``stop``: clients loop on
    ``tool_use``). A turn cut by its time limit reads ``max_tokens`` (cut short). Providers do
    not say which stop sequence matched, so a stop is ``end_turn``."""
    if called and finish_reason in ("stop", "tool_calls"):
        return "tool_use"
    return {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
            "stopped": "max_tokens"}.get(finish_reason, "end_turn")


def usage_body(usage):
    """Anthropic counts ``input_tokens`` besides those read from a cache."""
    body = {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "output_tokens": usage.completion_tokens}
    if usage.cached_tokens:
        body["cache_read_input_tokens"] = usage.cached_tokens
    return body


def _input(arguments):
    """A tool call's arguments (JSON text) as a tool_use block's ``input`` object."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("a tool call's arguments are not a JSON object: %.200r", arguments)
        return {}
    return value


def message_body(done, model):
    content = [{"type": "text", "text": done.content}] if done.content else []
    for call in done.tool_calls or ():
        content.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                        "input": _input(call["function"]["arguments"])})
    return {"id": message_id(done.message_id), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(done.finish_reason, bool(done.tool_calls)),
            "stop_sequence": None,
            "usage": usage_body(done.usage)}


PING = sse({"type": "ping"}, event="ping")
_MARK = "\x00text\x00"  # stands for the text while a text delta's frame is built once per block
_encode = json.JSONEncoder(separators=(",", ":")).encode  # what sse() does to a str inside a dict


def _frame(data):
    return sse(data, event=data["type"])


def message_stream(events, model, prompt, rid, *, on_finish=None):
    """Render turn events as Anthropic's stream: ``message_start``, ``ping``, per content block
    ``content_block_start`` / ``content_block_delta`` (``text_delta``, ``input_json_delta``) /
    ``content_block_stop``, then ``message_delta`` (stop reason, usage) and ``message_stop``; a
    heartbeat is a ``ping``, a failure an ``error`` event. ``prompt`` (the request's messages)
    gives ``message_start`` its estimated input tokens; ``message_delta`` has the counted ones.
    ``rid`` is the request's id, for an error event (the stream runs outside the request).

    ``on_finish(usage_or_None, error_or_None)`` runs at the end, also when the client left.
    """
    usage, error = None, None
    block = -1  # the index of the last content block started
    is_open = False  # whether that block still waits for its content_block_stop
    text_frame = None  # (head, tail) of the open text block's delta frame: only the text is encoded
    tool_blocks = {}  # a tool call's index (the provider's) -> its content block's index

    def start(content_block):
        nonlocal block, is_open, text_frame
        out = _frame({"type": "content_block_stop", "index": block}) if is_open else ""
        block, is_open, text_frame = block + 1, True, None
        return out + _frame({"type": "content_block_start", "index": block, "content_block": content_block})

    def text(value):
        nonlocal text_frame
        out = ""
        if text_frame is None:
            out = start({"type": "text", "text": ""})
            head, _, tail = _frame({"type": "content_block_delta", "index": block,
                                    "delta": {"type": "text_delta", "text": _MARK}}).partition(_encode(_MARK))
            text_frame = (head, tail)
        return out + text_frame[0] + _encode(value) + text_frame[1]

    try:
        for event in events:
            if isinstance(event, Delta):
                if event.tool_calls is None and event.index == 0:  # text: the usual delta
                    if event.text:
                        yield text(event.text)
                    continue
                if event.index != 0:  # one answer in this dialect (no n)
                    continue
                out = [text(event.text)] if event.text else []
                for fragment in event.tool_calls:
                    call = fragment.get("index", 0)
                    if call not in tool_blocks:
                        out.append(start({"type": "tool_use", "id": fragment.get("id") or f"toolu_{new_id()[-12:]}",
                                          "name": fragment.get("name") or "", "input": {}}))
                        tool_blocks[call] = block
                    if fragment.get("arguments"):
                        out.append(_frame({"type": "content_block_delta", "index": tool_blocks[call],
                                           "delta": {"type": "input_json_delta",
                                                     "partial_json": fragment["arguments"]}}))
                yield "".join(out)
            elif isinstance(event, Start):
                estimate = sum(message_tokens(m) for m in prompt)
                yield _frame({"type": "message_start", "message": {
                    "id": message_id(event.assistant_message_id), "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": estimate, "output_tokens": 0}}}) + PING
            elif isinstance(event, Heartbeat):
                yield PING
            elif isinstance(event, Done):  # the last frames go out in one write
                usage = event.usage
                last = _frame({"type": "content_block_stop", "index": block}) if is_open else ""
                yield (last + _frame({"type": "message_delta",
                                      "delta": {"stop_reason": stop_reason(event.finish_reason,
                                                                           bool(tool_blocks)),
                                                "stop_sequence": None},
                                      "usage": usage_body(usage)})
                       + _frame({"type": "message_stop"}))
            elif isinstance(event, Error):
                error = event.error
                yield sse(error_body(error, rid), event="error")
    finally:
        if on_finish:
            on_finish(usage, error)


# ---------------------------------------------------------------- endpoints



@blp.route("/messages", methods=["POST"])
@blp.arguments(MessagesRequest)
@blp.response(200)
@blp.alt_response(200, description="Anthropic's stream events when stream is true",
                  content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
def create_message(data):
    """Create a message (Anthropic Messages API; streaming with its typed events)"""
    bot, model_name = model_or_bot(data["model"])
    if data["messages"][-1]["role"] == "assistant":
        raise _bad("the last message must be a user message (continuing an assistant message is not supported)",
                   "messages", "last message is not a user message")
    messages, options = canonical_messages(data), request_options(data)
    turn = chat.prepare_turn(registry=registry(), config=current_app.config, bot=bot, model=model_name,
                             messages=messages, options=options, persist=False)
    meter = metering.start_turn(turn)
    if data["stream"]:
        events = turn.events(heartbeat=current_app.config["SSE_HEARTBEAT"])
        finish = metering.stream_finish(turn, events)
        return stream_response(message_stream(events, data["model"], turn.request.messages, request_id(),
                                              on_finish=finish))
    done = turn.run()
    meter.add_tokens(done.usage, turn.model.name)
    return message_body(done, data["model"])


@blp.route("/messages/count_tokens", methods=["POST"])
@blp.arguments(CountTokensRequest)
@blp.response(200)
def count_tokens(data):
    """Count a request's input tokens (an estimate: about 4 characters a token; no model is called)"""
    config = current_app.config
    bot, model_name = model_or_bot(data["model"])
    if bot is not None and not bot.enabled:
        raise NotFound(f"Bot {bot.id} is disabled")
    registry().get(model_name or bot.model)
    _thinking(data.get("thinking"))
    messages = canonical.check_messages(canonical_messages(data), config, last=("user", "tool", "assistant"))
    tools, choice, _ = canonical_tools(data)
    tools, _ = canonical.check_tools(tools, choice, config)
    if bot is not None:  # as a turn: the bot's instructions instead of the client's system prompt
        messages = [m for m in messages if m["role"] not in ("system", "developer")]
        messages.insert(0, {"role": "system", "content": chat.system_prompt(bot, [])})
    tokens = sum(message_tokens(m) for m in messages)
    if tools:
        tokens += estimate_tokens(json.dumps(tools, separators=(",", ":")))
    return {"input_tokens": tokens}

"""The anthropic plugin's translation between chatport's request/reply model and the Messages API.

Requests (``params``): system and developer messages become the ``system`` parameter;
``tool`` messages become ``tool_result`` blocks of a user message and assistant
``tool_calls`` ``tool_use`` blocks after the assistant's text; consecutive messages of one
role are merged into one (the API requires user and assistant to alternate); image parts
become image blocks (a ``data:`` URL a base64 source, an http(s) URL a URL source). OpenAI
function tools become tools with an ``input_schema``; ``tool_choice`` ``auto``/``none``/
``required``/named becomes ``auto``/``none``/``any``/``tool`` (``none`` keeps the tools in
the request, as OpenAI's does: the model sees them and calls none), ``parallel_tool_calls=
false`` its ``disable_parallel_tool_use``; a request without tools whose history has tool
calls declares the tools called, with ``tool_choice`` ``none`` (``history_tools``). A
``response_format`` (``json_schema``, ``json_object``) is a tool the model is made to call
(``response_tool_param``), whose input is the reply's text.

Replies (``reply_deltas``, ``StreamState``): text blocks are text, ``tool_use`` blocks
tool-call fragments counted from 0 (the response tool's input: text), ``stop_reason`` the
finish reason. Usage: the API's ``input_tokens`` leaves out the prompt tokens read from and
written to the prompt cache; chatport's ``prompt_tokens`` (like OpenAI's) counts every
prompt token, so it is the sum of the three, and ``cached_tokens`` the part read from the
cache.
"""
import json

from app.providers import (
    Chunk,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderRateLimited,
    ProviderUnavailable,
    content_text,
    usage_or_estimate,
)

# stop_reason → finish_reason. ``pause_turn`` (a server tool's long turn paused) ends the reply.
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
          "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
# Error event types (sent after HTTP 200) → the status they stand for.
EVENT_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
                "api_error": 500, "overloaded_error": 529}
EMPTY_SCHEMA = {"type": "object", "properties": {}}
RESPONSE_TOOL_DESCRIPTION = "Give your answer as this tool's input: the input is the reply, in the required shape."
HISTORY_TOOL_DESCRIPTION = "A tool called earlier in this conversation, not offered now."


def params(request, model_id, max_tokens):
    """The Messages API parameters for ``request`` (a ``ChatRequest``), and the name of the
    response tool standing for its ``response_format`` (None without one)."""
    system, messages = translate_messages(request.messages)
    out = {"model": model_id, "messages": messages, "max_tokens": request.max_tokens or max_tokens}
    if system:
        out["system"] = system
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    if request.stop:
        out["stop_sequences"] = list(request.stop)
    if request.user:
        out["metadata"] = {"user_id": request.user}
    response_tool = None
    if not request.tools and (request.tool_choice == "required" or isinstance(request.tool_choice, dict)):
        raise ProviderBadRequest("anthropic: tool_choice names a tool, or requires one, but no tools are given")
    if request.tools or request.response_format:
        tools = [tool_param(t) for t in request.tools or ()]
        choice = tool_choice_param(request.tool_choice, request.parallel_tool_calls) if tools else None
        response_tool = response_tool_param(request.response_format, {t["name"] for t in tools})
        if response_tool:
            choice = forced_choice(choice if tools else {"type": "none"}, response_tool["name"],
                                   request.parallel_tool_calls)
            tools.append(response_tool)
        if tools:
            out["tools"] = tools
        if choice:
            out["tool_choice"] = choice
    if "tools" not in out:
        called = history_tools(messages)
        if called:  # the API refuses tool_use/tool_result blocks in a request without tools
            out["tools"], out["tool_choice"] = called, {"type": "none"}
    return out, response_tool and response_tool["name"]


def history_tools(messages):
    """Tools for the names the ``tool_use`` blocks of ``messages`` (Anthropic's) call, in order:
    declared with ``tool_choice`` ``none`` when a request offers no tools but its history has
    tool calls (OpenAI's API takes that; Anthropic's wants tools defined), so the model reads the
    history and may call none, as without tools."""
    names = []
    for message in messages:
        if message["role"] == "assistant" and isinstance(message["content"], list):
            for block in message["content"]:
                if block["type"] == "tool_use" and block["name"] not in names:
                    names.append(block["name"])
    return [{"name": name, "description": HISTORY_TOOL_DESCRIPTION, "input_schema": EMPTY_SCHEMA} for name in names]


def translate_messages(messages):
    """``(system text, Anthropic messages)`` for canonical (OpenAI-shaped) messages."""
    system, out = [], []
    for message in messages:
        role = message["role"]
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "tool":
            role, content = "user", [tool_result(message)]
        elif role == "assistant" and message.get("tool_calls"):
            content = blocks(message.get("content")) + [tool_use(c) for c in message["tool_calls"]]
        elif isinstance(message.get("content"), str):
            content = message["content"]  # a plain text message goes as it is
        else:
            content = blocks(message.get("content"))
        if content == []:
            continue  # nothing to say (the API refuses an empty message)
        if out and out[-1]["role"] == role:
            merge(out[-1], content)
        else:
            out.append({"role": role, "content": content})
    return "\n\n".join(system), out


def merge(previous, content):
    """Append ``content`` to the message before it, of the same role. In a user message the
    ``tool_result`` blocks go first (the API wants them right after the assistant's calls)."""
    merged = as_blocks(previous["content"]) + as_blocks(content)
    if previous["role"] == "user":
        merged.sort(key=lambda block: block["type"] != "tool_result")  # stable: order kept otherwise
    previous["content"] = merged


def as_blocks(content):
    return ([{"type": "text", "text": content}] if content else []) if isinstance(content, str) else content


def blocks(content):
    """Content blocks for an OpenAI ``content``: None, a string or a list of parts. Empty text
    is left out (the API refuses empty text blocks)."""
    if not content:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    out = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                out.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            out.append(image_block(part.get("image_url") or {}))
        else:  # Model.check refuses these first; this is for a caller that did not ask it
            raise ProviderBadRequest(f"anthropic: content parts of type {kind!r} are not supported")
    return out


def image_block(image):
    """An image block for an ``image_url`` part: base64 from a data URL, else a URL source.
    (``detail`` has no equivalent: Anthropic sizes images itself.)"""
    url = image.get("url") or ""
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, *options = header.split(";")
        if not comma or "base64" not in options:
            raise ProviderBadRequest("anthropic: an image data URL must be base64 (data:<type>;base64,...)")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise ProviderBadRequest("anthropic: an image URL must be http(s) or a data URL")


def tool_use(call):
    """A ``tool_use`` block for an assistant's OpenAI tool call (its arguments: a JSON object)."""
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ProviderBadRequest(f"anthropic: the arguments of tool call {call.get('id')!r} are not a JSON object")
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}


def tool_result(message):
    """A ``tool_result`` block for a ``tool`` message (text, or text and image blocks)."""
    block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    content = message.get("content")
    content = content if isinstance(content, str) else blocks(content)
    if content:
        block["content"] = content
    return block


def tool_param(tool):
    """An Anthropic tool for an OpenAI function tool."""
    if tool.get("type", "function") != "function":
        raise ProviderBadRequest(f"anthropic: tools of type {tool.get('type')!r} are not supported")
    function = tool.get("function") or {}
    out = {"name": function.get("name"), "input_schema": function.get("parameters") or EMPTY_SCHEMA}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def tool_choice_param(choice, parallel):
    """Anthropic's ``tool_choice`` for OpenAI's (None when neither it nor ``parallel_tool_calls``
    asks for anything but the default)."""
    if choice == "none":
        return {"type": "none"}  # the tools stay in the prompt; none may be called
    if choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict):
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif choice == "auto" or (choice is None and parallel is False):
        out = {"type": "auto"}
    elif choice is None:
        return None
    else:
        raise ProviderBadRequest(f"anthropic: tool_choice {choice!r} is not supported")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def response_tool_param(response_format, taken):
    """The tool standing for a ``json_schema`` / ``json_object`` response format (None for
    text), named after the schema and not after any tool in ``taken``."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        name, schema = spec.get("name") or "json_response", spec.get("schema") or {"type": "object"}
        description = spec.get("description") or RESPONSE_TOOL_DESCRIPTION
    elif kind == "json_object":
        name, schema, description = "json_response", {"type": "object"}, RESPONSE_TOOL_DESCRIPTION
    else:
        raise ProviderBadRequest(f"anthropic: response_format {kind!r} is not supported")
    while name in taken:
        name += "_"
    return {"name": name, "description": description, "input_schema": schema}


def forced_choice(choice, name, parallel):
    """The ``tool_choice`` with a response tool: that tool, unless the caller's tools may be
    called too (``auto``, the default, or ``required``: any tool, the answer being one of
    them; named: that one). ``choice`` is the caller's (``none`` when it has no tools)."""
    if choice is not None and choice["type"] == "none":
        out = {"type": "tool", "name": name}
    elif choice is None or choice["type"] in ("auto", "any"):
        out = {"type": "any"}
    else:
        out = dict(choice)
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def finish_reason(stop_reason, tool_calls):
    """chatport's finish reason for a ``stop_reason``; a reply whose only tool call was the
    response tool's ends with ``stop``."""
    reason = FINISH.get(stop_reason, "stop")
    return "stop" if reason == "tool_calls" and not tool_calls else reason


def usage(raw, request, text):
    """The Usage of an API ``usage`` object (a dict), or an estimate when it reports none."""
    raw = raw or {}
    cached = raw.get("cache_read_input_tokens") or 0
    prompt = (raw.get("input_tokens") or 0) + cached + (raw.get("cache_creation_input_tokens") or 0)
    reasoning = (raw.get("output_tokens_details") or {}).get("thinking_tokens") or 0
    return usage_or_estimate(prompt, raw.get("output_tokens"), request, text, cached_tokens=cached,
                             reasoning_tokens=reasoning)


def reply_deltas(message, request, response_tool):
    """The deltas of a whole (non-streamed) reply, a ``message`` dict: its text (one ``str``),
    its tool calls (one Chunk), a Chunk with the finish reason unless it is ``stop``, the Usage."""
    texts, calls = [], []
    for block in message["content"]:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = json.dumps(block["input"])
            if block["name"] == response_tool:
                texts.append(arguments)
            else:
                calls.append({"index": len(calls), "id": block["id"], "name": block["name"],
                              "arguments": arguments})
    text = "".join(texts)
    if text:
        yield text
    if calls:
        yield Chunk(tool_calls=calls)
    reason = finish_reason(message.get("stop_reason"), calls)
    if reason != "stop":
        yield Chunk(finish_reason=reason)
    yield usage(message.get("usage"), request,
                text + "".join(c["name"] + c["arguments"] for c in calls))


class StreamState:
    """What a stream's events said so far: usage, stop reason, whether it finished; and for a
    stream with tools, its content blocks (``on_event`` turns each event into deltas)."""

    def __init__(self, response_tool=None):
        self.usage = {}
        self.stop_reason = None
        self.finished = False
        self.response_tool = response_tool
        self.blocks = {}  # content block index → tool call index, or "text" for the response tool
        self.argued = set()  # content blocks whose input got a fragment
        self.calls = 0
        self.estimate = []  # the tool calls' text, for a usage estimate

    def on_usage(self, raw):
        self.usage.update((k, v) for k, v in (raw or {}).items() if v is not None)

    def on_event(self, event):
        """The deltas (a str, a Chunk, or None) of one parsed event of a stream with tools."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "input_json_delta":
                piece = delta.get("partial_json") or ""
                target = self.blocks.get(event["index"])
                if not piece or target is None:
                    return None
                self.argued.add(event["index"])
                self.estimate.append(piece)
                if target == "text":
                    return piece
                return Chunk(tool_calls=[{"index": target, "arguments": piece}])
            return delta.get("text")
        if kind == "content_block_start":
            block = event["content_block"]
            if block.get("type") == "tool_use":
                if block.get("name") == self.response_tool:
                    self.blocks[event["index"]] = "text"
                    return None
                self.blocks[event["index"]] = index = self.calls
                self.calls += 1
                self.estimate.append(block.get("name") or "")
                return Chunk(tool_calls=[{"index": index, "id": block.get("id"), "name": block.get("name"),
                                          "arguments": ""}])
            return block.get("text") or None
        if kind == "content_block_stop":
            target = self.blocks.get(event.get("index"))
            if target is not None and event["index"] not in self.argued:  # no input: an empty object
                self.argued.add(event["index"])
                return "{}" if target == "text" else Chunk(tool_calls=[{"index": target, "arguments": "{}"}])
            return None
        return self.on_meta(event)

    def on_meta(self, event):
        """Handle an event that carries no content (usage, stop reason, end, error)."""
        kind = event.get("type")
        if kind == "message_start":
            self.on_usage(event["message"].get("usage"))
        elif kind == "message_delta":
            self.on_usage(event.get("usage"))
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            raise stream_error(event.get("error") or {})
        return None

    def end(self, request, text):
        """The deltas after the last event: a finish reason that is not ``stop``, the Usage."""
        reason = finish_reason(self.stop_reason, self.calls)
        if reason != "stop":
            yield Chunk(finish_reason=reason)
        yield usage(self.usage, request, text + "".join(self.estimate))


def batched(batches, on_event):
    """The deltas of a stream with tools, from ``sse_batches``: per read, adjacent text pieces
    joined into one ``str`` and adjacent argument fragments of one call into one Chunk. If
    ``on_event`` raises, what came before it in the same read is passed on first."""
    for batch in batches:
        out, failure = [], None
        try:
            for data in batch:
                delta = on_event(json.loads(data))
                if delta is None:
                    continue
                last = out[-1] if out else None
                if isinstance(delta, str):
                    if isinstance(last, str):
                        out[-1] = last + delta
                        continue
                elif isinstance(last, Chunk) and _same_call(last, delta):
                    last.tool_calls[0]["arguments"] += delta.tool_calls[0]["arguments"]
                    continue
                out.append(delta)
        except Exception as exc:  # noqa: BLE001 - raised below, after the deltas before it
            failure = exc
        yield from out
        if failure is not None:
            raise failure


def _same_call(last, delta):
    """Whether ``delta`` is an argument fragment of the one call ``last`` is a fragment of."""
    if not (last.tool_calls and delta.tool_calls) or len(last.tool_calls) != 1 or "id" in delta.tool_calls[0]:
        return False
    return last.tool_calls[0]["index"] == delta.tool_calls[0]["index"]


def stream_error(error):
    """The Provider* error for an ``error`` event sent after HTTP 200."""
    status = EVENT_STATUS.get(error.get("type"), 500)
    message = f"anthropic: {error.get('type', 'error')}: {error.get('message', '')}"
    if status in (401, 403):
        return ProviderAuthError(f"anthropic rejected chatport's credentials ({error.get('type')})")
    if status == 429:
        return ProviderRateLimited(message)
    if 400 <= status < 500:
        return ProviderBadRequest(message)
    return ProviderUnavailable(message)

"""A fake Anthropic Messages server speaking the real wire format.

``POST /v1/messages`` answers JSON (``type: message``) or, with
``"stream": true``, SSE events ``message_start`` (input usage),
``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``;
``input_json_delta`` for a ``tool_use`` block), ``content_block_stop``,
``message_delta`` (stop reason, output usage), ``message_stop``. Errors use
Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``;
``Reply.error_event`` sends an ``error`` SSE event after HTTP 200.
``max_tokens`` truncates the reply (stop_reason ``max_tokens``);
``stop_sequences`` are recorded only.

Tools: ``Reply.tool_calls`` become ``tool_use`` blocks after the text block
(if ``chunks`` gives one; stop_reason ``tool_use``), streamed as
``content_block_start`` then the input JSON in ``input_json_delta`` fragments
(an explicit ``"fragments"`` list of a call, else pieces of 8 characters). A
``tool_choice`` forcing one tool with no ``tool_calls`` scripted is answered
with a call of it, its input the reply's text when that is a JSON object; a
forced call (``tool``, ``any``) comes without text, as the API's does.
``Reply.finish_reason`` is the stop_reason to send instead of the worked-out
one. ``Reply.cached_tokens`` are reported as ``cache_read_input_tokens`` (and
left out of ``input_tokens``, as the API does).

The request is checked as the API checks it (``problem``): user and assistant
alternating, well-formed content blocks (text not empty, image sources,
``tool_use`` inputs objects), every ``tool_use`` answered by a ``tool_result``
in the next message and every ``tool_result`` answering one, ``tool_use`` and
``tool_result`` blocks only in a request with ``tools``, ``tool_choice``
only with ``tools`` and naming one of them; a request that fails is a 400
``invalid_request_error``. ``FakeAnthropic.blocks()`` lists the content blocks
received, for tests to check a translation.

Run standalone: ``python -m tests.fakes anthropic --port 9001``.
"""
import json
import re
import time

from .base import FakeUpstream, Reply

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FRAGMENT = 8  # characters of a streamed tool input per input_json_delta


class FakeAnthropic(FakeUpstream):
    """Fake Anthropic upstream. Give ``url`` (== ``base_url``) to the SDK."""

    prefix = ""

    def respond(self, h, rec, reply):
        if self.api_key and rec.headers.get("x-api-key") != self.api_key:
            reply = Reply(status=401, error_message="invalid x-api-key")
        if reply.status >= 400:
            return self._error(h, reply)
        path = rec.path.split("?")[0]
        if rec.method != "POST" or path != "/v1/messages":
            return self._error(h, Reply(status=404, error_message=f"Unknown path {path}"))
        body = rec.body or {}
        if reply.raw is not None:
            h.send_raw(reply.raw, bool(body.get("stream")))
            return True
        wrong = problem(body)
        if wrong:
            return self._error(h, Reply(status=400, error_message=wrong))
        calls = tool_calls(reply, body)
        forced = (body.get("tool_choice") or {}).get("type") in ("tool", "any")  # no text: a call at once
        deltas = [] if forced or calls and reply.chunks is None else reply.deltas()
        stop_reason = "tool_use" if calls else "end_turn"
        if body.get("max_tokens") and len(deltas) > body["max_tokens"]:
            deltas, stop_reason = deltas[:body["max_tokens"]], "max_tokens"
        stop_reason = reply.finish_reason or stop_reason
        output = reply.completion_tokens if reply.completion_tokens is not None else len(deltas) + len(calls)
        model = body.get("model", "claude-3-5-haiku-latest")
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                   "stop_sequence": None}
        if body.get("stream"):
            return self._stream(h, reply, message, deltas, calls, stop_reason, output)
        content = [{"type": "text", "text": "".join(deltas)}] if deltas or not calls else []
        content += [{"type": "tool_use", "id": c["id"], "name": c["name"], "input": json.loads(c["json"])}
                    for c in calls]
        h.send_json(200, {**message, "content": content, "stop_reason": stop_reason,
                          "usage": {**input_usage(reply), "output_tokens": output if reply.usage else 0}},
                    reply.headers)
        return True

    def blocks(self, kind=None, rec=None):
        """The content blocks of the messages of ``rec`` (default: the last request), a text
        content as a text block, in order; only those of type ``kind`` if given."""
        rec = rec or self.last
        out = []
        for message in (rec.body or {}).get("messages") or ():
            content = message.get("content")
            for block in [{"type": "text", "text": content}] if isinstance(content, str) else content or ():
                if kind is None or block.get("type") == kind:
                    out.append(block)
        return out

    def _stream(self, h, reply, message, deltas, calls, stop_reason, output):
        def event(name, payload):
            h.sse(json.dumps({"type": name, **payload}), event=name)

        h.start_sse(reply.headers)
        start_usage = {**input_usage(reply), "output_tokens": 1}
        event("message_start", {"message": {**message, "content": [], "stop_reason": None,
                                            "usage": start_usage}})
        text_block = bool(deltas) or not calls
        if text_block:
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        event("ping", {})
        for i, text in enumerate(deltas):
            if reply.error_event is not None and i >= reply.error_event_after:
                break
            if reply.break_after is not None and i >= reply.break_after:
                h.drop_connection()
                return False
            if reply.hang and reply.hang_after is not None and i >= reply.hang_after:
                h.sleep(reply.hang)
                h.drop_connection()
                return False
            if reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
        if reply.error_event is not None:
            event("error", {"error": {"type": reply.error_event.get("type", "overloaded_error"),
                                      "message": reply.error_event.get("message", "Overloaded")}})
            h.end_sse()
            return True
        if text_block:
            event("content_block_stop", {"index": 0})
        for index, call in enumerate(calls, start=int(text_block)):
            event("content_block_start", {"index": index, "content_block": {
                "type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}})
            for piece in ["", *call["fragments"]]:  # the API's first input_json_delta is empty
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                event("content_block_delta", {"index": index,
                                              "delta": {"type": "input_json_delta", "partial_json": piece}})
            event("content_block_stop", {"index": index})
        event("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                "usage": {"output_tokens": output if reply.usage else 0}})
        event("message_stop", {})
        h.end_sse()
        return True

    def _error(self, h, reply):
        headers = dict(reply.headers)
        if reply.retry_after is not None:
            headers["Retry-After"] = str(reply.retry_after)
        etype = reply.error_type or ERROR_TYPES.get(reply.status, "api_error")
        message = reply.error_message or f"Fake upstream error {reply.status}"
        h.send_json(reply.status, {"type": "error", "error": {"type": etype, "message": message}},
                    headers)
        return True



def input_usage(reply):
    """The input part of a reply's ``usage``: the cached tokens apart, as the API reports them."""
    if not reply.usage:
        return {"input_tokens": 0}
    usage = {"input_tokens": reply.prompt_tokens - reply.cached_tokens}
    if reply.cached_tokens:
        usage["cache_read_input_tokens"] = reply.cached_tokens
    return usage


def tool_calls(reply, body):
    """The reply's tool calls as ``{"id", "name", "json", "fragments"}``: those scripted, else,
    when ``tool_choice`` forces a tool, one call of it (its input the reply's text if that is a
    JSON object, else empty)."""
    scripted = reply.tool_calls
    if scripted is None:
        choice = body.get("tool_choice") or {}
        if choice.get("type") not in ("tool", "any"):
            return []
        name = choice.get("name") or body["tools"][0]["name"]
        try:
            value = json.loads(reply.text)
        except ValueError:
            value = None
        scripted = [{"name": name, "arguments": value if isinstance(value, dict) else {}}]
    calls = []
    for i, call in enumerate(scripted):
        arguments = call.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        fragments = call.get("fragments") or [text[j:j + FRAGMENT] for j in range(0, len(text), FRAGMENT)]
        calls.append({"id": call.get("id") or f"toolu_fake{i}", "name": call["name"], "json": text,
                      "fragments": fragments})
    return calls


def problem(body):
    """What the real API would refuse in a request ``body`` (a message), or None."""
    tools = body.get("tools")
    names = set()
    for i, tool in enumerate(tools or ()):
        if not TOOL_NAME.match(str(tool.get("name"))):
            return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if (tool.get("input_schema") or {}).get("type") != "object":
            return f"tools.{i}.input_schema.type: Input should be 'object'"
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            return "tool_choice: tool_choice may only be specified while providing tools."
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            return f"tool_choice.type: unknown tool choice {choice.get('type')!r}"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return f"tool_choice.name: no tool named {choice.get('name')!r}"
        if choice["type"] == "none" and "disable_parallel_tool_use" in choice:
            return "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted"
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or any(b.get("type") != "text" for b in system):
            return "system: Input should be a string or a list of text blocks"
    pending = set()  # the tool_use ids of the assistant message before
    for i, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and body["messages"][i - 1].get("role") == role:
            return f"messages.{i}: roles must alternate between 'user' and 'assistant'"
        content = message.get("content")
        blocks = [] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return f"messages.{i}.content: Input should be a string or a list of blocks"
        answered = set()
        for j, block in enumerate(blocks):
            wrong = block_problem(block, role)
            if wrong:
                return f"messages.{i}.content.{j}: {wrong}"
            if block["type"] == "tool_result":
                if block.get("tool_use_id") not in pending:
                    return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                            "blocks: each `tool_result` block must have a corresponding `tool_use` block "
                            "in the previous message.")
                if any(b["type"] != "tool_result" for b in blocks[:j]):
                    return f"messages.{i}.content.{j}: `tool_result` blocks must come first"
                answered.add(block["tool_use_id"])
        if pending and answered != pending:
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(sorted(pending - answered))}")
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"} if role == "assistant" else set()
        if not tools and any(b["type"] in ("tool_use", "tool_result") for b in blocks):
            return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return None


def block_problem(block, role):
    """What is wrong with one content block of a message of ``role``, or None."""
    kind = block.get("type")
    if kind == "text":
        return None if block.get("text") else "text content blocks must be non-empty"
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in IMAGE_TYPES or not source.get("data"):
                return "image.source.base64: a media_type of " + ", ".join(IMAGE_TYPES) + " and data are required"
        elif source.get("type") != "url" or not str(source.get("url", "")).startswith(("http://", "https://")):
            return "image.source: a base64 or url source is required"
        return None
    if kind == "tool_use":
        if role != "assistant":
            return "tool_use blocks are only allowed in assistant messages"
        if not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict):
            return "tool_use: id, name and an object input are required"
        return None
    if kind == "tool_result":
        if role != "user":
            return "tool_result blocks are only allowed in user messages"
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            return next(filter(None, (block_problem(b, role) for b in content)), None)
        return None
    return f"unknown content block type {kind!r}"

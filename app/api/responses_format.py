"""OpenAI's Responses API wire format: the request translated to the engine's canonical
messages and options, and response objects, input items and typed stream events rendered.

The openai SDK's ``openai.types.responses`` are the reference for every shape here.
"""
import json
import re
import time
from dataclasses import dataclass
from typing import Optional

from app.api.sse import HEARTBEAT_FRAME, sse
from app.errors import BadRequest
from app.services.events import Delta, Done, Error, Heartbeat, Start

# Top-level fields read, besides those the request schema declares. Fields that cannot change
# the answer are accepted and ignored; those naming features chatport does not have are refused,
# and so is any other field (400 ``unsupported_parameter``): nothing that changes the answer is
# dropped.
IGNORED = frozenset(("stream_options", "service_tier", "prompt_cache_key", "prompt_cache_retention",
                     "prompt_cache_options", "safety_identifier", "max_tool_calls"))
REFUSED = {"conversation": "the Conversations API", "prompt": "prompt templates",
           "context_management": "context management", "moderation": "moderation",
           "background": "background responses"}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
TOOL_CHOICES = ("auto", "none", "required")


def _bad(message, field_name, why="invalid", code=None):
    return BadRequest(message, fields={field_name: why}, code=code)


@dataclass
class Request:
    """A ``POST /v1/responses`` body translated.

    ``messages`` are canonical (``app.services.messages``); ``sources[k]`` is the input item
    index message ``k`` came from and ``call_sources[k]`` those of its tool calls (to name
    input items in errors); ``system`` is ``instructions``; ``options`` the engine's;
    ``params`` what the response object shows of the request."""

    messages: list
    sources: list
    call_sources: dict
    system: Optional[str]
    options: dict
    params: dict
    logprobs: bool = False
    store: bool = True
    stream: bool = False
    previous_response_id: Optional[str] = None
    user: Optional[str] = None


def parse_request(data, *, for_bot=False, lookup=None):
    """Translate a request body (the schema's load: declared fields checked, others kept).
    With ``for_bot`` the bot's instructions replace the request's: ``instructions`` and
    system or developer input messages are not used (as on ``/v1/chat/completions``).
    ``lookup(message ids)`` gives the canonical messages that ``item_reference`` items name.
    Raises BadRequest naming the field."""
    for name in data:
        if name in REFUSED and data[name] not in (None, False):
            raise _bad(f"{name} ({REFUSED[name]}) is not supported by chatport", name, "not supported",
                       "unsupported_parameter")
        if name not in KNOWN and name not in IGNORED and name not in REFUSED:
            raise _bad(f"Unknown parameter: {name!r}", name, "unknown parameter", "unsupported_parameter")
    messages, sources, call_sources = _input(_resolved(data.get("input"), lookup))
    system = data.get("instructions")
    if for_bot:
        kept = [k for k, m in enumerate(messages) if m["role"] not in ("system", "developer")]
        messages = [messages[k] for k in kept]
        call_sources = {new: call_sources[old] for new, old in enumerate(kept) if old in call_sources}
        sources = [sources[k] for k in kept]
        system = None
    elif system is not None and not system.strip():
        system = None
    tools, shown_tools = _tools(data.get("tools"))
    tool_choice = _tool_choice(data.get("tool_choice"))
    response_format, shown_format = _text_format(data.get("text"))
    reasoning = data.get("reasoning") or {}
    include = data.get("include") or []
    logprobs = LOGPROBS_INCLUDE in include
    options = {"stream": bool(data.get("stream"))}
    for name, value in (("temperature", data.get("temperature")), ("max_tokens", data.get("max_output_tokens")),
                        ("user", data.get("user")), ("top_p", data.get("top_p")),
                        ("reasoning_effort", reasoning.get("effort")), ("response_format", response_format)):
        if value is not None:
            options[name] = value
    if tools:  # tool_choice and parallel_tool_calls mean nothing without tools
        options["tools"] = tools
        if tool_choice is not None:
            options["tool_choice"] = tool_choice
        if data.get("parallel_tool_calls") is not None:
            options["parallel_tool_calls"] = data["parallel_tool_calls"]
    elif tool_choice not in (None, "auto", "none"):
        raise _bad("tool_choice needs tools", "tool_choice", "no tools")
    if logprobs:
        options["logprobs"] = True
        if data.get("top_logprobs"):
            options["top_logprobs"] = data["top_logprobs"]
    _check_metadata(data.get("metadata"))
    params = {"model": data["model"], "instructions": data.get("instructions"), "tools": shown_tools,
              "tool_choice": _shown_choice(data.get("tool_choice")),
              "parallel_tool_calls": data.get("parallel_tool_calls", True) is not False,
              "text": {"format": shown_format, "verbosity": "medium"},
              "temperature": data.get("temperature"), "top_p": data.get("top_p"),
              "max_output_tokens": data.get("max_output_tokens"),
              "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
              "metadata": data.get("metadata") or {}, "user": data.get("user"),
              "truncation": data.get("truncation") or "disabled", "top_logprobs": data.get("top_logprobs"),
              "store": data.get("store", True) is not False}
    return Request(messages, sources, call_sources, system, options, params, logprobs=logprobs,
                   store=params["store"], stream=bool(data.get("stream")),
                   previous_response_id=data.get("previous_response_id"), user=data.get("user"))


# The fields the request schema declares (app.api.openai_responses.ResponseCreate).
KNOWN = frozenset(("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
                   "temperature", "top_p", "max_output_tokens", "reasoning", "metadata", "user", "store",
                   "previous_response_id", "stream", "include", "top_logprobs", "truncation"))


def _check_metadata(metadata):
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in metadata.items())):
        raise _bad("metadata must map up to 16 keys (64 characters) to strings (512 characters)", "metadata")


# ---------------------------------------------------------------- input items


def _input(value):
    """``(canonical messages, sources, call_sources)`` of ``input``."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}], [0], {}
    if not isinstance(value, list) or not value:
        raise _bad("input must be a string or a non-empty list of input items", "input", "missing")
    messages, sources, call_sources = [], [], {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}] must be an object", f"input.{i}")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(i, item))
            sources.append(i)
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # the calls of one answer
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                sources.append(i)
            call_sources.setdefault(len(messages) - 1, []).append(i)
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": _call_output(i, item.get("output"))})
            sources.append(i)
        elif kind == "reasoning":
            continue  # a reasoning model's own notes, passed back: nothing a chat model reads
        else:
            raise _bad(f"input[{i}]: items of type {kind!r} are not supported (message, function_call, "
                       "function_call_output, item_reference)", f"input.{i}.type", "not supported")
    return messages, sources, call_sources


_ITEM_ID = re.compile(r"(msg|fc|fco)_([0-9a-f]{32})(?:_(\d+))?")


def _resolved(value, lookup):
    """``input`` with its ``item_reference`` items replaced by the items they name: a message
    (``msg_``: an input message, or an answer's text), a function call (``fc_``) or a function
    call output (``fco_``) of a stored response this key may see (the Vercel AI SDK refers to
    earlier answers so when ``store`` is on). Raises BadRequest for an id that names nothing."""
    if not isinstance(value, list) or not any(isinstance(i, dict) and i.get("type") == "item_reference"
                                              for i in value):
        return value
    wanted = {}
    for i, item in enumerate(value):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            match = _ITEM_ID.fullmatch(item.get("id") or "") if isinstance(item.get("id"), str) else None
            if match is None:
                raise _bad(f"input[{i}]: item_reference names no item of a stored response", f"input.{i}.id",
                           "not found")
            hexed = match.group(2)
            wanted[i] = (match.group(1), f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}",
                         int(match.group(3) or 0))
    found = lookup({message_id for _, message_id, _ in wanted.values()}) if lookup else {}
    out = []
    for i, item in enumerate(value):
        if i not in wanted:
            out.append(item)
            continue
        kind, message_id, n = wanted[i]
        item = _referenced(kind, found.get(message_id), n)
        if item is None:
            raise _bad(f"input[{i}]: item_reference {value[i]['id']!r} names no item of a stored response",
                       f"input.{i}.id", "not found")
        out.append(item)
    return out


def _referenced(kind, message, n):
    """The input item ``kind`` (msg, fc, fco) of a stored canonical ``message``, or None."""
    if message is None:
        return None
    role, content = message["role"], message.get("content")
    if kind == "fc":
        calls = message.get("tool_calls") or ()
        if n >= len(calls):
            return None
        call = calls[n]
        return {"type": "function_call", "call_id": call["id"], "name": call["function"]["name"],
                "arguments": call["function"]["arguments"]}
    if kind == "fco":
        if role != "tool":
            return None
        output = content if isinstance(content, str) else [
            {"type": "input_text", "text": p.get("text", "")} for p in content or () if p.get("type") == "text"]
        return {"type": "function_call_output", "call_id": message["tool_call_id"], "output": output}
    if role == "tool":
        return None
    if role == "assistant":  # the message item of an answer is its text (its calls are fc_ items)
        return {"role": "assistant", "content": content if isinstance(content, str) else "".join(
            p.get("text", "") for p in content or () if p.get("type") == "text")}
    return {"role": role, "content": content if isinstance(content, str) else [
        p for p in (_input_part(part) for part in content or ()) if p is not None]}


def _message(i, item):
    role, content = item.get("role"), item.get("content")
    if role not in ("user", "assistant", "system", "developer"):
        raise _bad(f"input[{i}].role must be user, assistant, system or developer", f"input.{i}.role")
    if role == "assistant":
        return {"role": "assistant", "content": _assistant_text(i, content)}
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"input[{i}].content must be a string or a list of content parts", f"input.{i}.content")
    return {"role": role, "content": [_part(i, j, part) for j, part in enumerate(content)]}


def _part(i, j, part):
    where = f"input[{i}].content[{j}]"
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_text":
        return {"type": "text", "text": part.get("text")}
    if kind == "input_image":
        if part.get("image_url") is None:
            raise _bad(f"{where}: images by file_id need OpenAI's Files API, which chatport does not have; "
                       "send image_url (an http(s) or data URL)", f"input.{i}.content.{j}.image_url", "missing")
        image = {"url": part["image_url"]}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url") is not None:
            raise _bad(f"{where}: files by URL are not supported; send file_data (a data URL)",
                       f"input.{i}.content.{j}.file_url", "not supported")
        return {"type": "file", "file": {k: part[k] for k in ("file_data", "file_id", "filename")
                                         if part.get(k) is not None}}
    raise _bad(f"{where}: parts may be input_text, input_image or input_file, not {kind!r}",
               f"input.{i}.content.{j}.type")


def _assistant_text(i, content):
    """An assistant message's text: a string, or output_text (and refusal) parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            text = part.get("refusal" if kind == "refusal" else "text") if kind else None
            if kind not in ("output_text", "refusal", "input_text") or not isinstance(text, str):
                raise _bad(f"input[{i}].content[{j}]: an assistant message's parts are output_text or refusal",
                           f"input.{i}.content.{j}")
            texts.append(text)
        return "".join(texts)
    raise _bad(f"input[{i}].content must be a string or a list of output_text parts", f"input.{i}.content")


def _call_output(i, output):
    """A function call's output: a string, or text parts (images and files are not supported)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        parts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") != "input_text" or not isinstance(part.get("text"), str):
                raise _bad(f"input[{i}].output[{j}]: a function call's output may hold input_text parts only",
                           f"input.{i}.output.{j}")
            parts.append({"type": "text", "text": part["text"]})
        return parts
    raise _bad(f"input[{i}].output must be a string or a list of input_text parts", f"input.{i}.output", "missing")


# The engine's option names that the Responses API calls otherwise.
ENGINE_FIELDS = {"max_tokens": "max_output_tokens", "reasoning_effort": "reasoning.effort", "logprobs": "include"}
_MESSAGES_FIELD = re.compile(r"messages\.(\d+)((?:\.[A-Za-z0-9_]+)*)")
_MESSAGES_TEXT = re.compile(r"messages\[(\d+)\]")


def input_error(exc, request):
    """``exc`` (the engine's BadRequest about ``messages.N...``, ``tools...`` or
    ``response_format...``) naming the request's fields instead."""
    if not isinstance(exc, BadRequest) or not exc.fields:
        return exc

    def field_of(name):
        if name == "messages":
            return "input"
        if name.startswith("tools.") or name.startswith("tool_choice"):
            return name.replace(".function.", ".")
        if name in ENGINE_FIELDS:
            return ENGINE_FIELDS[name]
        if name.startswith("response_format"):
            return "text.format" + name[len("response_format"):].replace(".json_schema", "")
        match = _MESSAGES_FIELD.fullmatch(name)
        if not match:
            return name
        k, rest = int(match.group(1)), match.group(2)
        if k >= len(request.sources):
            return "input"
        calls = re.match(r"\.tool_calls\.(\d+)(.*)", rest)
        if calls and k in request.call_sources and int(calls.group(1)) < len(request.call_sources[k]):
            item, tail = request.call_sources[k][int(calls.group(1))], calls.group(2)
            tail = {".id": ".call_id"}.get(tail, tail.replace(".function", ""))
            return f"input.{item}{tail}"
        rest = {".tool_call_id": ".call_id"}.get(rest, rest)
        if request.messages[k]["role"] == "tool":
            rest = rest.replace(".content", ".output")
        return f"input.{request.sources[k]}{rest}"

    def text_of(message):
        def one(match):
            k = int(match.group(1))
            return f"input[{request.sources[k]}]" if k < len(request.sources) else "input"
        for old, new in sorted(((n, field_of(n)) for n in exc.fields), key=lambda p: -len(p[0])):
            message = message.replace(old, new)
        return _MESSAGES_TEXT.sub(one, message).replace("tool_call_id", "call_id")

    return BadRequest(text_of(exc.message), code=exc.code,
                      fields={field_of(k): v for k, v in exc.fields.items()}, headers=exc.headers)


# ---------------------------------------------------------------- tools and formats


def _tools(tools):
    """``(canonical tools or None, the tools as the response shows them)``."""
    if tools in (None, []):
        return None, []
    if not isinstance(tools, list):
        raise _bad("tools must be a list of function tools", "tools")
    out, shown = [], []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise _bad(f"tools[{i}]: {kind!r} tools are not supported: chatport offers function tools only "
                       "({'type': 'function', 'name', 'description', 'parameters', 'strict'})", "tools",
                       "not supported", "unsupported_parameter")
        function = {"name": tool.get("name")}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        out.append({"type": "function", "function": function})
        shown.append({"type": "function", "name": tool.get("name"), "description": tool.get("description"),
                      "parameters": tool.get("parameters"), "strict": tool.get("strict")})
    return out, shown


def _tool_choice(value):
    if value is None or value in TOOL_CHOICES:
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        if not isinstance(value.get("name"), str):
            raise _bad("tool_choice {'type': 'function'} needs the function's name", "tool_choice")
        return {"type": "function", "function": {"name": value["name"]}}
    kind = value.get("type") if isinstance(value, dict) else value
    raise _bad(f"tool_choice must be auto, none, required or {{'type': 'function', 'name'}}, not {kind!r}",
               "tool_choice")


def _shown_choice(value):
    if isinstance(value, dict):
        return {"type": "function", "name": value.get("name")}
    return value or "auto"


def _text_format(text):
    """``(canonical response_format or None, the format as the response shows it)``."""
    if text is None:
        return None, {"type": "text"}
    if not isinstance(text, dict):
        raise _bad("text must be an object: {'format': {...}}", "text")
    if text.get("verbosity") not in (None, "medium"):
        raise _bad("text.verbosity is not supported by chatport (only the default, medium)", "text.verbosity",
                   "not supported", "unsupported_parameter")
    value = text.get("format")
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return None, {"type": "text"}
    if kind == "json_object":
        return {"type": "json_object"}, {"type": "json_object"}
    if kind != "json_schema":
        raise _bad("text.format.type must be text, json_object or json_schema", "text.format.type")
    spec = {k: value[k] for k in ("name", "schema", "strict", "description") if value.get(k) is not None}
    return {"type": "json_schema", "json_schema": spec}, {"type": "json_schema", **spec}


# ---------------------------------------------------------------- response objects


def hex_of(message_id):
    return message_id.replace("-", "")


def usage_body(prompt, completion, cached=0, reasoning=0):
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def _usage_of(usage):
    return usage_body(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens)


def message_item(message_id, text, status, logprobs=None, suffix=""):
    part = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return {"id": f"msg_{hex_of(message_id)}{suffix}", "type": "message", "status": status, "role": "assistant",
            "content": [part]}


def call_item(message_id, index, call, status):
    function = call["function"]
    return {"id": f"fc_{hex_of(message_id)}_{index}", "type": "function_call", "status": status,
            "arguments": function["arguments"], "call_id": call["id"], "name": function["name"]}


def output_items(message_id, content, tool_calls, status, logprobs=None):
    """An answer's output items: its message (unless it only called tools), then its calls."""
    items = []
    if content or not tool_calls:
        items.append(message_item(message_id, content or "", status, logprobs))
    for index, call in enumerate(tool_calls or ()):
        items.append(call_item(message_id, index, call, status))
    return items


@dataclass
class Shown:
    """What every rendering of one response shares."""

    message_id: str
    created_at: float
    params: dict
    previous_response_id: Optional[str] = None
    logprobs: bool = False


def response_body(shown, *, status, output, usage=None, error=None, incomplete=None, completed_at=None):
    """A ``response`` object (``openai.types.responses.Response``)."""
    p = shown.params
    return {"id": "resp_" + hex_of(shown.message_id), "object": "response", "created_at": int(shown.created_at),
            "status": status, "background": False, "completed_at": completed_at, "error": error,
            "incomplete_details": incomplete, "instructions": p.get("instructions"),
            "max_output_tokens": p.get("max_output_tokens"), "max_tool_calls": None, "model": p.get("model"),
            "output": output, "parallel_tool_calls": p.get("parallel_tool_calls", True),
            "previous_response_id": shown.previous_response_id,
            "reasoning": p.get("reasoning") or {"effort": None, "summary": None}, "service_tier": "default",
            "store": p.get("store", True), "temperature": p.get("temperature"),
            "text": p.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": p.get("tool_choice", "auto"), "tools": p.get("tools") or [],
            "top_logprobs": p.get("top_logprobs"), "top_p": p.get("top_p"),
            "truncation": p.get("truncation", "disabled"), "usage": usage, "user": p.get("user"),
            "metadata": p.get("metadata") or {}}


def _outcome(finish_reason, status):
    """``(response status, incomplete_details)`` of how an answer ended."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    if status != "complete" or finish_reason == "stopped":
        return "incomplete", {"reason": None}
    return "completed", None


def done_body(done, shown):
    """The response of a finished turn (a non-streamed ``POST``)."""
    status, incomplete = _outcome(done.finish_reason, done.status)
    item_status = "completed" if status == "completed" else "incomplete"
    logprobs = (done.choices[0].logprobs or []) if shown.logprobs and done.choices else None
    return response_body(shown, status=status, output=output_items(
        done.message_id, done.content, done.tool_calls, item_status, logprobs), usage=_usage_of(done.usage),
        incomplete=incomplete, completed_at=int(time.time()) if status == "completed" else None)


def stored_body(stored):
    """The response object of a stored response (``services.responses.Stored``)."""
    shown = Shown(stored.message_id, _epoch(stored.created_at), stored.params,
                  "resp_" + hex_of(stored.previous) if stored.previous else None)
    answer = stored.answer
    if answer is None:
        return response_body(shown, status="in_progress", output=[])
    usage = usage_body(answer.prompt_tokens, answer.completion_tokens)
    if answer.status == "error":
        return response_body(shown, status="failed", output=[], usage=usage,
                             error={"code": "server_error", "message": answer.error or "The model failed"})
    limit = stored.params.get("max_output_tokens")
    finish = "length" if limit and answer.completion_tokens >= limit else "stop"
    status, incomplete = _outcome(finish, answer.status)
    item_status = "completed" if status == "completed" else "incomplete"
    message = answer.message
    return response_body(shown, status=status, usage=usage, incomplete=incomplete,
                         completed_at=_epoch(answer.created_at) if status == "completed" else None,
                         output=output_items(stored.message_id, message.get("content") or "",
                                             message.get("tool_calls"), item_status))


def _epoch(moment):
    import calendar

    return calendar.timegm(moment.timetuple())


def input_items(stored):
    """The input items of a stored response, oldest first (each with an id for ``after``)."""
    items = []
    for message_id, message in stored.inputs:
        hexed, role = hex_of(message_id), message["role"]
        if role == "tool":
            content = message.get("content")
            output = content if isinstance(content, str) else [
                {"type": "input_text", "text": p.get("text", "")} for p in content or () if p.get("type") == "text"]
            items.append({"id": f"fco_{hexed}", "type": "function_call_output", "call_id": message["tool_call_id"],
                          "output": output, "status": "completed"})
            continue
        content = message.get("content")
        if role == "assistant":
            if content or not message.get("tool_calls"):
                text = content if isinstance(content, str) else "".join(
                    p.get("text", "") for p in content or () if p.get("type") == "text")
                items.append({"id": f"msg_{hexed}", "type": "message", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": text, "annotations": []}]})
            items.extend(call_item(message_id, i, call, "completed")
                         for i, call in enumerate(message.get("tool_calls") or ()))
            continue
        parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else [
            p for p in (_input_part(part) for part in content or ()) if p is not None]
        items.append({"id": f"msg_{hexed}", "type": "message", "role": role, "status": "completed",
                      "content": parts})
    return items


def _input_part(part):
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": part["text"]}
    if kind == "image_url":
        image = part["image_url"]
        return {"type": "input_image", "image_url": image["url"], "detail": image.get("detail", "auto"),
                "file_id": None}
    if kind == "file":
        return {"type": "input_file", **part["file"]}
    return None


# ---------------------------------------------------------------- streams

_encode = json.JSONEncoder(separators=(",", ":")).encode


class _Renderer:
    """The typed events of one streamed response, numbered in order."""

    def __init__(self, shown):
        self.shown = shown
        self.seq = 0
        self.items = []  # every output item so far, in order
        self.text = None  # the open message item: [item, output index, text pieces, logprobs, delta head]
        self.calls = {}  # provider call index -> [item, output index, argument pieces]
        self.open_calls = []  # provider call indexes of the calls not closed yet
        self.messages = 0  # message items opened (a second one only if text follows a call)

    def event(self, kind, **fields):
        frame = sse({"type": kind, "sequence_number": self.seq, **fields}, kind)
        self.seq += 1
        return frame

    def text_delta(self, text, logprobs=None):
        """Frames for a text delta: opening the message item first when needed. The frame of a
        plain delta is built from pieces fixed per item: only the text is encoded per delta."""
        out = ""
        if self.text is None:  # text after calls (rare) is a message item of its own
            out = self._close_calls("completed", None) + self._open_text()
        head = self.text[4]
        self.text[2].append(text)
        if logprobs:
            self.text[3].extend(logprobs)
            out += self.event("response.output_text.delta", item_id=self.text[0]["id"],
                              output_index=self.text[1], content_index=0, delta=text, logprobs=logprobs)
            return out
        out += f"{head[0]}{self.seq}{head[1]}{_encode(text)}{head[2]}"
        self.seq += 1
        return out

    def _open_text(self):
        self.messages += 1
        suffix = "" if self.messages == 1 else f"_{self.messages}"
        item = message_item(self.shown.message_id, "", "in_progress", suffix=suffix)
        item["content"] = []
        index = len(self.items)
        self.items.append(item)
        head = ('event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":',
                f',"item_id":"{item["id"]}","output_index":{index},"content_index":0,"delta":', ',"logprobs":[]}\n\n')
        self.text = [item, index, [], [], head]
        part = {"type": "output_text", "text": "", "annotations": []}
        return (self.event("response.output_item.added", output_index=index, item=dict(item, content=[])) +
                self.event("response.content_part.added", item_id=item["id"], output_index=index,
                           content_index=0, part=part))

    def _close_text(self, status):
        item, index, pieces, logprobs, _ = self.text
        self.text = None
        text = "".join(pieces)
        part = {"type": "output_text", "text": text, "annotations": []}
        if self.shown.logprobs:
            part["logprobs"] = logprobs
        item.update(status=status, content=[part])
        return (self.event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                           text=text, logprobs=logprobs) +
                self.event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                           part=part) +
                self.event("response.output_item.done", output_index=index, item=item))

    def call_fragments(self, fragments):
        out = ""
        for fragment in fragments:
            key = fragment.get("index", 0)
            call = self.calls.get(key)
            if call is None:  # a new call: the items before it are done (calls stream one by one)
                if self.text is not None:
                    out += self._close_text("completed")
                out += self._close_calls("completed", None)
                call_id = fragment.get("id") or f"call_{hex_of(self.shown.message_id)[:16]}{key}"
                item = {"id": f"fc_{hex_of(self.shown.message_id)}_{len(self.calls)}", "type": "function_call",
                        "status": "in_progress", "arguments": "", "call_id": call_id,
                        "name": fragment.get("name") or ""}
                call = self.calls[key] = [item, len(self.items), []]
                self.items.append(item)
                self.open_calls.append(key)
                out += self.event("response.output_item.added", output_index=call[1], item=dict(item))
            if fragment.get("name") and not call[0]["name"]:
                call[0]["name"] = fragment["name"]
            if fragment.get("arguments"):
                call[2].append(fragment["arguments"])
                if key not in self.open_calls:  # a late piece of a call already done: the final response has it
                    call[0]["arguments"] = "".join(call[2])
                    continue
                out += self.event("response.function_call_arguments.delta", item_id=call[0]["id"],
                                  output_index=call[1], delta=fragment["arguments"])
        return out

    def _close_calls(self, status, final_calls):
        """Close the open calls; with ``final_calls`` (the engine's, at the end) every call item
        takes its call's id and name from there (the engine names a call the provider left
        without an id)."""
        if final_calls:
            for n, key in enumerate(self.calls):
                if n < len(final_calls):
                    self.calls[key][0].update(call_id=final_calls[n]["id"], name=final_calls[n]["function"]["name"])
        out = ""
        for key in self.open_calls:
            item, index, pieces = self.calls[key]
            item.update(status=status, arguments="".join(pieces))
            out += (self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               name=item["name"], arguments=item["arguments"]) +
                    self.event("response.output_item.done", output_index=index, item=item))
        self.open_calls = []
        return out

    def finish(self, done):
        status, incomplete = _outcome(done.finish_reason, done.status)
        item_status = "completed" if status == "completed" else "incomplete"
        out = ""
        if not self.items:  # an empty answer is still one (empty) message
            out += self._open_text()
        if self.text is not None:
            out += self._close_text(item_status)
        out += self._close_calls(item_status, done.tool_calls)
        body = response_body(self.shown, status=status, output=self.items, usage=_usage_of(done.usage),
                             incomplete=incomplete, completed_at=int(time.time()) if status == "completed" else None)
        return out + self.event("response.completed" if status == "completed" else "response.incomplete",
                                response=body)

    def fail(self, error):
        out = ""
        if self.text is not None:
            out += self._close_text("incomplete")
        out += self._close_calls("incomplete", None)
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        body = response_body(self.shown, status="failed", output=self.items,
                             error={"code": code, "message": error.message})
        return out + self.event("response.failed", response=body)


def response_events(events, shown, *, on_finish=None):
    """Render turn events as the Responses API's typed SSE events (``event:`` lines, each
    ``data`` with its ``type`` and ``sequence_number``).

    ``on_finish(usage_or_None, error_or_None)`` runs at the end, also when the client left."""
    render, usage, error = _Renderer(shown), None, None
    try:
        for event in events:
            if isinstance(event, Delta):
                if event.index:
                    continue  # other choices: the Responses API has no n
                if event.tool_calls:
                    yield render.call_fragments(event.tool_calls)
                if event.text:
                    yield render.text_delta(event.text, event.logprobs)
            elif isinstance(event, Start):
                shown.created_at = event.created
                body = response_body(shown, status="in_progress", output=[])
                yield (render.event("response.created", response=body) +
                       render.event("response.in_progress", response=body))
            elif isinstance(event, Heartbeat):
                yield HEARTBEAT_FRAME
            elif isinstance(event, Done):
                usage = event.usage
                yield render.finish(event)
            elif isinstance(event, Error):
                error = event.error
                yield render.fail(error)
    finally:
        if on_finish:
            on_finish(usage, error)

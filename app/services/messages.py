"""Chat messages, tools and reply formats: the canonical shapes every dialect translates into,
checked once here.

A message is OpenAI's chat shape (see ``app.providers.llm.ChatRequest``): a ``role``
(``system``, ``developer``, ``user``, ``assistant``, ``tool``), ``content`` as a string, a list of
parts or None (an assistant message that only calls tools), ``tool_calls`` on assistant
messages, ``tool_call_id`` on tool messages, ``name``. Bounds come from the configuration:
``MAX_MESSAGES``, ``MAX_MESSAGE_LENGTH`` (the text of one message, and one call's arguments),
``MAX_CONTENT_PARTS``, ``MAX_IMAGE_BYTES`` (an inline image, decoded), ``MAX_TOOLS`` and
``MAX_TOOLS_BYTES`` (the tool definitions' JSON).
"""
import base64
import binascii
import json
import re

from app.errors import BadRequest
from app.providers.llm import content_text

ROLES = ("system", "developer", "user", "assistant", "tool")
PLAIN_ROLES = frozenset(("system", "developer", "user", "assistant"))
# The part types each role may send (parts beyond text need the model's support).
PART_TYPES = {"user": ("text", "image_url", "input_audio", "file"), "system": ("text",),
              "developer": ("text",), "assistant": ("text",), "tool": ("text",)}
IMAGE_DETAILS = ("auto", "low", "high")
AUDIO_FORMATS = ("wav", "mp3")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_ID_LENGTH = 200
DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+);base64,", re.ASCII)
TOOL_CHOICES = ("auto", "none", "required")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")


def _bad(message, field, why="invalid"):
    return BadRequest(message, fields={field: why})


def check_messages(messages, config, *, last=("user", "tool"), earlier=()):
    """The canonical copy of ``messages`` (only the keys the core knows); raises BadRequest
    naming the first message that is wrong. The last message's role must be one of ``last``
    (a user message must say something); a tool message must answer a call made before it, in
    ``messages`` or in the ``earlier`` (canonical, already checked) messages they follow."""
    max_len, max_count = config["MAX_MESSAGE_LENGTH"], config["MAX_MESSAGES"]
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages", "empty")
    if len(messages) > max_count:
        raise _bad(f"at most {max_count} messages", "messages", "too many")
    clean = []
    calls = {call["id"] for m in earlier for call in m.get("tool_calls") or ()}
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"messages[{i}] needs a role ({', '.join(ROLES)})", f"messages.{i}.role")
        role, content = m["role"], m.get("content")
        if (isinstance(content, str) and role in PLAIN_ROLES and len(m) == 2):  # plain text: the usual case
            if len(content) > max_len:
                raise _bad(f"messages[{i}] is longer than {max_len} characters", f"messages.{i}.content",
                           "too long")
            clean.append({"role": role, "content": content})
            continue
        clean.append(_check_message(i, m, config, calls))
    final = clean[-1]
    if final["role"] not in last:
        raise _bad(f"the last message must be a {' or '.join(last)} message", "messages",
                   "last message is not a " + " or ".join(last) + " message")
    if final["role"] == "user" and not content_text(final["content"]).strip() and not _has_media(final):
        raise _bad("the last message must be a non-empty user message", "messages",
                   "last message is empty")
    return clean


def _has_media(message):
    content = message.get("content")
    return isinstance(content, list) and any(p["type"] != "text" for p in content)


def _check_message(i, m, config, calls):
    role, content = m["role"], m.get("content")
    out = {"role": role}
    tool_calls = m.get("tool_calls")
    if role == "assistant" and tool_calls not in (None, []):
        out["tool_calls"] = [_check_call(i, j, call, config, calls) for j, call in enumerate(_as_list(
            tool_calls, f"messages.{i}.tool_calls"))]
    elif tool_calls not in (None, []):
        raise _bad(f"messages[{i}]: only assistant messages carry tool_calls", f"messages.{i}.tool_calls")
    if content is None:
        if "tool_calls" not in out:
            raise _bad(f"messages[{i}] needs content (null only for an assistant message with tool_calls)",
                       f"messages.{i}.content", "missing")
        out["content"] = None
    elif isinstance(content, str):
        out["content"] = content
    elif isinstance(content, list):
        out["content"] = _check_parts(i, role, content, config)
    else:
        raise _bad(f"messages[{i}].content must be a string or a list of parts", f"messages.{i}.content")
    if len(content_text(out["content"])) > config["MAX_MESSAGE_LENGTH"]:
        raise _bad(f"messages[{i}] is longer than {config['MAX_MESSAGE_LENGTH']} characters",
                   f"messages.{i}.content", "too long")
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _bad(f"messages[{i}] (a tool result) needs the tool_call_id it answers",
                       f"messages.{i}.tool_call_id", "missing")
        if call_id not in calls:
            raise _bad(f"messages[{i}] answers tool call {call_id!r}, which no assistant message made",
                       f"messages.{i}.tool_call_id", "matches no tool call")
        out["tool_call_id"] = call_id
    elif m.get("tool_call_id") is not None:
        raise _bad(f"messages[{i}]: only tool messages carry a tool_call_id", f"messages.{i}.tool_call_id")
    name = m.get("name")
    if name is not None:
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _bad(f"messages[{i}].name must be 1-64 letters, digits, '_', '-' or '.'", f"messages.{i}.name")
        out["name"] = name
    return out


def _as_list(value, field):
    if not isinstance(value, list):
        raise _bad(f"{field} must be a list", field)
    return value


def _check_call(i, j, call, config, calls):
    field = f"messages.{i}.tool_calls.{j}"
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise _bad(f"{field} must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}", field)
    call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_ID_LENGTH:
        raise _bad(f"{field}.id must be a non-empty string of at most {MAX_ID_LENGTH} characters", f"{field}.id")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise _bad(f"{field}.function.name must be 1-64 letters, digits, '_', '-' or '.'", f"{field}.function.name")
    if not isinstance(arguments, str):
        raise _bad(f"{field}.function.arguments must be a string of JSON", f"{field}.function.arguments")
    if len(arguments) > config["MAX_MESSAGE_LENGTH"]:
        raise _bad(f"{field}.function.arguments is longer than {config['MAX_MESSAGE_LENGTH']} characters",
                   f"{field}.function.arguments", "too long")
    try:
        json.loads(arguments or "{}")
    except ValueError:
        raise _bad(f"{field}.function.arguments is not valid JSON", f"{field}.function.arguments",
                   "not JSON") from None
    calls.add(call_id)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _check_parts(i, role, parts, config):
    if len(parts) > config["MAX_CONTENT_PARTS"]:
        raise _bad(f"messages[{i}] has more than {config['MAX_CONTENT_PARTS']} content parts",
                   f"messages.{i}.content", "too many parts")
    allowed = PART_TYPES[role]
    out = []
    for j, part in enumerate(parts):
        field = f"messages.{i}.content.{j}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise _bad(f"{field}: a {role} message's parts may be {', '.join(allowed)}, not {kind!r}", field)
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _bad(f"{field}.text must be a string", f"{field}.text")
            out.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            out.append({"type": "image_url", "image_url": _check_image(field, part.get("image_url"), config)})
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if (not isinstance(audio, dict) or audio.get("format") not in AUDIO_FORMATS
                    or not isinstance(audio.get("data"), str)):
                raise _bad(f"{field}.input_audio must be {{'data': base64, 'format': wav|mp3}}", f"{field}.input_audio")
            _check_base64(audio["data"], f"{field}.input_audio.data", config)
            out.append({"type": "input_audio", "input_audio": {"data": audio["data"], "format": audio["format"]}})
        else:  # file
            file = part.get("file")
            if not isinstance(file, dict) or not any(isinstance(file.get(k), str) for k in ("file_data", "file_id")):
                raise _bad(f"{field}.file needs file_data (a data URL) or file_id", f"{field}.file")
            out.append({"type": "file", "file": {k: file[k] for k in ("file_data", "file_id", "filename")
                                                 if isinstance(file.get(k), str)}})
    return out


def _check_image(field, image, config):
    if isinstance(image, str):  # some clients send the URL itself
        image = {"url": image}
    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
        raise _bad(f"{field}.image_url must be {{'url': ..., 'detail': auto|low|high}}", f"{field}.image_url")
    url, detail = image["url"], image.get("detail")
    if detail is not None and detail not in IMAGE_DETAILS:
        raise _bad(f"{field}.image_url.detail must be one of {', '.join(IMAGE_DETAILS)}", f"{field}.image_url.detail")
    lower = url[:8].lower()
    if lower.startswith("data:"):
        match = DATA_URL.match(url)
        if not match:
            raise _bad(f"{field}.image_url.url: a data URL must be data:image/<type>;base64,<data>",
                       f"{field}.image_url.url", "not an image data URL")
        _check_base64(url[match.end():], f"{field}.image_url.url", config)
    elif not (lower.startswith("https://") or lower.startswith("http://")) or len(url) > 8192:
        raise _bad(f"{field}.image_url.url must be an http(s) URL (at most 8192 characters) or a data URL",
                   f"{field}.image_url.url", "not http(s) or data")
    out = {"url": url}
    if detail is not None:
        out["detail"] = detail
    return out


def _check_base64(data, field, config):
    limit = config["MAX_IMAGE_BYTES"]
    if len(data) * 3 // 4 > limit + 3:
        raise _bad(f"{field} is larger than {limit} bytes", field, "too large")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{field} is not valid base64", field, "not base64") from None


def check_tools(tools, tool_choice, config):
    """The canonical ``(tools, tool_choice)``: OpenAI function tools (unique names, at most
    ``MAX_TOOLS``, their JSON at most ``MAX_TOOLS_BYTES``) and a choice among them."""
    if tools in (None, []):
        tools = None
    else:
        if not isinstance(tools, list):
            raise _bad("tools must be a list of function tools", "tools")
        if len(tools) > config["MAX_TOOLS"]:
            raise _bad(f"at most {config['MAX_TOOLS']} tools", "tools", "too many")
        if len(json.dumps(tools, separators=(",", ":"))) > config["MAX_TOOLS_BYTES"]:
            raise _bad(f"the tool definitions are larger than {config['MAX_TOOLS_BYTES']} bytes of JSON",
                       "tools", "too large")
        tools = [_check_tool(i, tool) for i, tool in enumerate(tools)]
        names = [t["function"]["name"] for t in tools]
        if len(set(names)) != len(names):
            raise _bad("tool names must be unique", "tools", "duplicate name")
    if tool_choice is None:
        return tools, None
    if isinstance(tool_choice, str):
        if tool_choice not in TOOL_CHOICES:
            raise _bad(f"tool_choice must be {', '.join(TOOL_CHOICES)} or a named function", "tool_choice")
    else:
        name = ((tool_choice.get("function") or {}).get("name") if isinstance(tool_choice, dict)
                and tool_choice.get("type") == "function" and isinstance(tool_choice.get("function"), dict) else None)
        if not isinstance(name, str):
            raise _bad("tool_choice must be auto, none, required or {'type': 'function', 'function': {'name'}}",
                       "tool_choice")
        if not tools or name not in {t["function"]["name"] for t in tools}:
            raise _bad(f"tool_choice names {name!r}, which is not one of the tools", "tool_choice",
                       "unknown tool")
        tool_choice = {"type": "function", "function": {"name": name}}
    if tools is None:
        if tool_choice != "none":
            raise _bad("tool_choice needs tools", "tool_choice", "no tools")
        return None, None  # "none" without tools is what no tool_choice means: providers refuse it
    return tools, tool_choice


def _check_tool(i, tool):
    field = f"tools.{i}"
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise _bad(f"{field} must be {{'type': 'function', 'function': {{'name', 'description', 'parameters'}}}}",
                   field)
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise _bad(f"{field}.function.name must be 1-64 letters, digits, '_', '-' or '.'", f"{field}.function.name")
    out = {"name": name}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise _bad(f"{field}.function.description must be a string", f"{field}.function.description")
        out["description"] = description
    parameters = function.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise _bad(f"{field}.function.parameters must be a JSON Schema object", f"{field}.function.parameters")
        out["parameters"] = parameters
    strict = function.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise _bad(f"{field}.function.strict must be a boolean", f"{field}.function.strict")
        out["strict"] = strict
    return {"type": "function", "function": out}


def check_response_format(value):
    """The canonical response format: None for text, else ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}``."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise _bad("response_format.type must be text, json_object or json_schema", "response_format.type")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not TOOL_NAME.match(spec["name"]):
        raise _bad("response_format.json_schema needs a name (1-64 letters, digits, '_', '-')",
                   "response_format.json_schema.name")
    out = {"name": spec["name"]}
    if spec.get("schema") is not None:
        if not isinstance(spec["schema"], dict):
            raise _bad("response_format.json_schema.schema must be a JSON Schema object",
                       "response_format.json_schema.schema")
        out["schema"] = spec["schema"]
    for key, kind_ in (("strict", bool), ("description", str)):
        if spec.get(key) is not None:
            if not isinstance(spec[key], kind_):
                raise _bad(f"response_format.json_schema.{key} is invalid", f"response_format.json_schema.{key}")
            out[key] = spec[key]
    return {"type": "json_schema", "json_schema": out}


def stored(message):
    """``(text, structure)`` of a canonical message for its database row: structure is None for
    a plain text message."""
    content = message.get("content")
    if isinstance(content, str) and len(message) == 2:
        return content, None
    structure = {k: message[k] for k in ("content", "tool_calls", "tool_call_id", "name") if k in message}
    if isinstance(content, str):
        del structure["content"]  # the text column holds it
    return content_text(content), structure


def from_row(role, content, structure):
    """The canonical message of a stored row (``stored`` in reverse)."""
    if not structure:
        return {"role": role, "content": content}
    message = {"role": role, "content": content}
    message.update(structure)
    return message

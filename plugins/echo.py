"""Built-in ``echo`` provider: deterministic replies, no credentials; a faithful test double
of everything a chat model can be asked.

The reply repeats the last user message (``Echo: <text>``), one word per
delta. For tests and benchmarks a stream can be shaped:
- config ``ECHO_TOKEN_DELAY`` (seconds between deltas) and ``ECHO_TOKENS``
  (reply of exactly N tokens ``t1 t2 ...``);
- per request, when ``ECHO_DIRECTIVES`` is on, a directive in the last user
  message: ``[echo tokens=50 delay=0.02]``. With it off the directive is text
  like any other and is echoed.

Every reply is bounded, whatever asked for it: at most ``ECHO_MAX_TOKENS``
tokens, at most ``ECHO_MAX_DELAY`` seconds between two deltas, and no delta
after ``ECHO_MAX_DURATION`` seconds. Words are produced one at a time, so a
large count costs nothing before it is cut.

Beyond text (always on, each bounded by the request itself):
- **tools**: with tools offered (and ``tool_choice`` not ``none``), ``[echo call=NAME {json
  arguments}]`` in the last user message answers with that call (one per directive, at most
  ``MAX_CALLS``; one unless ``parallel_tool_calls`` allows more); ``tool_choice`` ``required`` or
  a named function calls the first or the named tool, with the directive's arguments or an
  instance of its ``parameters`` schema. The call streams as OpenAI does: id and name first,
  then the arguments in two fragments; ``finish_reason`` is ``tool_calls``. After a tool result
  the reply is ``Echo: <tool name> returned <result>``.
- **parts**: image, audio and file parts are reported in the reply (``[image <url or
  data:type, N bytes> detail=<detail>]``).
- **response_format**: ``json_object`` answers ``{"echo": "<reply>"}``; ``json_schema`` an
  instance of the schema (strings are the reply, numbers 0, booleans false, arrays empty).
- **stop**: the reply ends before the first stop sequence.
- **n**: every choice has the same reply; **logprobs**: token ``k`` has logprob
  ``-(k % 10) / 100`` and ``top_logprobs`` alternatives ``<alt1>``... each one lower.
- seed, penalties, logit_bias, top_p and reasoning_effort are accepted: the reply is the same
  whatever they are. Fields chatport does not model (``passthrough``) are refused.

``echo/embed`` is its embedding model: deterministic unit vectors of ``EMBED_DIMENSIONS`` floats
drawn from a hash of each input (a string, or a token array), shorter on request
(``dimensions``: the first ones, renormalised, as OpenAI's models shorten theirs). Equal inputs
have equal vectors; different inputs nearly orthogonal ones.
"""
import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid

from app.providers import (
    FEATURES,
    Chunk,
    EmbeddingModel,
    Embeddings,
    Model,
    Usage,
    content_text,
    estimate_tokens,
    hookimpl,
    message_tokens,
)

DIRECTIVE = re.compile(r"\[echo(?:\s+tokens=(\d+))?(?:\s+delay=(\d+(?:\.\d*)?))?\s*\]")
CALL = re.compile(r"\[echo call=([A-Za-z0-9_.-]{1,64})(?:\s+(\{.*?\}))?\s*\](?!\})")
WORD = re.compile(r"\S+")
PIECE = re.compile(r"\s*\S+")

DEFAULT_MAX_TOKENS = 1000
DEFAULT_MAX_DELAY = 0.5
DEFAULT_MAX_DURATION = 30.0
MAX_CALLS = 8
MAX_SCHEMA_DEPTH = 8
EMBED_DIMENSIONS = 64


def _setting(config, name, default, kind):
    value = config.get(name)
    return default if value is None else kind(value)


class EchoModel(Model):
    provider = "echo"
    model_id = "echo"
    description = "Repeats the last user message; deterministic, for tests and demos."
    supports = frozenset(FEATURES) - {"passthrough"}

    def __init__(self, config):
        self.default_delay = float(config.get("ECHO_TOKEN_DELAY") or 0)
        self.default_tokens = config.get("ECHO_TOKENS")
        self.directives = bool(config.get("ECHO_DIRECTIVES"))
        self.max_tokens = _setting(config, "ECHO_MAX_TOKENS", DEFAULT_MAX_TOKENS, int)
        self.max_delay = _setting(config, "ECHO_MAX_DELAY", DEFAULT_MAX_DELAY, float)
        self.max_duration = _setting(config, "ECHO_MAX_DURATION", DEFAULT_MAX_DURATION, float)

    def _shape(self, text):
        """(token count or None, delay) for a reply to ``text``, within the bounds."""
        delay, count = self.default_delay, self.default_tokens
        match = DIRECTIVE.search(text) if self.directives else None
        if match:
            if match.group(1):  # more digits than any bound: no int() of a huge string
                count = int(match.group(1)) if len(match.group(1)) <= 12 else self.max_tokens
            delay = float(match.group(2)) if match.group(2) else delay
        return count, max(0.0, min(delay, self.max_delay))

    def stream(self, request):
        last = request.messages[-1]
        if (isinstance(last["content"], str) and last["role"] == "user" and request.n == 1 and not request.logprobs and not request.tools
                and not request.response_format and not request.stop):
            yield from self._plain(request)  # a text turn: the reply as it always was
            return
        yield from self._rich(request)

    def _plain(self, request):
        last = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        if not isinstance(last, str):
            last = content_text(last)
        count, delay = self._shape(last)
        if count:
            words = (f"t{i}" for i in range(1, int(count) + 1))
        else:
            words = (m.group() for m in WORD.finditer("Echo: " + last))
        sent = 0
        for word in self._paced(words, request, delay):
            yield word if sent == 0 else " " + word
            sent += 1
        yield Usage(prompt_tokens=sum(message_tokens(m) for m in request.messages), completion_tokens=sent)

    def _paced(self, items, request, delay):
        """``items`` up to the token bound, ``delay`` apart, until the time bound."""
        limit = self.max_tokens
        if request.max_tokens:
            limit = min(limit, request.max_tokens)
        deadline = time.monotonic() + self.max_duration
        for sent, item in enumerate(items):
            if sent >= limit:
                return
            if delay:
                if time.monotonic() + delay > deadline:
                    return
                time.sleep(delay)
            yield item

    def _rich(self, request):
        text, user_text, delay = self._reply_text(request)
        calls = self._calls(request, user_text)
        if request.response_format and not calls:
            text = _formatted(request.response_format, text)
        pieces = [] if calls else PIECE.findall(text)
        if request.stop and not calls:
            cut = min((text.find(s) for s in request.stop if s and s in text), default=-1)
            if cut >= 0:
                pieces = PIECE.findall(text[:cut])
                if text[:cut] and text[:cut][-1].isspace():
                    pieces.append(text[:cut][len("".join(pieces)):])
        limit = min(self.max_tokens, request.max_tokens or self.max_tokens)
        finish = "tool_calls" if calls else ("length" if len(pieces) > limit else "stop")
        choices = range(max(1, request.n))
        sent = 0
        for k, piece in enumerate(self._paced(pieces, request, delay)):
            logprobs = [_logprob(piece, k, request.top_logprobs or 0)] if request.logprobs else None
            for index in choices:
                yield Chunk(piece, index, logprobs=logprobs) if (index or logprobs) else piece
            sent += 1
        for index in choices:
            for c, (name, arguments) in enumerate(calls):
                call_id = f"call_{uuid.uuid4().hex[:24]}"
                half = len(arguments) // 2
                yield Chunk(index=index, tool_calls=[{"index": c, "id": call_id, "name": name, "arguments": ""}])
                yield Chunk(index=index, tool_calls=[{"index": c, "arguments": arguments[:half]}])
                yield Chunk(index=index, tool_calls=[{"index": c, "arguments": arguments[half:]}])
            yield Chunk(index=index, finish_reason=finish)
        completion = sent + sum(max(1, len(a) // 4) for _, a in calls)
        yield Usage(prompt_tokens=sum(message_tokens(m) for m in request.messages),
                    completion_tokens=completion * len(choices))

    def _reply_text(self, request):
        """(reply text, last user text, delay) for the last message."""
        last = request.messages[-1]
        if last["role"] == "tool":
            name = next((c["function"]["name"] for m in request.messages if m["role"] == "assistant"
                         for c in m.get("tool_calls") or () if c["id"] == last.get("tool_call_id")),
                        last.get("tool_call_id"))
            return f"Echo: {name} returned {content_text(last['content'])}", "", self.default_delay
        user = next((m for m in reversed(request.messages) if m["role"] == "user"), {"content": ""})
        text = content_text(user["content"])
        count, delay = self._shape(text)
        if count:
            return " ".join(f"t{i}" for i in range(1, min(int(count), self.max_tokens) + 1)), text, delay
        reports = [_report(p) for p in user["content"] if p["type"] != "text"] if isinstance(
            user["content"], list) else []
        return " ".join(["Echo:", text.strip(), *reports]).replace("  ", " ").strip(), text, delay

    def _calls(self, request, user_text):
        """The tool calls to answer with: ``[(name, arguments JSON)]``."""
        if not request.tools or request.tool_choice == "none":
            return []
        forced = request.tool_choice == "required" or isinstance(request.tool_choice, dict)
        if request.messages[-1]["role"] != "user" and not forced:
            return []  # after a tool result: answer in text
        tools = {t["function"]["name"]: t["function"] for t in request.tools}
        calls = []
        if request.messages[-1]["role"] == "user":
            for match in CALL.finditer(user_text):
                if match.group(1) in tools and len(calls) < MAX_CALLS:
                    calls.append((match.group(1), _arguments(match.group(2), tools[match.group(1)])))
        if isinstance(request.tool_choice, dict):
            wanted = request.tool_choice["function"]["name"]
            calls = [c for c in calls if c[0] == wanted] or [(wanted, _arguments(None, tools[wanted]))]
        elif request.tool_choice == "required" and not calls:
            first = request.tools[0]["function"]
            calls = [(first["name"], _arguments(None, first))]
        if request.parallel_tool_calls is False:
            calls = calls[:1]
        return calls


def _arguments(given, function):
    """The arguments JSON: the directive's object if it parses, else an instance of the schema."""
    if given:
        try:
            return json.dumps(json.loads(given), separators=(",", ":"))
        except ValueError:
            pass
    return json.dumps(_instance(function.get("parameters") or {"type": "object"}, ""), separators=(",", ":"))


def _instance(schema, text, depth=0):
    """A deterministic value of ``schema``: strings are ``text``, numbers 0, booleans false."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: _instance(sub, text, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [_instance(schema.get("items") or {}, text, depth + 1)] * int(schema.get("minItems") or 0)
    if kind == "string":
        return text
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    return None


def _formatted(response_format, text):
    if response_format["type"] == "json_object":
        return json.dumps({"echo": text})
    schema = response_format["json_schema"].get("schema") or {"type": "object"}
    return json.dumps(_instance(schema, text))


def _report(part):
    """How a part that is not text is echoed."""
    kind = part["type"]
    if kind == "image_url":
        image = part["image_url"]
        url = image["url"]
        if url.startswith("data:"):
            head, _, data = url.partition(",")
            url = f"{head[5:].split(';')[0]}, {len(base64.b64decode(data))} bytes"
        return f"[image {url} detail={image.get('detail', 'auto')}]"
    if kind == "input_audio":
        audio = part["input_audio"]
        return f"[audio {audio['format']}, {len(base64.b64decode(audio['data']))} bytes]"
    file = part["file"]
    return f"[file {file.get('filename') or file.get('file_id') or 'attached'}]"


def _logprob(piece, k, top):
    value = -(k % 10) / 100
    token = {"token": piece, "logprob": value, "bytes": list(piece.encode()), "top_logprobs": []}
    if top:
        token["top_logprobs"] = [{"token": piece, "logprob": value, "bytes": list(piece.encode())}] + [
            {"token": f"<alt{j}>", "logprob": value - j, "bytes": list(f"<alt{j}>".encode())} for j in range(1, top)]
    return token


@hookimpl
def register_models(register, config):
    register(EchoModel(config))


class EchoEmbeddingModel(EmbeddingModel):
    provider = "echo"
    model_id = "embed"
    description = "Deterministic vectors from a hash of each input; for tests and demos."
    dimensions = EMBED_DIMENSIONS
    supports = frozenset({"dimensions", "tokens"})

    def embed(self, request):
        size = request.dimensions or self.dimensions
        vectors, tokens = [], 0
        for item in request.inputs:
            if isinstance(item, str):
                key, tokens = "text:" + item, tokens + estimate_tokens(item)
            else:
                key, tokens = "tokens:" + ",".join(map(str, item)), tokens + len(item)
            vectors.append(_unit(_hashed(key, self.dimensions)[:size]))
        return Embeddings(vectors=vectors, usage=Usage(prompt_tokens=tokens))


def _hashed(key, size):
    """``size`` numbers in [-1, 1) from SHA-256 of ``key`` (in counter mode)."""
    values = []
    for block in range((size + 7) // 8):
        digest = hashlib.sha256(f"{block}:{key}".encode("utf-8", "surrogatepass")).digest()
        values.extend(v / 2**31 - 1 for v in struct.unpack("<8I", digest))
    return values[:size]


def _unit(vector):
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


@hookimpl
def register_embedding_models(register, config):
    register(EchoEmbeddingModel())

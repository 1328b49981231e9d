"""OpenAI wire formats: chat completion and text completion bodies, their chunk SSE, embedding
lists and error bodies.

Shared by the OpenAI-compatible API and the channel API (whose stream is the same
``chat.completion.chunk`` format).
"""
import base64
import json
import struct
import time

from app.api.sse import HEARTBEAT_FRAME, sse
from app.ids import tool_call_id
from app.services.events import Delta, Done, Error, Heartbeat, Start

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}

# The finish reasons OpenAI's clients know; the engine's "stopped" (by a stop request or the
# time limit) is a "stop" to them, and anything else a provider says too.
FINISH_REASONS = frozenset(("stop", "length", "tool_calls", "content_filter", "function_call"))


def error_body(err):
    """``{"error": {"message", "type", "code", "param"}}`` for an ApiError."""
    param = next(iter(err.fields), None) if err.fields else None
    return {"error": {"message": err.message,
                      "type": ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error"),
                      "code": err.code, "param": param}}


def render_error(err):
    return error_body(err), err.status, err.headers


def completion_id(message_id, prefix="chatcmpl-"):
    return prefix + message_id.replace("-", "")


def finish_reason(reason):
    return reason if reason in FINISH_REASONS else "stop"


def usage_body(usage):
    """OpenAI's usage, with the cached and reasoning token details when there are any."""
    body = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}
    if usage.cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


def _choices(done):
    """The turn's choices (a Done built without them has its first choice's fields)."""
    if done.choices:
        return done.choices
    from app.services.events import Choice

    return [Choice(0, done.content, done.tool_calls, None, done.finish_reason)]


# ---------------------------------------------------------------- chat completions


def completion_body(done, model, created):
    """A ``chat.completion``: one choice per ``n``, each with its text (null when it only calls
    tools), tool calls, logprobs and finish reason."""
    choices = []
    for choice in _choices(done):
        message = {"role": "assistant", "content": choice.content, "refusal": None}
        if choice.tool_calls:
            message["content"] = choice.content or None
            message["tool_calls"] = choice.tool_calls
        choices.append({"index": choice.index, "message": message,
                        "logprobs": {"content": choice.logprobs} if choice.logprobs is not None else None,
                        "finish_reason": finish_reason(choice.finish_reason)})
    return {"id": completion_id(done.message_id), "object": "chat.completion", "created": int(created),
            "model": model, "choices": choices, "usage": usage_body(done.usage)}


_MARK = "\x00text\x00"  # stands for the text while a delta frame is built once per stream
_encode = json.JSONEncoder(separators=(",", ":")).encode  # what sse() does to a str inside a dict


def chunk_stream(events, model, *, include_usage=False, on_finish=None, n=1):
    """Render turn events as ``data: {chat.completion.chunk}`` lines and ``data: [DONE]``.

    A role chunk opens each of the ``n`` choices; the first choice's plain text deltas are
    rendered from a frame built once (only the text is encoded per delta); deltas with tool-call
    fragments, logprobs or another choice's text are built whole. Each choice's finish reason
    comes in the last frames (from ``Done``, which knows why every choice ended), with the usage
    chunk when ``include_usage``. ``on_finish(usage_or_None, error_or_None)`` runs at the end,
    also when the client left.
    """
    cid, created, usage, error = None, int(time.time()), None, None
    text_frame = None  # (head, tail) of a text delta's frame: only the text is encoded per delta
    opened, calls = set(), set()  # choices given their role chunk; (choice, call) fragments begun

    def chunk(choices, **more):
        return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": choices, **more})

    def role(index):
        opened.add(index)
        return chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])

    def rich(event):
        """The frame(s) of a delta that is more than choice 0's text ("" when it only says a
        finish reason: the last frames say it)."""
        delta = {}
        if event.text:
            delta["content"] = event.text
        if event.tool_calls:
            delta["tool_calls"] = [_call_fragment(event.index, f, calls) for f in event.tool_calls]
        if not delta and not event.logprobs:
            return ""
        choice = {"index": event.index, "delta": delta, "finish_reason": None}
        if event.logprobs:
            choice["logprobs"] = {"content": event.logprobs}
        head = "" if event.index in opened else role(event.index)
        return head + chunk([choice])

    try:
        for event in events:
            if isinstance(event, Delta):
                if event.index or event.tool_calls or event.logprobs or event.finish_reason:
                    frame = rich(event)
                    if frame:
                        yield frame
                    continue
                if text_frame is None:
                    head, _, tail = chunk([{"index": 0, "delta": {"content": _MARK}, "finish_reason": None}]
                                          ).partition(_encode(_MARK))
                    text_frame = (head, tail)
                yield text_frame[0] + _encode(event.text) + text_frame[1]
            elif isinstance(event, Start):
                cid = completion_id(event.assistant_message_id)
                created = int(event.created)
                yield "".join(role(i) for i in range(max(1, n)))
            elif isinstance(event, Heartbeat):
                yield HEARTBEAT_FRAME
            elif isinstance(event, Done):  # the last frames go out in one write
                usage = event.usage
                last = "".join(chunk([{"index": c.index, "delta": {}, "finish_reason": finish_reason(c.finish_reason)}])
                               for c in _choices(event))
                if include_usage:
                    last += chunk([], usage=usage_body(usage))
                yield last + "data: [DONE]\n\n"
            elif isinstance(event, Error):
                error = event.error
                yield sse(error_body(error))
    finally:
        if on_finish:
            on_finish(usage, error)


def _call_fragment(index, fragment, begun):
    """A tool-call fragment in OpenAI's delta shape: the call's first fragment carries its id,
    type and name (an id is made up when the provider gave none), the others the arguments."""
    call = fragment.get("index", 0)
    out = {"index": call}
    if (index, call) not in begun:
        begun.add((index, call))
        out["id"] = fragment.get("id") or tool_call_id()
        out["type"] = "function"
        out["function"] = {"name": fragment.get("name") or "", "arguments": fragment.get("arguments") or ""}
        return out
    function = {"arguments": fragment.get("arguments") or ""}
    if fragment.get("name"):
        function["name"] = fragment["name"]
    out["function"] = function
    return out


# ---------------------------------------------------------------- text completions (legacy)


def legacy_logprobs(entries, offset=0):
    """Chat ``content`` logprob entries in the text completion shape (``tokens``,
    ``token_logprobs``, ``top_logprobs`` as ``{token: logprob}``, ``text_offset``), and the
    offset after them."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for entry in entries or ():
        token = entry.get("token") or ""
        out["tokens"].append(token)
        out["token_logprobs"].append(entry.get("logprob"))
        out["top_logprobs"].append({t["token"]: t["logprob"] for t in entry.get("top_logprobs") or ()})
        out["text_offset"].append(offset)
        offset += len(token)
    return out, offset


def text_completion_body(done, model, created, *, prefix="", logprobs=False):
    """A ``text_completion``: one choice per ``n``; ``prefix`` (the prompt, with ``echo``) comes
    before each text; with ``logprobs`` each choice has them in the legacy shape."""
    choices = []
    for choice in _choices(done):
        lp = legacy_logprobs(choice.logprobs, len(prefix))[0] if logprobs else None
        choices.append({"text": prefix + choice.content, "index": choice.index, "logprobs": lp,
                        "finish_reason": finish_reason(choice.finish_reason)})
    return {"id": completion_id(done.message_id, "cmpl-"), "object": "text_completion", "created": int(created),
            "model": model, "choices": choices, "usage": usage_body(done.usage)}


def text_completion_stream(events, model, *, prefix="", logprobs=False, include_usage=False,
                           on_finish=None, n=1):
    """Render turn events as ``data: {text_completion}`` chunks and ``data: [DONE]``: ``prefix``
    first (``echo``), each delta's text (tool-call fragments have no place in this format), one
    last chunk per choice with its finish reason, then the usage chunk when ``include_usage``."""
    cid, created, usage, error = None, int(time.time()), None, None
    offsets = {}  # choice -> text offset of its next token (legacy logprobs)

    def chunk(choices, **more):
        return sse({"id": cid, "object": "text_completion", "created": created, "model": model,
                    "choices": choices, **more})

    def text(index, value, entries=None):
        lp = None
        if logprobs:
            lp, offsets[index] = legacy_logprobs(entries, offsets.get(index, len(prefix)))
        return chunk([{"text": value, "index": index, "logprobs": lp, "finish_reason": None}])

    try:
        for event in events:
            if isinstance(event, Delta):
                if event.text or event.logprobs:
                    yield text(event.index, event.text, event.logprobs)
            elif isinstance(event, Start):
                cid = completion_id(event.assistant_message_id, "cmpl-")
                created = int(event.created)
                if prefix:
                    yield "".join(chunk([{"text": prefix, "index": i, "logprobs": None, "finish_reason": None}])
                                  for i in range(max(1, n)))
            elif isinstance(event, Heartbeat):
                yield HEARTBEAT_FRAME
            elif isinstance(event, Done):
                usage = event.usage
                last = "".join(chunk([{"text": "", "index": c.index, "logprobs": None,
                                       "finish_reason": finish_reason(c.finish_reason)}]) for c in _choices(event))
                if include_usage:
                    last += chunk([], usage=usage_body(usage))
                yield last + "data: [DONE]\n\n"
            elif isinstance(event, Error):
                error = event.error
                yield sse(error_body(error))
    finally:
        if on_finish:
            on_finish(usage, error)


# ---------------------------------------------------------------- embeddings


def embedding_value(vector, encoding_format):
    """A vector as a list of floats, or (``base64``) its little-endian float32 bytes in base64,
    as OpenAI sends them."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def embeddings_body(vectors, usage, model, encoding_format="float"):
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": embedding_value(v, encoding_format)}
                     for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}}

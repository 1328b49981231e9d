"""OpenAI chat-completion wire format: JSON bodies, chunk SSE and error bodies.

Shared by the OpenAI-compatible API and the channel API (whose stream is
the same ``chat.completion.chunk`` format).
"""
import json
import time

from app.api.sse import HEARTBEAT_FRAME, sse
from app.services.events import Delta, Done, Error, Heartbeat, Start

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}


def error_body(err):
    """``{"error": {"message", "type", "code", "param"}}`` for an ApiError."""
    param = next(iter(err.fields), None) if err.fields else None
    return {"error": {"message": err.message,
                      "type": ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error"),
                      "code": err.code, "param": param}}


def render_error(err):
    return error_body(err), err.status, err.headers


def completion_id(message_id):
    return "chatcmpl-" + message_id.replace("-", "")


def usage_body(usage):
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def completion_body(done, model, created):
    return {
        "id": completion_id(done.message_id), "object": "chat.completion", "created": int(created),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": done.content},
                     "finish_reason": "length" if done.finish_reason == "length" else "stop",
                     "logprobs": None}],
        "usage": usage_body(done.usage),
    }


_MARK = "\x00text\x00"  # stands for the text while a delta frame is built once per stream
_encode = json.JSONEncoder(separators=(",", ":")).encode  # what sse() does to a str inside a dict


def chunk_stream(events, model, *, include_usage=False, on_finish=None):
    """Render turn events as ``data: {chat.completion.chunk}`` lines and ``data: [DONE]``.

    ``on_finish(usage_or_None, error_or_None)`` runs at the end, also when the client left.
    """
    cid, created, usage, error = None, int(time.time()), None, None
    text_frame = None  # (head, tail) of a text delta's frame: only the text is encoded per delta

    def chunk(delta, finish=None):
        return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    try:
        for event in events:
            if isinstance(event, Delta):
                if text_frame is None:
                    head, _, tail = chunk({"content": _MARK}).partition(_encode(_MARK))
                    text_frame = (head, tail)
                yield text_frame[0] + _encode(event.text) + text_frame[1]
            elif isinstance(event, Start):
                cid = completion_id(event.assistant_message_id)
                created = int(event.created)
                yield chunk({"role": "assistant", "content": ""})
            elif isinstance(event, Heartbeat):
                yield HEARTBEAT_FRAME
            elif isinstance(event, Done):  # the last frames go out in one write
                usage = event.usage
                last = chunk({}, "length" if event.finish_reason == "length" else "stop")
                if include_usage:
                    last += sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                                 "model": model, "choices": [], "usage": usage_body(usage)})
                yield last + "data: [DONE]\n\n"
            elif isinstance(event, Error):
                error = event.error
                yield sse(error_body(error))
    finally:
        if on_finish:
            on_finish(usage, error)

"""Server-sent events: one response helper for every streaming dialect."""
import json

from flask import Response

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data, event=None):
    """One SSE frame; ``data`` is JSON-encoded unless it is a str."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


HEARTBEAT_FRAME = ": keep-alive\n\n"


def stream_response(chunks, mimetype="text/event-stream"):
    """A streaming response that reverse proxies will not buffer."""
    return Response(chunks, mimetype=mimetype, headers=STREAM_HEADERS)


# How a text/event-stream response is documented: one server-sent event (its JSON payload is
# in ``data``; ``event`` names its type where the dialect types its events).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer"}},
    "required": ["data"],
}

"""Server-sent events: one response helper for every streaming dialect."""
import json

from flask import Response, current_app, request

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data, event=None):
    """One SSE frame; ``data`` is JSON-encoded unless it is a str."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


HEARTBEAT_FRAME = ": keep-alive\n\n"
_HEARTBEAT_BYTES = HEARTBEAT_FRAME.encode()


def capture_write(wsgi_app):
    """WSGI middleware keeping the server's ``write`` callable (what ``start_response`` returns,
    PEP 3333) in ``environ["chatport.write"]``: heartbeats are written through it."""

    def app(environ, start_response):
        def start(status, headers, exc_info=None):
            write = start_response(status, headers, exc_info) if exc_info else start_response(status, headers)
            environ["chatport.write"] = write
            return write

        return wsgi_app(environ, start)

    return app


def sse_heartbeat():
    """``Turn.events`` arguments for an SSE response: every ``SSE_HEARTBEAT`` seconds of provider
    silence a ``: keep-alive`` comment goes out through the response's ``write`` callable."""
    environ = request.environ

    def beat():
        write = environ.get("chatport.write")
        if write is not None:
            write(_HEARTBEAT_BYTES)

    return {"heartbeat": current_app.config["SSE_HEARTBEAT"], "beat": beat}


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

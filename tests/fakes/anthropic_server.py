"""A fake Anthropic Messages server speaking the real wire format.

``POST /v1/messages`` answers JSON (``type: message``) or, with
``"stream": true``, SSE events ``message_start`` (input usage),
``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``),
``content_block_stop``, ``message_delta`` (stop reason, output usage),
``message_stop``. Errors use Anthropic's shape
``{"type": "error", "error": {"type", "message"}}``; ``Reply.error_event``
sends an ``error`` SSE event after HTTP 200. ``max_tokens`` truncates the
reply (stop_reason ``max_tokens``); ``stop_sequences`` are recorded only.

Run standalone: ``python -m tests.fakes anthropic --port 9001``.
"""
import json
import time

from .base import FakeUpstream, Reply

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}


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
        deltas = reply.deltas()
        stop_reason = "end_turn"
        if body.get("max_tokens") and len(deltas) > body["max_tokens"]:
            deltas, stop_reason = deltas[:body["max_tokens"]], "max_tokens"
        output = reply.completion_tokens if reply.completion_tokens is not None else len(deltas)
        model = body.get("model", "claude-3-5-haiku-latest")
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                   "stop_sequence": None}
        if body.get("stream"):
            return self._stream(h, reply, message, deltas, stop_reason, output)
        h.send_json(200, {**message, "content": [{"type": "text", "text": "".join(deltas)}],
                          "stop_reason": stop_reason,
                          "usage": {"input_tokens": reply.prompt_tokens if reply.usage else 0,
                                    "output_tokens": output if reply.usage else 0}},
                    reply.headers)
        return True

    def _stream(self, h, reply, message, deltas, stop_reason, output):
        def event(name, payload):
            h.sse(json.dumps({"type": name, **payload}), event=name)

        h.start_sse(reply.headers)
        start_usage = {"input_tokens": reply.prompt_tokens if reply.usage else 0, "output_tokens": 1}
        event("message_start", {"message": {**message, "content": [], "stop_reason": None,
                                            "usage": start_usage}})
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
        event("content_block_stop", {"index": 0})
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


"""A fake OpenAI Chat Completions server speaking the real wire format.

``POST /v1/chat/completions`` answers JSON (``chat.completion``) or, with
``"stream": true``, SSE ``chat.completion.chunk`` lines, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
``GET /v1/models`` lists ``models``. ``max_tokens`` (or
``max_completion_tokens``) truncates the reply (finish_reason ``length``).

Run standalone (benchmarks): ``python -m tests.fakes openai --port 9000
--tokens 50 --delay 0.02``.
"""
import json
import time

from .base import FakeUpstream, Reply

ERROR_TYPES = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
               403: ("insufficient_permissions", None), 404: ("invalid_request_error", "model_not_found"),
               429: ("requests", "rate_limit_exceeded")}


class FakeOpenAI(FakeUpstream):
    """Fake OpenAI upstream. ``base_url`` ends in ``/v1`` like the real one."""

    prefix = "/v1"

    def __init__(self, api_key=None, models=("gpt-4o-mini", "gpt-4o"), **defaults):
        super().__init__(api_key=api_key, **defaults)
        self.models = list(models)

    def respond(self, h, rec, reply):
        if self.api_key and rec.headers.get("authorization") != f"Bearer {self.api_key}":
            reply = Reply(status=401, error_message="Incorrect API key provided.")
        if reply.status >= 400:
            return self._error(h, reply)
        path = rec.path.split("?")[0]
        if rec.method == "GET" and path == "/v1/models":
            h.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})
            return True
        if rec.method != "POST" or path != "/v1/chat/completions":
            return self._error(h, Reply(status=404, error_message=f"Unknown path {path}"))
        body = rec.body or {}
        if reply.raw is not None:
            h.send_raw(reply.raw, bool(body.get("stream")))
            return True
        deltas = reply.deltas()
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and len(deltas) > limit:
            deltas, finish = deltas[:limit], "length"
        usage = {"prompt_tokens": reply.prompt_tokens,
                 "completion_tokens": reply.completion_tokens if reply.completion_tokens is not None
                 else len(deltas)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = body.get("model", "gpt-4o-mini")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._stream(h, reply, model, deltas, finish, usage if include_usage else None)
        payload = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(deltas)},
                         "logprobs": None, "finish_reason": finish}],
        }
        if reply.usage:
            payload["usage"] = usage
        h.send_json(200, payload, reply.headers)
        return True

    def _stream(self, h, reply, model, deltas, finish, usage):
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model, "system_fingerprint": None}
        if usage is not None:
            base["usage"] = None

        def chunk(delta, finish_reason=None):
            return json.dumps({**base, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

        h.start_sse(reply.headers)
        h.sse(chunk({"role": "assistant", "content": ""}))
        for i, text in enumerate(deltas):
            if reply.error_event is not None and i >= reply.error_event_after:
                h.sse(json.dumps({"error": {"message": reply.error_event.get("message", "error"),
                                            "type": reply.error_event.get("type", "server_error"),
                                            "param": None, "code": None}}))
                h.end_sse()
                return True
            if reply.break_after is not None and i >= reply.break_after:
                h.drop_connection()
                return False
            if reply.hang and reply.hang_after is not None and i >= reply.hang_after:
                h.sleep(reply.hang)
                h.drop_connection()
                return False
            if reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            h.sse(chunk({"content": text}))
        h.sse(chunk({}, finish))
        if usage is not None and reply.usage:
            h.sse(json.dumps({**base, "choices": [], "usage": usage}))
        h.sse("[DONE]")
        h.end_sse()
        return True

    def _error(self, h, reply):
        etype, code = ERROR_TYPES.get(reply.status, ("server_error", None))
        headers = dict(reply.headers)
        if reply.retry_after is not None:
            headers["Retry-After"] = str(reply.retry_after)
        message = reply.error_message or f"Fake upstream error {reply.status}"
        h.send_json(reply.status, {"error": {"message": message, "type": reply.error_type or etype,
                                             "param": None, "code": code}}, headers)
        return True


"""A fake OpenAI Chat Completions and Embeddings server speaking the real wire format.

``POST /v1/chat/completions`` answers JSON (``chat.completion``) or, with
``"stream": true``, SSE ``chat.completion.chunk`` lines, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
``GET /v1/models`` lists ``models``. ``max_tokens`` (or
``max_completion_tokens``) truncates the reply (finish_reason ``length``).

Beyond text: ``Reply.tool_calls`` answers with tool calls (streamed in OpenAI's
fragments: a call's id and name first, then its arguments in pieces; finish_reason
``tool_calls``); ``n`` answers that many choices (``Reply.choices`` their texts;
streamed, the choices' chunks interleave); ``logprobs`` (and ``top_logprobs``)
get deterministic entries, one per delta (``FakeOpenAI.logprob``); usage
carries ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``. ``response_format``, ``seed``,
tools and image parts are recorded with the body (``FakeOpenAI.images``).

``POST /v1/embeddings`` answers deterministic unit vectors
(``FakeOpenAI.vector``) of ``dimensions`` (else ``embedding_dims``) floats per
input (a string, a list of strings, a token array or a list of them), as JSON
numbers or, with ``encoding_format: base64``, little-endian float32 in base64;
usage counts a string's words and an array's tokens.

Run standalone (benchmarks): ``python -m tests.fakes openai --port 9000
--tokens 50 --delay 0.02``.
"""
import array
import base64
import json
import math
import random
import sys
import time

from .base import FakeUpstream, Reply

ERROR_TYPES = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
               403: ("insufficient_permissions", None), 404: ("invalid_request_error", "model_not_found"),
               429: ("requests", "rate_limit_exceeded")}


def words(text):
    """A text as stream deltas: one word each, the space before it included."""
    parts = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(parts)]


class FakeOpenAI(FakeUpstream):
    """Fake OpenAI upstream. ``base_url`` ends in ``/v1`` like the real one."""

    prefix = "/v1"

    def __init__(self, api_key=None, models=("gpt-4o-mini", "gpt-4o"), embedding_dims=8, **defaults):
        super().__init__(api_key=api_key, **defaults)
        self.models = list(models)
        self.embedding_dims = embedding_dims

    # -- what tests compare with

    @staticmethod
    def vector(value, dims=8):
        """The embedding the fake gives ``value`` (a string or a token array): ``dims`` floats
        of unit length, each exactly a float32 (the same through JSON and base64)."""
        rng = random.Random(json.dumps(value))
        raw = [rng.uniform(-1, 1) for _ in range(dims)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        return array.array("f", [x / norm for x in raw]).tolist()

    @staticmethod
    def logprob(position, rank=0):
        """The logprob the fake gives the delta at ``position`` (``rank`` > 0: its
        ``rank``-th alternative in ``top_logprobs``, named ``alt<rank>``)."""
        return round(-0.01 * (position + 1) - rank, 6)

    def images(self, rec=None):
        """The ``image_url`` objects (``{"url", "detail"}``) in the messages of ``rec`` (default:
        the last request), in order."""
        rec = rec or self.last
        found = []
        for message in ((rec.body or {}).get("messages") or []) if rec else []:
            content = message.get("content")
            if isinstance(content, list):
                found.extend(p.get("image_url") for p in content if p.get("type") == "image_url")
        return found

    # -- answering

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
        if rec.method == "POST" and path == "/v1/embeddings":
            return self._embeddings(h, rec, reply)
        if rec.method != "POST" or path != "/v1/chat/completions":
            return self._error(h, Reply(status=404, error_message=f"Unknown path {path}"))
        body = rec.body or {}
        if reply.raw is not None:
            h.send_raw(reply.raw, bool(body.get("stream")))
            return True
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        choices = [self._choice(reply, i, limit) for i in range(int(body.get("n") or 1))]
        completion = sum(len(c["deltas"]) + len(c["pieces"]) for c in choices)
        usage = {"prompt_tokens": reply.prompt_tokens,
                 "completion_tokens": reply.completion_tokens if reply.completion_tokens is not None
                 else completion}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens, "audio_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens, "audio_tokens": 0}
        model = body.get("model", "gpt-4o-mini")
        logprobs = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._stream(h, reply, model, choices, logprobs, usage if include_usage else None)
        payload = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [self._whole(c, logprobs) for c in choices],
        }
        if reply.usage:
            payload["usage"] = usage
        h.send_json(200, payload, reply.headers)
        return True

    @staticmethod
    def _choice(reply, index, limit):
        """One choice's plan: text deltas, tool calls, argument pieces, finish reason."""
        if reply.tool_calls is not None and reply.chunks is None:
            deltas = []
        elif reply.choices and index < len(reply.choices):
            deltas = words(reply.choices[index])
        else:
            deltas = reply.deltas()
        finish = "stop"
        if limit and len(deltas) > limit:
            deltas, finish = deltas[:limit], "length"
        calls, pieces = [], []
        for position, call in enumerate(reply.tool_calls or ()):
            arguments = call.get("arguments", "{}")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            calls.append({"id": call.get("id") or f"call_fake_{index}_{position}", "type": "function",
                          "function": {"name": call["name"], "arguments": arguments}})
            size = max(1, reply.argument_piece)
            pieces.extend((position, arguments[i:i + size]) for i in range(0, len(arguments), size))
            finish = "tool_calls"
        return {"index": index, "deltas": deltas, "calls": calls, "pieces": pieces,
                "finish": reply.finish_reason or finish}

    def _entry(self, token, position, top):
        """A ``logprobs.content`` entry for the delta ``token`` at ``position``."""
        alternatives = [{"token": token, "logprob": self.logprob(position), "bytes": list(token.encode())}]
        alternatives += [{"token": f"alt{rank}", "logprob": self.logprob(position, rank),
                          "bytes": list(f"alt{rank}".encode())} for rank in range(1, top)]
        return {**alternatives[0], "top_logprobs": alternatives[:top]}

    def _whole(self, choice, logprobs):
        """A ``chat.completion`` choice."""
        text = "".join(choice["deltas"])
        message = {"role": "assistant", "content": text if text or not choice["calls"] else None,
                   "refusal": None}
        if choice["calls"]:
            message["tool_calls"] = choice["calls"]
        entries = None
        if logprobs is not None:
            entries = {"content": [self._entry(d, i, logprobs) for i, d in enumerate(choice["deltas"])],
                       "refusal": None}
        return {"index": choice["index"], "message": message, "logprobs": entries,
                "finish_reason": choice["finish"]}

    def _stream(self, h, reply, model, choices, logprobs, usage):
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model, "system_fingerprint": None}
        if usage is not None:
            base["usage"] = None

        def chunk(index, delta, finish_reason=None, entries=None):
            return json.dumps({**base, "choices": [
                {"index": index, "delta": delta, "finish_reason": finish_reason,
                 "logprobs": None if entries is None else {"content": entries, "refusal": None}}]})

        h.start_sse(reply.headers)
        for choice in choices:  # content null before tool calls only, as OpenAI sends it
            content = "" if choice["deltas"] or not choice["calls"] else None
            h.sse(chunk(choice["index"], {"role": "assistant", "content": content}))
        for i in range(max(len(c["deltas"]) for c in choices)):
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
            for choice in choices:
                if i < len(choice["deltas"]):
                    text = choice["deltas"][i]
                    entries = None if logprobs is None else [self._entry(text, i, logprobs)]
                    h.sse(chunk(choice["index"], {"content": text}, entries=entries))
        for choice in choices:
            started = set()
            for position, piece in choice["pieces"]:
                fragment = {"index": position, "function": {"arguments": piece}}
                if position not in started:  # a call's first fragment: its id and name
                    started.add(position)
                    call = choice["calls"][position]
                    h.sse(chunk(choice["index"], {"tool_calls": [
                        {"index": position, "id": call["id"], "type": "function",
                         "function": {"name": call["function"]["name"], "arguments": ""}}]}))
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                h.sse(chunk(choice["index"], {"tool_calls": [fragment]}))
            for position, call in enumerate(choice["calls"]):
                if position not in started:  # a call without arguments: its first fragment only
                    h.sse(chunk(choice["index"], {"tool_calls": [
                        {"index": position, "id": call["id"], "type": "function",
                         "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            h.sse(chunk(choice["index"], {}, choice["finish"]))
        if usage is not None and reply.usage:
            h.sse(json.dumps({**base, "choices": [], "usage": usage}))
        h.sse("[DONE]")
        h.end_sse()
        return True

    def _embeddings(self, h, rec, reply):
        body = rec.body or {}
        if reply.raw is not None:
            h.send_raw(reply.raw, False)
            return True
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs
                                       and all(isinstance(t, int) for t in inputs)):
            inputs = [inputs]  # one string, one token array
        if not isinstance(inputs, list) or not inputs or not all(
                (isinstance(i, str) and i) or (isinstance(i, list) and i and all(isinstance(t, int) for t in i))
                for i in inputs):
            return self._error(h, Reply(status=400, error_message="'$.input' is invalid."))
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return self._error(h, Reply(status=400, error_message="'encoding_format' is invalid."))
        dims = body.get("dimensions") or self.embedding_dims
        if not isinstance(dims, int) or dims < 1:
            return self._error(h, Reply(status=400, error_message="'dimensions' is invalid."))
        data = []
        for index, value in enumerate(inputs):
            vector = self.vector(value, dims)
            if encoding == "base64":
                packed = array.array("f", vector)
                if sys.byteorder == "big":
                    packed.byteswap()
                vector = base64.b64encode(packed.tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        payload = {"object": "list", "data": data, "model": body.get("model", "text-embedding-3-small")}
        if reply.usage:
            tokens = sum(len(v) if isinstance(v, list) else len(v.split()) for v in inputs)
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        h.send_json(200, payload, reply.headers)
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

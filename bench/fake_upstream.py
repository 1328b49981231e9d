"""A fast fake OpenAI upstream for benchmarks (gevent WSGI; JSON and SSE).

    python -m bench.fake_upstream --port 9100 [--tokens 50] [--delay 0.02]

``POST /v1/chat/completions`` answers a fixed reply of ``--tokens`` tokens;
streams send one chunk per token, ``--delay`` seconds apart, with usage.
Listens on 127.0.0.1 only.
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001

import argparse
import json
import socket
import time

from gevent.pywsgi import WSGIHandler, WSGIServer


class NoDelayHandler(WSGIHandler):
    """Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus
    delayed ACKs add ~40 ms to every response."""

    def handle(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()


def make_app(tokens, delay):
    words = [f"w{i}" for i in range(tokens)]
    text = " ".join(words)
    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens},
    }).encode()

    def chunk(delta, finish=None):
        return ("data: " + json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                                       "model": "gpt-bench", "choices": [{"index": 0, "delta": delta,
                                                                          "finish_reason": finish}]}) + "\n\n").encode()

    def stream():
        yield chunk({"role": "assistant", "content": ""})
        for i, w in enumerate(words):
            if delay:
                time.sleep(delay)
            yield chunk({"content": w if i == 0 else " " + w})
        yield chunk({}, "stop")
        yield ("data: " + json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                                      "model": "gpt-bench", "choices": [],
                                      "usage": {"prompt_tokens": 10, "completion_tokens": tokens,
                                                "total_tokens": 10 + tokens}}) + "\n\n").encode()
        yield b"data: [DONE]\n\n"

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path.endswith("/models"):
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"object":"list","data":[{"id":"gpt-bench","object":"model"}]}']
        length = int(environ.get("CONTENT_LENGTH") or 0)
        req = json.loads(environ["wsgi.input"].read(length) or b"{}")
        if req.get("stream"):
            start_response("200 OK", [("Content-Type", "text/event-stream")])
            return stream()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    WSGIServer(("127.0.0.1", args.port), make_app(args.tokens, args.delay), log=None, backlog=4096,
              handler_class=NoDelayHandler).serve_forever()


if __name__ == "__main__":
    main()

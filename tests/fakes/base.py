"""The machinery shared by the fake upstreams: a threaded HTTP/1.1 server
on 127.0.0.1, a per-request script, and a record of what each request was.

See ``tests/fakes/__init__.py`` for the public API.
"""
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


@dataclass
class Reply:
    """What a fake upstream answers to one request (every field optional).

    - ``text``: the reply; streamed one word per delta unless ``chunks`` is given.
    - ``chunks``: the exact stream deltas (list of str).
    - ``prompt_tokens`` / ``completion_tokens``: reported usage (completion
      defaults to the number of deltas). ``usage=False`` reports none (OpenAI:
      no usage chunk and no ``usage`` in JSON; Anthropic: zeros are not sent,
      the usage objects are omitted where the format allows).
    - ``status`` (>= 400): answer an error in the API's error shape, with
      ``error_message`` / ``error_type``; ``retry_after`` sets ``Retry-After``.
    - ``headers``: extra response headers.
    - ``break_after``: stream only; send that many deltas, then drop the
      connection mid-body (no terminating chunk, no ``[DONE]``/``message_stop``).
    - ``hang``: seconds to go silent (``float("inf")``: until the server stops).
      With ``hang_after=None`` nothing at all is sent (no headers): a server
      that never answers. With ``hang_after=N`` (stream) it stalls after N deltas.
    - ``chunk_delay``: seconds between stream deltas (use it to observe a
      client that goes away mid-stream).
    - ``error_event``: after ``error_event_after`` deltas send an in-stream
      error ``{"type": ..., "message": ...}`` after HTTP 200 (Anthropic: an SSE
      ``error`` event; OpenAI/vLLM: a ``data: {"error": {...}}`` line).
    - ``raw``: answer HTTP 200 with this text instead: the JSON body, or for a
      stream one SSE ``data:`` line then the end (malformed replies).
    - ``tool_calls``: answer with these calls, ``[{"name", "arguments" (a JSON string or a
      dict), "id" (optional)}]``, finish reason ``tool_calls``; the text is then only what
      ``chunks`` gives (none by default). Streamed, each call's first fragment has its id and
      name, then its arguments come ``argument_piece`` characters at a time.
    - ``choices``: the text of each choice (``n`` > 1), one word per delta, instead of
      ``text``/``chunks``; choices past the list answer those.
    - ``cached_tokens`` / ``reasoning_tokens``: usage details (of the prompt, of the completion).
    - ``finish_reason``: the finish reason to report instead of the computed one.
    """

    text: str = "Hello from the fake upstream."
    chunks: Optional[list] = None
    prompt_tokens: int = 9
    completion_tokens: Optional[int] = None
    usage: bool = True
    status: int = 200
    error_message: Optional[str] = None
    error_type: Optional[str] = None
    retry_after: Optional[str] = None
    headers: dict = field(default_factory=dict)
    break_after: Optional[int] = None
    hang: float = 0.0
    hang_after: Optional[int] = None
    chunk_delay: float = 0.0
    error_event: Optional[dict] = None
    error_event_after: int = 1
    raw: Optional[str] = None
    tool_calls: Optional[list] = None
    argument_piece: int = 4
    choices: Optional[list] = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: Optional[str] = None

    def deltas(self):
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


@dataclass
class Recorded:
    """One request the fake received.

    ``client_gone`` is set when writing the reply failed because the client
    had closed the connection (a stream abandoned midway); ``finished`` when
    the reply was sent completely.
    """

    method: str
    path: str
    headers: dict
    body: Optional[dict]
    client_gone: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def json(self):
        return self.body


class ClientGone(Exception):
    """The client closed the connection while we were writing."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"
    disable_nagle_algorithm = True  # else headers + body writes cost a 40 ms delayed ACK

    def log_message(self, *args):  # quiet
        pass

    # -- helpers used by the API-specific handlers

    def send_raw(self, raw, stream):
        """A 200 whose body (or single SSE data line) is ``raw`` verbatim."""
        if stream:
            self.start_sse()
            self.sse(raw)
            self.end_sse()
        else:
            self.send_json(200, None, raw=raw)

    def send_json(self, status, payload, headers=None, raw=None):
        data = raw.encode() if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._write(data)

    def start_sse(self, headers=None):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._flush()

    def sse(self, data, event=None):
        text = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
        raw = text.encode()
        self._write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self._flush()

    def end_sse(self):
        self._write(b"0\r\n\r\n")
        self._flush()

    def drop_connection(self):
        """Cut the connection mid-body (the client sees an incomplete chunked read)."""
        self._flush()
        self.close_connection = True

    def _write(self, data):
        try:
            self.wfile.write(data)
        except OSError as exc:
            raise ClientGone() from exc

    def _flush(self):
        try:
            self.wfile.flush()
        except OSError as exc:
            raise ClientGone() from exc

    def sleep(self, seconds):
        """Sleep, waking early when the server stops."""
        self.server.fake._stopping.wait(None if seconds == float("inf") else seconds)

    # -- dispatch

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        fake = self.server.fake
        fake._record(rec)
        reply = fake._next_reply()
        try:
            if reply.hang and reply.hang_after is None:
                self.sleep(reply.hang)
                self.close_connection = True
                return
            if fake.respond(self, rec, reply):
                rec.finished.set()
        except ClientGone:
            rec.client_gone.set()
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # listen backlog: many clients connect at once

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], OSError):  # resets by clients are normal here
            super().handle_error(request, client_address)


class FakeUpstream:
    """Base of FakeOpenAI / FakeAnthropic: lifecycle, script, request log."""

    prefix = ""

    def __init__(self, api_key=None, **defaults):
        self.api_key = api_key
        self.default = Reply(**defaults)
        self._once = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests = []
        self._server = None
        self._thread = None

    # -- lifecycle

    def start(self, port=0):
        """Listen on 127.0.0.1 and ``port`` (0: a free one), serve in a daemon thread; return self."""
        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving; wakes handlers that hang."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        """``http://127.0.0.1:<port>`` (no path)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self):
        """The URL to give the SDK as ``base_url``."""
        return self.url + self.prefix

    # -- scripting

    def script(self, **fields):
        """Answer every following request this way (fields of ``Reply``; resets the default)."""
        with self._lock:
            self.default = Reply(**fields)

    def script_once(self, **fields):
        """Answer the next request this way (queued FIFO, before the default)."""
        with self._lock:
            self._once.append(Reply(**fields))

    def _next_reply(self):
        with self._lock:
            return self._once.popleft() if self._once else replace(self.default)

    def _record(self, rec):
        with self._lock:
            self.requests.append(rec)

    @property
    def last(self):
        """The most recent ``Recorded`` request (None if none)."""
        with self._lock:
            return self.requests[-1] if self.requests else None

    def reset(self):
        """Forget recorded requests and queued replies."""
        with self._lock:
            self.requests.clear()
            self._once.clear()

    def serve_forever_cli(self, port):
        """Serve until SIGINT/SIGTERM, printing ``base_url`` first (standalone mode)."""
        import signal

        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        self.start(port=port)
        print(self.base_url, flush=True)
        try:
            signal.sigwait(signals)
        finally:
            self.stop()

    def respond(self, handler, rec, reply):  # pragma: no cover - abstract
        """Answer one request; return True when the reply was sent completely."""
        raise NotImplementedError


def wait_until(predicate, timeout=3.0, interval=0.01):
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)

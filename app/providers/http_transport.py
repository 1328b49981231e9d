"""The HTTP client under the provider SDKs: an ``httpx.Client`` on a bounded transport.

``http_client(config, timeout)`` is what a plugin passes to its SDK as ``http_client``. The
``PROVIDER_HTTP_CLIENT`` setting (env ``CHATPORT_PROVIDER_HTTP_CLIENT``) picks its transport:

- ``"fast"`` (the default): ``FastTransport``, HTTP/1.1 on its own sockets (gevent's, under
  gevent; TLS for ``https`` with a context made by ``httpx.create_ssl_context``). Responses
  are parsed and framed by llhttp, the C parser of Node.js, through ``geventhttpclient``'s
  binding: it refuses what RFC 9112 calls malformed (conflicting or repeated
  ``Content-Length``, ``Transfer-Encoding`` with ``Content-Length``, chunk sizes that are not
  plain hex, bare LF line ends, invalid header characters). Request headers are checked with
  h11's grammar before anything is sent, so a CR or LF in a configured key or header is refused
  and never splits the request. Idle connections are kept per host, up to
  ``PROVIDER_POOL_MAX_PER_HOST`` open at once (a request beyond it waits for one, up to the
  pool timeout), and are dropped after ``PROVIDER_KEEPALIVE_EXPIRY`` seconds idle or when the
  peer has closed them (a zero-timeout ``poll``). Proxies are httpx's own transports mounted
  for their URLs by ``httpx.Client``.
- ``"httpx"``: httpx's own ``HTTPTransport`` (httpcore and h11) inside ``GuardedTransport``,
  which applies the same body caps and deadlines around it and also refuses a response with
  both ``Transfer-Encoding`` and ``Content-Length`` (h11 reads the chunks). Its head is capped
  by h11's own limit, and chunk sizes are not seen there (an event stream is bounded by its
  lines). Its deadlines interrupt a wait under gevent (``gevent.Timeout``, with sockets
  patched, as in a worker); without it they are checked as each piece arrives.

Caps and deadlines (``Limits``, read from the settings):

- a response head is at most ``PROVIDER_MAX_HEAD`` bytes; a non-streamed body (one that is
  not ``text/event-stream``) at most ``PROVIDER_MAX_BODY``, a declared ``Content-Length`` or
  chunk size above it is refused before its bytes are read; in an event stream, at most
  ``PROVIDER_MAX_LINE`` bytes arrive without a line end. Over a cap: ``httpx.RemoteProtocolError``.
- a provider call made inside ``provider_call(stream=...)`` has one clock for all its
  attempts (the SDKs retry): a non-streamed call gets its whole reply within
  ``PROVIDER_DEADLINE`` seconds; a streamed one its response head within
  ``PROVIDER_FIRST_BYTE_TIMEOUT``, then at most ``PROVIDER_STREAM_IDLE`` seconds between line
  ends (a stream may last long; ``STREAM_TIMEOUT`` bounds a whole turn elsewhere). A request
  outside a call scope is a call of its own. Past a deadline: ``httpx.ReadTimeout``. Interim
  ``1xx`` responses and a body trickling in byte by byte are bounded by these deadlines, not
  by the read timeout (which bounds one silence).

Errors are the httpx exceptions the SDKs map. Content codings are decoded by httpx.

``http_client`` gives a ``ProviderClient`` (an ``httpx.Client`` whose ``send`` goes straight to
the transport) unless a proxy is configured in the environment or ``"httpx"`` is asked for,
which get a plain ``httpx.Client``.

APIs used that are not public, and why: ``geventhttpclient._parser.HTTPResponseParser``, the
llhttp binding, which ``geventhttpclient`` exposes only through this module (typed in its
``_parser.pyi``); its ``_on_*`` callbacks are the binding's protocol. Nothing private of httpx
is used. In the plugins, the SDK clients override private hooks that have no public
equivalent: ``_should_retry`` (``NoRetryOn429``: a 429 is passed on, not slept on), and in the
openai plugin ``platform_headers`` / ``_prepare_url`` (headers and URLs built once) and
``FinalRequestOptions`` / ``model_copy`` (a request-options template copied per call).
"""
import contextvars
import datetime
import re
import select
import socket
import threading
import time
import urllib.request

import httpx
from geventhttpclient._parser import HTTPParseError, HTTPResponseParser

READ_SIZE = 65536
_CRLF = b"\r\n"
MIB = 1024 * 1024


class Limits:
    """What a transport buffers and how long a provider call may take (see the module docstring)."""

    __slots__ = ("max_head", "max_body", "max_line", "deadline", "first_byte", "stream_idle",
                 "keepalive_expiry", "max_per_host")

    def __init__(self, max_head=65536, max_body=16 * MIB, max_line=MIB, deadline=120, first_byte=60,
                 stream_idle=60, keepalive_expiry=30, max_per_host=1000):
        self.max_head, self.max_body, self.max_line = (int(float(v)) for v in (max_head, max_body, max_line))
        self.deadline, self.first_byte, self.stream_idle = float(deadline), float(first_byte), float(stream_idle)
        self.keepalive_expiry, self.max_per_host = float(keepalive_expiry), int(float(max_per_host))


# setting name -> Limits field; each also read from CHATPORT_<name>
LIMIT_SETTINGS = {
    "PROVIDER_MAX_HEAD": "max_head", "PROVIDER_MAX_BODY": "max_body", "PROVIDER_MAX_LINE": "max_line",
    "PROVIDER_DEADLINE": "deadline", "PROVIDER_FIRST_BYTE_TIMEOUT": "first_byte",
    "PROVIDER_STREAM_IDLE": "stream_idle", "PROVIDER_KEEPALIVE_EXPIRY": "keepalive_expiry",
    "PROVIDER_POOL_MAX_PER_HOST": "max_per_host",
}


def limits_from(config):
    """The ``Limits`` the settings ask for (unset ones keep their defaults)."""
    from app.providers.helpers import setting

    values = {}
    for name, field in LIMIT_SETTINGS.items():
        value = setting(config, name, env="CHATPORT_" + name)
        if value is not None:
            values[field] = value
    return Limits(**values)


def http_client(config, timeout):
    """The ``httpx.Client`` a provider SDK sends its requests with, as the settings ask."""
    from app.providers.helpers import setting

    kind = str(setting(config, "PROVIDER_HTTP_CLIENT", "fast", env="CHATPORT_PROVIDER_HTTP_CLIENT")).strip().lower()
    limits = limits_from(config)
    if kind == "fast":
        transport = FastTransport(limits=limits)
    elif kind == "httpx":
        transport = GuardedTransport(httpx.HTTPTransport(limits=httpx.Limits(
            max_connections=limits.max_per_host, max_keepalive_connections=limits.max_per_host,
            keepalive_expiry=limits.keepalive_expiry)), limits)
    else:
        raise ValueError(f"PROVIDER_HTTP_CLIENT must be 'fast' or 'httpx', not {kind!r}")
    if kind == "httpx" or urllib.request.getproxies():
        # httpx as it is: with a proxy from the environment mounted for its URLs
        return httpx.Client(transport=transport, timeout=timeout)
    return ProviderClient(transport=transport, timeout=timeout)


class ProviderClient(httpx.Client):
    """An ``httpx.Client`` whose ``send`` hands the request to its transport and returns the
    response: no cookie jar, auth flow, redirect following, event hooks or proxies from the
    environment, which the provider SDKs do not use (they set their own auth header and treat
    a redirect as an error), and whose cookie handling alone costs more CPU than the transport.
    Requests are built as by ``httpx.Client`` (``build_request``: base URL, headers, timeouts);
    streaming, reading and closing behave as there. Public httpx API only."""

    def __init__(self, *, transport, timeout):
        super().__init__(transport=transport, timeout=timeout, trust_env=False)
        self._provider_transport = transport

    def send(self, request, *, stream=False, auth=None, follow_redirects=None):
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if "timeout" not in request.extensions:
            request.extensions["timeout"] = self.timeout.as_dict()
        started = time.perf_counter()
        response = self._provider_transport.handle_request(request)
        response.request = request
        try:
            if not stream:
                response.read()
            response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
            return response
        except BaseException:
            response.close()
            raise


# ---------------------------------------------------------------- call deadlines

_CALL = contextvars.ContextVar("chatport_provider_call", default=None)


class provider_call:  # noqa: N801 - used as a function: ``with provider_call(stream=True):``
    """Every request sent inside (the SDK's first attempt and its retries) shares one clock,
    started here: see the module docstring for what it bounds."""

    __slots__ = ("_stream", "_token")

    def __init__(self, stream=False):
        self._stream = bool(stream)

    def __enter__(self):
        self._token = _CALL.set((time.monotonic(), self._stream))
        return self

    def __exit__(self, *exc):
        _CALL.reset(self._token)
        return False


def _call_clock():
    """``(start, stream)`` of the current provider call, or of a call that starts now."""
    return _CALL.get() or (time.monotonic(), False)


def _past_deadline(request, what):
    return httpx.ReadTimeout(f"no {what} within the provider deadline", request=request)


def _over_cap(request, what, setting_name, cap):
    return httpx.RemoteProtocolError(f"the upstream sent {what} over {setting_name} ({cap} bytes)",
                                     request=request)


class _BodyRules:
    """The caps and deadlines on a response body, checked on each piece as it arrives."""

    __slots__ = ("request", "limits", "sse", "deadline", "total", "pending", "last_line")

    def __init__(self, request, limits, headers_sse, start):
        self.request, self.limits, self.sse = request, limits, headers_sse
        self.deadline = start + limits.deadline  # for a body that is not an event stream
        self.total = 0
        self.pending = 0  # bytes since the last line end, in an event stream
        self.last_line = time.monotonic()

    def read_deadline(self):
        """When the next piece must have arrived by."""
        if self.sse:
            return self.last_line + self.limits.stream_idle
        return self.deadline

    def check(self, piece):
        limits = self.limits
        if self.sse:
            end = max(piece.rfind(b"\n"), piece.rfind(b"\r"))
            now = time.monotonic()
            if end < 0:
                self.pending += len(piece)
                if self.pending > limits.max_line:
                    raise _over_cap(self.request, "a line", "PROVIDER_MAX_LINE", limits.max_line)
                if now > self.last_line + limits.stream_idle:
                    raise _past_deadline(self.request, "line end of the event stream")
            else:
                self.pending = len(piece) - end - 1
                self.last_line = now
            return
        self.total += len(piece)
        if self.total > limits.max_body:
            raise _over_cap(self.request, "a body", "PROVIDER_MAX_BODY", limits.max_body)
        if time.monotonic() > self.deadline:
            raise _past_deadline(self.request, "whole reply")

    def check_declared(self, length):
        """A declared Content-Length, or the remainder of a chunk, before its bytes are read."""
        if length > self.limits.max_body:
            raise _over_cap(self.request, "a declared body or chunk", "PROVIDER_MAX_BODY", self.limits.max_body)


_EVENT_STREAM = {}  # Content-Type value -> whether it is text/event-stream


def _is_event_stream(content_type):
    known = _EVENT_STREAM.get(content_type)
    if known is None:
        if len(_EVENT_STREAM) >= 256:
            _EVENT_STREAM.clear()
        text = content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type
        known = _EVENT_STREAM[content_type] = text.split(";", 1)[0].strip().lower() == "text/event-stream"
    return known


# ---------------------------------------------------------------- requests

# RFC 9110 as h11 checks it: a header name is a token; a value is visible characters (and
# obs-text) with single spaces or tabs between them, never CR, LF or NUL.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_VALID_HEADERS = set()  # (name, value) pairs checked already: a client sends the same ones again


def _request_head(request):
    """The request line and headers, refused with ``httpx.LocalProtocolError`` if any header
    name or value (or the method or target) is not valid HTTP: nothing is sent then. The error
    names the header, never its value (it may be a key)."""
    valid = _VALID_HEADERS
    method, target = request.method.encode("ascii"), request.url.raw_path
    line = (method, target)
    if line not in valid:
        if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
            raise httpx.LocalProtocolError("the request line has characters HTTP does not allow", request=request)
        valid.add(line)
    head = [b"%s %s HTTP/1.1" % line]
    has_length = False
    for pair in request.headers.raw:
        name, value = pair
        if not has_length and name.lower() in (b"content-length", b"transfer-encoding"):
            has_length = True
        head.append(name + b": " + value)
        if pair in valid:
            continue
        if not _TOKEN.fullmatch(name):
            raise httpx.LocalProtocolError(f"request header name {name[:40]!r} is not an HTTP token",
                                           request=request)
        if not _VALUE.fullmatch(value):
            raise httpx.LocalProtocolError(
                f"request header {name.decode('ascii')!r} has a character HTTP does not allow in a "
                "value (CR, LF, NUL, another control character or leading/trailing space)", request=request)
        if len(valid) >= 1024:
            valid.clear()
        valid.add(pair)
    return head, has_length


# ---------------------------------------------------------------- the fast transport


def _real_poll():
    try:
        from gevent import monkey

        return monkey.get_original("select", "poll")
    except ImportError:  # pragma: no cover - gevent is a dependency
        return select.poll


_POLL = _real_poll()
_POLLIN = select.POLLIN


def is_reusable(sock):
    """Whether an idle connection is still open, asked of the OS with a zero-timeout poll.

    Readable before a request means the peer closed (or sent something unasked): not reused.
    The real ``poll``, not gevent's (which goes through the hub) nor ``select`` (which fails
    above descriptor 1,024, where a worker holding a thousand streams has its sockets)."""
    try:
        poller = _POLL()
        poller.register(sock, _POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class _Conn:
    """One connection: its socket, its pool, when it went idle."""

    __slots__ = ("sock", "pool", "key", "timeout", "idle_since", "closed")

    def __init__(self, sock, pool, key):
        self.sock, self.pool, self.key = sock, pool, key
        self.timeout = sock.gettimeout()
        self.idle_since = 0.0
        self.closed = False

    def settimeout(self, timeout):
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.pool.forget(self.key)


class _Pool:
    """Connections per ``(scheme, host, port)``: at most ``max_per_host`` open, the idle ones
    most recently used last, each dropped once idle for ``expiry`` seconds."""

    def __init__(self, max_per_host, expiry):
        self.max_per_host, self.expiry = max_per_host, expiry
        self.idle = {}
        self.open = {}
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.waiting = 0
        self.closed = False

    def take(self, key, wait, request):
        """An idle connection for ``key``, or None when a new one may be opened (counted as
        open from now); waits up to ``wait`` seconds while ``max_per_host`` are open."""
        stale = []
        with self.lock:
            try:
                until = None
                while True:
                    idle = self.idle.get(key)
                    now = time.monotonic()
                    while idle:
                        conn = idle.pop()
                        if now - conn.idle_since <= self.expiry and is_reusable(conn.sock):
                            return conn
                        conn.closed = True
                        stale.append(conn)
                        self._forget_locked(key)
                    count = self.open.get(key, 0)
                    if count < self.max_per_host:
                        self.open[key] = count + 1
                        return None
                    if until is None:
                        until = now + (wait if wait is not None else 1e9)
                    if now >= until:
                        raise httpx.PoolTimeout(
                            f"all {self.max_per_host} connections to {key[1]}:{key[2]} are busy "
                            "(PROVIDER_POOL_MAX_PER_HOST)", request=request)
                    self.waiting += 1
                    try:
                        self.cond.wait(until - now)
                    finally:
                        self.waiting -= 1
            finally:
                for conn in stale:
                    try:
                        conn.sock.close()
                    except OSError:
                        pass

    def put(self, conn):
        with self.lock:
            if not self.closed:
                conn.idle_since = time.monotonic()
                self.idle.setdefault(conn.key, []).append(conn)
                if self.waiting:
                    self.cond.notify()
                return
        conn.close()

    def _forget_locked(self, key):
        count = self.open.get(key, 0) - 1
        if count > 0:
            self.open[key] = count
        else:
            self.open.pop(key, None)
        if self.waiting:
            self.cond.notify()

    def forget(self, key):
        with self.lock:
            self._forget_locked(key)

    def close(self):
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class _Parser(HTTPResponseParser):
    """llhttp's events for one response (and the interim ones before it): the head's
    headers as bytes, the body's pieces as they are parsed."""

    def __init__(self, skip_body):
        super().__init__()
        self.skip_body = skip_body  # a HEAD request: the head ends the response
        self.reason = ""
        self.headers = []
        self.field = self.value = None
        self.body = []
        self.headers_done = self.complete = False

    def _on_message_begin(self):
        self.headers = []
        self.field = self.value = None
        self.headers_done = self.complete = False

    def _on_status(self, reason):
        self.reason = reason

    def _on_header_field(self, text):
        if self.headers_done:
            return  # trailers: ignored
        if self.value is not None:
            self.headers.append((self.field.encode("latin-1"), self.value.encode("latin-1")))
            self.field = self.value = None
        self.field = text if self.field is None else self.field + text

    def _on_header_value(self, text):
        if not self.headers_done:
            self.value = text if self.value is None else self.value + text

    def _on_headers_complete(self):
        if self.field is not None:
            self.headers.append((self.field.encode("latin-1"), (self.value or "").encode("latin-1")))
        self.field = self.value = None
        self.headers_done = True
        return self.skip_body

    def _on_body(self, data):
        self.body.append(bytes(data))

    def _on_message_complete(self):
        self.complete = True


class _Reader:
    """Reads from a connection into its parser, each read bounded by the read timeout and by
    a deadline."""

    __slots__ = ("conn", "parser", "request", "read_timeout")

    def __init__(self, conn, parser, request, read_timeout):
        self.conn, self.parser, self.request, self.read_timeout = conn, parser, request, read_timeout

    def read(self, deadline, what):
        """Feed the parser what arrives next; ``(data, reusable)``: the bytes read (b"" at the
        connection's end), and False if the server sent more than one response's bytes."""
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise _past_deadline(self.request, what)
        read_timeout = self.read_timeout
        by_deadline = read_timeout is None or wait < read_timeout
        self.conn.settimeout(wait if by_deadline else read_timeout)
        try:
            data = self.conn.sock.recv(READ_SIZE)
        except (socket.timeout, TimeoutError) as exc:
            if by_deadline:
                raise _past_deadline(self.request, what) from exc
            raise httpx.ReadTimeout(f"timed out waiting for the {what}", request=self.request) from exc
        except OSError as exc:
            raise httpx.ReadError(f"reading the response failed: {exc}", request=self.request) from exc
        try:
            self.parser.feed(data)
        except HTTPParseError as exc:
            if not data:
                raise httpx.RemoteProtocolError(f"the server closed the connection before the {what}'s end",
                                                request=self.request) from None
            if not self.parser.complete:  # bytes after a complete response: the connection is not reused
                raise httpx.RemoteProtocolError(f"malformed response: {exc.args[0] if exc.args else exc}",
                                                request=self.request) from None
            return data, False
        return data, True


class _Body(httpx.SyncByteStream):
    """A response body read from its connection; the connection goes back to the pool once
    the whole body has been read and the stream is closed."""

    def __init__(self, reader, rules, keep):
        self._reader = reader
        self._rules = rules
        self._keep = keep  # the server lets the connection serve another request
        self._closed = False
        self._started = False

    def __iter__(self):
        if self._started:
            raise httpx.StreamConsumed()
        self._started = True
        reader, rules = self._reader, self._rules
        parser = reader.parser
        while True:
            if parser.body:
                piece = parser.body[0] if len(parser.body) == 1 else b"".join(parser.body)
                parser.body.clear()
                rules.check(piece)
                yield piece
            if parser.complete:
                return
            rules.check_declared(parser.get_remaining_content_length())
            data, reusable = reader.read(rules.read_deadline(), "rest of the reply")
            if not reusable:
                self._keep = False
            if not data and not parser.complete:
                raise httpx.RemoteProtocolError("the server closed the connection before the body's end",
                                                request=reader.request)

    def _read_what_arrived(self, budget=65536):
        """Read the rest of the body if it has already arrived, without waiting for more.

        A provider stops reading at ``data: [DONE]``; the body's last, empty chunk follows at
        once. Reading it here lets the connection serve the next request instead of being
        closed (and reopened, with a TLS handshake, for the next stream). At most ``budget``
        bytes: a body still streaming is closed."""
        conn, parser = self._reader.conn, self._reader.parser
        try:
            conn.settimeout(0)
            while not parser.complete and budget > 0:
                data = conn.sock.recv(READ_SIZE)
                if not data:
                    return
                budget -= len(data)
                parser.feed(data)
                parser.body.clear()
        except (OSError, HTTPParseError, ValueError):
            pass  # would block (not all there yet), or broken: the connection gets closed

    def close(self):
        if self._closed:
            return
        self._closed = True
        parser, conn = self._reader.parser, self._reader.conn
        if not parser.complete:
            self._read_what_arrived()
        if parser.complete and self._keep and parser.should_keep_alive():
            conn.pool.put(conn)
        else:
            conn.close()  # closed early (a client that went away): tells the upstream to stop


class FastTransport(httpx.BaseTransport):
    """HTTP/1.1 with keep-alive connections per host, for the provider SDKs' clients."""

    def __init__(self, limits=None, verify=True):
        self.limits = limits or Limits()
        self._pool = _Pool(self.limits.max_per_host, self.limits.keepalive_expiry)
        self._verify = verify
        self._ssl = None

    def _ssl_context(self):
        if self._ssl is None:
            ctx = httpx.create_ssl_context(verify=self._verify)  # as httpx itself would
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def _connect(self, key, timeouts, request):
        scheme, host, port = key
        timeout = timeouts.get("connect")
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except (socket.timeout, TimeoutError) as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
        except (socket.timeout, TimeoutError) as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"timed out in the TLS handshake with {host}:{port}", request=request) from exc
        except OSError as exc:  # ssl.SSLError is one
            sock.close()
            raise httpx.ConnectError(f"TLS with {host}:{port} failed: {exc}", request=request) from exc
        return _Conn(sock, self._pool, key)

    def handle_request(self, request):
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        start, stream = _call_clock()
        limits = self.limits
        head, has_length = _request_head(request)  # refused here, before any connection
        head_deadline = start + (limits.first_byte if stream else limits.deadline)
        if time.monotonic() >= head_deadline:  # a retry after the call's deadline: not sent
            raise _past_deadline(request, "response")
        body = request.read()
        if body and not has_length:
            head.append(b"Content-Length: %d" % len(body))
        payload = _CRLF.join(head) + b"\r\n\r\n" + body
        conn = self._pool.take(key, timeouts.get("pool"), request)
        if conn is None:
            try:
                conn = self._connect(key, timeouts, request)
            except BaseException:
                self._pool.forget(key)
                raise
        try:
            conn.settimeout(timeouts.get("write"))
            try:
                sent = conn.sock.send(payload)  # all of it, nearly always: one system call
                if sent < len(payload):
                    conn.sock.sendall(memoryview(payload)[sent:])
            except (socket.timeout, TimeoutError) as exc:
                raise httpx.WriteTimeout("timed out sending the request", request=request) from exc
            except OSError as exc:
                raise httpx.WriteError(f"sending the request failed: {exc}", request=request) from exc
            parser = _Parser(request.method == "HEAD")
            reader = _Reader(conn, parser, request, timeouts.get("read"))
            head_bytes, keep = 0, True
            while not parser.headers_done or parser.get_code() < 200:
                if parser.complete:  # an interim response (100 Continue, 103 Early Hints): the final one follows
                    head_bytes = 0
                data, keep = reader.read(head_deadline, "response")
                if not keep and not (parser.headers_done and parser.get_code() >= 200):
                    raise httpx.RemoteProtocolError("malformed response after an interim one", request=request)
                if not data:
                    raise httpx.RemoteProtocolError(
                        "the server disconnected " + ("in the response head" if head_bytes else "without a response"),
                        request=request)
                head_bytes += len(data)
                if not parser.headers_done and head_bytes > limits.max_head:
                    raise _over_cap(request, "a response head", "PROVIDER_MAX_HEAD", limits.max_head)
            status, headers = parser.get_code(), parser.headers
            content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
            rules = _BodyRules(request, limits, _is_event_stream(content_type), start)
            if not parser.complete:
                rules.check_declared(parser.get_remaining_content_length())
        except BaseException:
            conn.close()
            raise
        version = parser.get_http_version()
        return httpx.Response(status_code=status, headers=headers, stream=_Body(reader, rules, keep),
                              extensions={"http_version": b"HTTP/" + version.encode("ascii"),
                                          "reason_phrase": parser.reason.encode("latin-1")})

    def close(self):
        self._pool.close()


# ---------------------------------------------------------------- httpx's own transport, bounded


class _GuardedStream(httpx.SyncByteStream):
    def __init__(self, stream, rules, timeout):
        self._stream, self._rules, self._timeout = stream, rules, timeout

    def __iter__(self):
        rules = self._rules
        for piece in _bounded(self._stream, rules.read_deadline, self._timeout, rules.request):
            rules.check(piece)
            yield piece

    def close(self):
        self._stream.close()


def _bounded(iterable, deadline, timeout_class, request):
    """The items of ``iterable``, each within ``deadline()`` when gevent can interrupt the
    wait for it (its sockets are patched); else as the inner transport's read timeout allows."""
    iterator = iter(iterable)
    while True:
        with timeout_class(deadline() - time.monotonic(), request):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


class _NoTimeout:
    def __init__(self, _seconds, _request):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _GeventDeadline:
    """``gevent.Timeout`` raising ``httpx.ReadTimeout`` (a deadline already past fires at once)."""

    def __init__(self, seconds, request):
        import gevent

        self._timeout = gevent.Timeout(max(seconds, 0.001))
        self._request = request

    def __enter__(self):
        self._timeout.start()
        return self

    def __exit__(self, kind, exc, tb):
        self._timeout.close()
        if exc is self._timeout:
            raise _past_deadline(self._request, "reply") from None
        return False


def _deadline_class():
    try:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            return _GeventDeadline
    except ImportError:  # pragma: no cover - gevent is a dependency
        pass
    return _NoTimeout


class GuardedTransport(httpx.BaseTransport):
    """Another transport (httpx's own) with ``Limits``' caps and deadlines around it."""

    def __init__(self, inner, limits=None):
        self._inner = inner
        self.limits = limits or Limits()

    def handle_request(self, request):
        start, stream = _call_clock()
        limits = self.limits
        timeout = _deadline_class()
        _request_head(request)
        head_deadline = start + (limits.first_byte if stream else limits.deadline)
        if time.monotonic() >= head_deadline:  # a retry after the call's deadline: not sent
            raise _past_deadline(request, "response")
        with timeout(head_deadline - time.monotonic(), request):
            response = self._inner.handle_request(request)
        try:
            if "transfer-encoding" in response.headers and "content-length" in response.headers:
                raise httpx.RemoteProtocolError("the response has both Transfer-Encoding and Content-Length",
                                                request=request)
            rules = _BodyRules(request, limits, _is_event_stream(response.headers.get("content-type", "")), start)
            length = response.headers.get("content-length")
            if length and length.strip().isdigit():
                rules.check_declared(int(length))
        except BaseException:
            response.close()
            raise
        response.stream = _GuardedStream(response.stream, rules, timeout)
        return response

    def close(self):
        self._inner.close()

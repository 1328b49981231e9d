"""A lean HTTP/1.1 transport for httpx, under the provider SDKs.

The SDKs send one kind of request to one API, many times: a JSON POST answered with JSON or
with a chunked stream of server-sent events. Under load through one gevent worker, the
general-purpose stacks beneath httpx cost more CPU than the rest of a proxied call:
- httpcore checks every idle connection for expiry (a socket poll each) on every request;
- urllib3 and ``http.client`` parse each response's headers with the ``email`` package and
  read a chunked body with a ``readline`` and a ``read`` per chunk, through buffered files.

``Http11Transport`` speaks HTTP/1.1 on its own sockets (gevent's, under gevent), over TLS
for ``https``: the request goes out in one ``send`` (gevent's ``sendall`` asks the socket's
buffer size first, a second system call); the response head is split with
``bytes.find``; a body is framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the
end of the connection (RFC 9112, section 6.3) and decoded from one buffer, every whole chunk
that has arrived at once. Connections are kept per host while the server allows it, checked
with a zero-timeout ``poll`` before reuse. Errors are raised as the httpx exceptions the SDKs
map. Content codings are left to httpx, which decodes them from the raw body, as it does over
any transport. Proxies are httpx's own transports mounted for their URLs.
"""
import select
import socket
import time

import httpx

MAX_HEAD = 65536  # bytes of a response head (status line and headers)
READ_SIZE = 65536
_CRLF = b"\r\n"


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
    """One connection: its socket, the bytes read and not yet consumed, its pool key."""

    __slots__ = ("sock", "buf", "key", "timeout")

    def __init__(self, sock, key):
        self.sock = sock
        self.buf = bytearray()
        self.key = key
        self.timeout = sock.gettimeout()

    def settimeout(self, timeout):
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _parse_head(head, request):
    """``(status, reason, version, [(name, value)])`` of a response head (without its CRLFCRLF)."""
    lines = head.split(_CRLF)
    parts = lines[0].split(b" ", 2)
    try:
        version, status = parts[0], int(parts[1])
    except (IndexError, ValueError):
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}", request=request) from None
    if not version.startswith(b"HTTP/1.") or not 100 <= status <= 999:
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}", request=request)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}", request=request)
        headers.append((name, value.strip(b" \t")))
    return status, parts[2] if len(parts) > 2 else b"", version, headers


class _Body(httpx.SyncByteStream):
    """A response body read from its connection; the connection goes back to the pool once
    the whole body has been read and the stream is closed."""

    def __init__(self, transport, conn, request, framing, length, keep):
        self._transport = transport
        self._conn = conn
        self._request = request
        self._keep = keep  # the server lets the connection serve another request
        self._closed = False
        self.complete = framing == "none"
        self._gen = {"chunked": self._chunked, "length": self._sized, "close": self._until_close,
                     "none": self._nothing}[framing](length)

    def __iter__(self):
        return self._gen

    def _recv(self, size):
        try:
            return self._conn.sock.recv(size)
        except (socket.timeout, TimeoutError) as exc:
            raise httpx.ReadTimeout("timed out reading the response", request=self._request) from exc
        except OSError as exc:
            raise httpx.ReadError(f"reading the response failed: {exc}", request=self._request) from exc

    def _nothing(self, _length):
        return
        yield  # noqa: unreachable - an empty generator

    def _sized(self, remaining):
        buf = self._conn.buf
        if buf:
            take = bytes(buf[:remaining])
            del buf[:remaining]
            remaining -= len(take)
            if remaining == 0:
                self.complete = True
            yield take
        while remaining > 0:
            data = self._recv(min(READ_SIZE, remaining))
            if not data:
                raise httpx.RemoteProtocolError(f"the server closed the connection {remaining} bytes before "
                                                "the body's end", request=self._request)
            remaining -= len(data)
            if remaining == 0:
                self.complete = True
            yield data

    def _chunked(self, _length):
        request = self._request
        buf = self._conn.buf
        while True:
            out = []  # every whole chunk already in the buffer goes out as one piece
            while True:
                eol = buf.find(_CRLF)
                if eol < 0:
                    if len(buf) > 4096:
                        raise httpx.RemoteProtocolError("malformed chunk size line", request=request)
                    break
                try:
                    size = int(bytes(buf[:eol]).split(b";", 1)[0], 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"malformed chunk size {bytes(buf[:min(eol, 40)])!r}",
                                                    request=request) from None
                if size < 0:
                    raise httpx.RemoteProtocolError("negative chunk size", request=request)
                if size == 0:  # the last chunk, then trailers (ignored) up to an empty line
                    end = buf.find(b"\r\n\r\n", eol)
                    if end < 0:
                        if len(buf) - eol > MAX_HEAD:
                            raise httpx.RemoteProtocolError("chunked trailers too long", request=request)
                        break
                    del buf[:end + 4]
                    self.complete = True
                    if out:
                        yield b"".join(out)
                    return
                stop = eol + 2 + size
                if len(buf) < stop + 2:
                    break
                if buf[stop:stop + 2] != _CRLF:
                    raise httpx.RemoteProtocolError("chunk data not followed by CRLF", request=request)
                out.append(bytes(buf[eol + 2:stop]))
                del buf[:stop + 2]
            if out:
                yield b"".join(out)
            data = self._recv(READ_SIZE)
            if not data:
                raise httpx.RemoteProtocolError("the server closed the connection before the body's end",
                                                request=request)
            buf += data

    def _until_close(self, _length):
        buf = self._conn.buf
        if buf:
            data = bytes(buf)
            buf.clear()
            yield data
        while True:
            data = self._recv(READ_SIZE)
            if not data:
                self.complete = True
                return
            yield data

    def _read_what_arrived(self, budget=65536):
        """Read the rest of the body if it has already arrived, without waiting for more.

        A provider stops reading at ``data: [DONE]``; the body's last, empty chunk follows at
        once. Reading it here lets the connection serve the next request instead of being
        closed (and reopened, with a TLS handshake, for the next stream). At most ``budget``
        bytes: a body still streaming is closed as before."""
        try:
            self._conn.settimeout(0)
            for data in self._gen:
                budget -= len(data)
                if budget <= 0:
                    return
        except (OSError, httpx.HTTPError, ValueError):
            pass  # would block (not all there yet), or broken: the connection gets closed

    def close(self):
        if self._closed:
            return
        self._closed = True
        if not self.complete:
            self._read_what_arrived()
        self._gen.close()
        conn = self._conn
        if self.complete and self._keep and not conn.buf:
            self._transport._release(conn)
        else:
            conn.close()  # closed early (a client that went away): tells the upstream to stop


class Http11Transport(httpx.BaseTransport):
    """HTTP/1.1 with keep-alive connections per host, for the provider SDKs' clients."""

    def __init__(self, max_idle=1000, verify=True):
        self._idle = {}  # (scheme, host, port) -> [_Conn], most recently used last
        self._max_idle = max_idle
        self._verify = verify
        self._ssl = None
        self._closed = False

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
        return _Conn(sock, key)

    def _take(self, key, timeouts, request):
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if is_reusable(conn.sock):
                return conn
            conn.close()
        return self._connect(key, timeouts, request)

    def _release(self, conn):
        if self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self._max_idle:
            conn.close()
        else:
            idle.append(conn)

    def handle_request(self, request):
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        body = request.read()
        head = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), url.raw_path)]
        has_length = False
        for name, value in request.headers.raw:
            head.append(name + b": " + value)
            if not has_length and name.lower() in (b"content-length", b"transfer-encoding"):
                has_length = True
        if body and not has_length:
            head.append(b"Content-Length: %d" % len(body))
        payload = _CRLF.join(head) + b"\r\n\r\n" + body
        conn = self._take(key, timeouts, request)
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
            conn.settimeout(timeouts.get("read"))
            status, reason, version, headers, framing, length, keep = self._read_head(conn, request)
        except BaseException:
            conn.close()
            raise
        stream = _Body(self, conn, request, framing, length, keep)
        return httpx.Response(status_code=status, headers=headers, stream=stream,
                              extensions={"http_version": version, "reason_phrase": reason})

    def _read_head(self, conn, request):
        buf = conn.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head too long", request=request)
                try:
                    data = conn.sock.recv(READ_SIZE)
                except (socket.timeout, TimeoutError) as exc:
                    raise httpx.ReadTimeout("timed out waiting for the response", request=request) from exc
                except OSError as exc:
                    raise httpx.ReadError(f"reading the response failed: {exc}", request=request) from exc
                if not data:
                    raise httpx.RemoteProtocolError(
                        "the server disconnected " + ("in the response head" if buf else "without a response"),
                        request=request)
                buf += data
                end = buf.find(b"\r\n\r\n")
            head = bytes(buf[:end])
            del buf[:end + 4]
            status, reason, version, headers = _parse_head(head, request)
            if 100 <= status < 200 and status != 101:
                continue  # an interim response (100 Continue, 103 Early Hints): the final one follows
            break
        connection, transfer, length = b"", None, None
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"malformed Content-Length {value[:40]!r}",
                                                    request=request) from None
                if length < 0:
                    raise httpx.RemoteProtocolError("negative Content-Length", request=request)
            elif lower == b"transfer-encoding":
                transfer = value.lower()
            elif lower == b"connection":
                connection = value.lower()
        if version == b"HTTP/1.0":
            keep = b"keep-alive" in connection
        else:
            keep = b"close" not in connection
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, reason, version, headers, "none", 0, keep
        if transfer is not None:
            if not transfer.endswith(b"chunked"):
                return status, reason, version, headers, "close", None, False
            return status, reason, version, headers, "chunked", None, keep
        if length is not None:
            if length == 0:
                return status, reason, version, headers, "none", 0, keep
            return status, reason, version, headers, "length", length, keep
        return status, reason, version, headers, "close", None, False

    def close(self):
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


try:  # httpx internals LeanClient relies on; without them it is a plain httpx.Client
    from httpx._client import BoundSyncStream, ClientState
except ImportError:  # pragma: no cover - a future httpx
    BoundSyncStream = ClientState = None


class LeanClient(httpx.Client):
    """An ``httpx.Client`` for an SDK that talks to one API.

    ``send`` hands the request straight to its transport: no cookie jar, auth flow, redirect
    following or event hooks, which the provider SDKs do not use (they set their own auth
    header and treat a redirect as an error) and which cost about a sixth of a proxied call's
    CPU under load. Timeouts, proxies mounted for the URL, streaming and closing behave as in
    ``httpx.Client``.
    """

    def send(self, request, *, stream=False, auth=None, follow_redirects=None):
        if ClientState is None:
            return super().send(request, stream=stream)
        if self._state == ClientState.CLOSED:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        self._state = ClientState.OPENED
        self._set_timeout(request)
        transport = self._transport_for_url(request.url)
        start = time.perf_counter()
        response = transport.handle_request(request)
        response.request = request
        response.stream = BoundSyncStream(response.stream, response=response, start=start)
        response.default_encoding = self._default_encoding
        try:
            if not stream:
                response.read()
            return response
        except BaseException:
            response.close()
            raise

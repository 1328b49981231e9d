"""An httpx transport over urllib3's connection pool, for the provider SDKs.

httpcore's pool checks every idle connection for expiry (a socket poll each)
on every request; under load through one gevent worker that was about 15%
of the CPU of a proxied call. urllib3 checks only the connection it takes.
urllib3 errors are raised as the httpx exceptions the SDKs map.
"""
import http.client
import select
import time

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)


class _Stream(httpx.SyncByteStream):
    def __init__(self, response, request):
        self._response = response
        self._request = request

    def __iter__(self):
        # read1 per chunk, not urllib3's stream() generator: a consumer that stops early (a
        # provider at ``data: [DONE]``) abandons this generator, and closing stream() midway
        # closes the connection before ``close()`` can read the body's last bytes and keep it.
        response = self._response
        try:
            while True:
                chunk = response.read1(65536, decode_content=False)
                if not chunk:
                    break
                yield chunk
        except ReadTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=self._request) from exc
        except (ProtocolError, OSError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=self._request) from exc

    def close(self):
        # A fully read response goes back to the pool; one closed early (a client that
        # went away mid-stream) closes its connection, which tells the upstream to stop.
        response = self._response
        if not self._complete(response):
            _read_what_arrived(response)
        if self._complete(response):
            response.release_conn()
        else:
            response.close()

    @staticmethod
    def _complete(response):
        return response.isclosed() or response.length_remaining == 0


def _read_what_arrived(response, budget=65536):
    """Read the rest of a body that has already arrived, without waiting for more.

    A provider stops reading at ``data: [DONE]``; the body's last, empty chunk follows at once.
    Reading it here lets the connection serve the next request instead of being closed (and
    reopened, with a TLS handshake, for the next stream). The socket is non-blocking meanwhile,
    and at most ``budget`` bytes are read: a body still streaming is closed as before."""
    sock = getattr(response.connection, "sock", None)
    if sock is None:
        return
    try:
        previous = sock.gettimeout()
        sock.settimeout(0)
    except OSError:
        return
    try:
        while budget > 0:
            data = response.read(min(budget, 16384), decode_content=False)
            if not data:
                break
            budget -= len(data)
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError):
        pass  # not all there (or the connection broke): it gets closed
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass


def _real_poll():
    try:
        from gevent import monkey

        return monkey.get_original("select", "poll")
    except ImportError:  # pragma: no cover - gevent is a dependency
        import select

        return select.poll


_POLL = _real_poll()
_POLLIN = select.POLLIN


class _ReuseCheck:
    """Whether a pooled connection is still open, asked of the OS with a zero-timeout poll.

    urllib3 asks through ``select.poll``, which under gevent goes through the hub (about 3% of
    a proxied call's CPU); the answer is the same: readable before a request means the peer
    closed (or sent something unasked), so the connection is not reused. ``poll``, not
    ``select``: a worker holding a thousand streams has descriptors above select's limit of
    1,024, where select fails and every pooled connection looked dropped."""

    @property
    def is_connected(self):
        sock = self.sock
        if sock is None:
            return False
        try:
            poller = _POLL()
            poller.register(sock, _POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False


class _HTTPConnection(_ReuseCheck, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_ReuseCheck, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class Urllib3Transport(httpx.BaseTransport):
    def __init__(self, maxsize=1000):
        self._pool = urllib3.PoolManager(maxsize=maxsize, block=False, retries=False)
        self._pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def handle_request(self, request):
        timeouts = request.extensions.get("timeout", {})
        timeout = urllib3.Timeout(connect=timeouts.get("connect"), read=timeouts.get("read"))
        try:
            response = self._pool.urlopen(
                request.method, str(request.url), body=request.read(), headers=dict(request.headers),
                redirect=False, retries=False, preload_content=False, decode_content=False, timeout=timeout)
        except NewConnectionError as exc:  # before ConnectTimeoutError: urllib3 subclasses it
            raise httpx.ConnectError(str(exc), request=request) from exc
        except ConnectTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except ReadTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except (ProtocolError, OSError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(status_code=response.status, headers=list(response.headers.items()),
                              stream=_Stream(response, request), extensions={"http_version": b"HTTP/1.1"})

    def close(self):
        self._pool.clear()


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

"""Refusing non-public network addresses (SSRF).

Used for everything chatport connects to on someone's say-so: URL knowledge sources
(``KNOWLEDGE_URL_ALLOWED_NETWORKS``) and provider base URLs (``PROVIDER_ALLOWED_NETWORKS``).
Loopback, private, link-local, shared, reserved and multicast addresses, IPv4 and IPv6, are
refused unless they fall in a network the operator allows.

A URL is parsed once, with ``httpx.URL`` (the parser of the HTTP clients the providers use);
URLs that parsers read differently (credentials before the host, backslashes, whitespace or
control characters) are refused outright. ``resolve`` looks the host up once and checks every
address; ``PinnedBackend`` (an ``httpcore`` network backend) then connects to the checked address
and nowhere else, while the Host header, TLS SNI and certificate check still use the hostname,
so a name that resolves differently the second time (DNS rebinding) cannot move the connection.
"""
import ipaddress
import re
import socket
import time
from dataclasses import dataclass

import httpcore
import httpx

# Characters on which URL parsers disagree about where the host ends.
_AMBIGUOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")


class RefusedAddress(Exception):
    """The URL is not http(s), does not resolve, or resolves to an address not allowed."""


@dataclass(frozen=True)
class Target:
    """A checked URL: ``address`` is the one to connect to, ``url`` keeps the hostname."""
    url: httpx.URL
    host: str
    port: int
    address: str


def networks(values):
    """``ip_network`` objects from CIDR strings (``"127.0.0.0/8"``, ``"::1/128"``)."""
    return [ipaddress.ip_network(str(v), strict=False) for v in values or ()]


def parse_url(url, base=None):
    """The ``httpx.URL`` of an http(s) URL (relative to ``base``, an ``httpx.URL``, when given,
    as a redirect's Location). Raises RefusedAddress for anything else."""
    if not isinstance(url, (str, httpx.URL)):
        raise RefusedAddress("only http and https URLs are allowed")
    if isinstance(url, str) and _AMBIGUOUS.search(url):
        raise RefusedAddress("URLs may not contain backslashes, whitespace or control characters")
    try:
        parsed = base.join(url) if base is not None else httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise RefusedAddress(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise RefusedAddress("only http and https URLs are allowed")
    if parsed.userinfo:
        raise RefusedAddress("URLs with credentials (user@host) are not allowed")
    return parsed


def resolve(url, allowed_networks=(), setting="the allowed networks"):
    """The ``Target`` of ``url``: resolved once, every address checked.

    Raises RefusedAddress unless ``url`` is http(s) and every address its host resolves to is
    public or inside ``allowed_networks``; ``setting`` names the configuration that allows more.
    """
    parsed = parse_url(url)
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded; IPv6 without brackets
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise RefusedAddress(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") from None
    allowed = networks(allowed_networks)
    addresses = []
    for info in infos:
        address = info[4][0]
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if not any(ip.version == net.version and ip in net for net in allowed) and (
                not ip.is_global or ip.is_multicast):
            raise RefusedAddress(f"{host} resolves to a non-public address ({ip}); allow it with {setting}")
        addresses.append(address)
    if not addresses:
        raise RefusedAddress(f"cannot resolve {host}")
    return Target(parsed, host, port, addresses[0])


def check_url(url, allowed_networks=(), setting="the allowed networks"):
    """Raise RefusedAddress unless ``url`` is allowed (see ``resolve``); return its Target."""
    return resolve(url, allowed_networks, setting)


class DeadlineExceeded(httpcore.TimeoutException):
    """The overall deadline of a pinned connection passed."""


class PinnedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that connects only to ``target.address``.

    Every connect, TLS handshake, read and write waits at most until ``deadline``
    (a ``time.monotonic()`` value; None: only the per-operation timeouts apply).
    """

    def __init__(self, target, deadline=None):
        self.target, self.deadline = target, deadline
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if host != self.target.host or port != self.target.port:
            raise httpcore.ConnectError(f"{host}:{port} is not the checked address")
        stream = self._backend.connect_tcp(self.target.address, port, _left(self.deadline, timeout),
                                           local_address, socket_options)
        return _DeadlineStream(stream, self.deadline)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not allowed")

    def sleep(self, seconds):
        time.sleep(seconds)


def _left(deadline, timeout):
    """``timeout`` cut to what is left before ``deadline``; raises DeadlineExceeded past it."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("deadline exceeded")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream, deadline):
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes, timeout=None):
        return self._stream.read(max_bytes, _left(self._deadline, timeout))

    def write(self, buffer, timeout=None):
        self._stream.write(buffer, _left(self._deadline, timeout))

    def close(self):
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        stream = self._stream.start_tls(ssl_context, server_hostname, _left(self._deadline, timeout))
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info):
        return self._stream.get_extra_info(info)

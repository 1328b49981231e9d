"""Refusing non-public network addresses (SSRF).

Used for everything chatport connects to on someone's say-so: URL knowledge sources
(``KNOWLEDGE_URL_ALLOWED_NETWORKS``) and provider base URLs (``PROVIDER_ALLOWED_NETWORKS``).
Loopback, private, link-local, shared, reserved and multicast addresses, IPv4 and IPv6, are
refused unless they fall in a network the operator allows.
"""
import ipaddress
import socket
from urllib.parse import urlparse


class RefusedAddress(Exception):
    """The URL is not http(s), does not resolve, or resolves to an address not allowed."""


def networks(values):
    """``ip_network`` objects from CIDR strings (``"127.0.0.0/8"``, ``"::1/128"``)."""
    return [ipaddress.ip_network(str(v), strict=False) for v in values or ()]


def check_url(url, allowed_networks=(), setting="the allowed networks"):
    """Raise RefusedAddress unless ``url`` is http(s) and every address it resolves to is public
    or inside ``allowed_networks``; ``setting`` names the configuration that allows more."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RefusedAddress("only http and https URLs are allowed")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        infos = socket.getaddrinfo(parsed.hostname, port)
    except (socket.gaierror, ValueError) as exc:
        raise RefusedAddress(f"cannot resolve {parsed.hostname}: {getattr(exc, 'strerror', None) or exc}")
    allowed = networks(allowed_networks)
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in allowed):
            continue
        if not ip.is_global or ip.is_multicast:
            raise RefusedAddress(f"{parsed.hostname} resolves to a non-public address ({ip}); "
                                 f"allow it with {setting}")

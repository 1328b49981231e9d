"""Fetching web pages for URL knowledge sources, safely.

Refuses loopback, private, link-local and other non-public addresses unless the
operator allows them (``KNOWLEDGE_URL_ALLOWED_NETWORKS``, e.g. ``["127.0.0.0/8"]``).
Each hop (the URL and every redirect) is resolved once, checked, and connected to at
the checked address only (``netguard.PinnedBackend`` under ``httpcore``), so neither a URL
that parsers read differently nor a name that resolves differently the second time reaches
another address. ``timeout`` is one deadline for the whole fetch (every connect, redirect and
read), the body is capped at ``max_bytes`` (after decompression), and HTML becomes text.
"""
import codecs
import re
import time
import zlib
from html.parser import HTMLParser

import charset_normalizer
import httpcore
import httpx

from app.providers import netguard

TEXT_TYPES = ("text/html", "text/plain", "text/markdown", "application/xhtml+xml")
REDIRECTS = (301, 302, 303, 307, 308)
HEADERS = [(b"User-Agent", b"chatport-knowledge/1"), (b"Accept", b"text/html,text/plain"),
           (b"Accept-Encoding", b"gzip, deflate")]


class FetchError(Exception):
    """Why a page could not be used (stored as the source's sync error)."""


def check_url(url, allowed_networks=(), base=None):
    """The checked ``netguard.Target`` of ``url`` (relative to ``base`` for a redirect).

    Raises FetchError unless ``url`` is http(s) and every address it resolves to is allowed.
    """
    try:
        if base is not None:
            url = netguard.parse_url(url, base=base)
        return netguard.resolve(url, allowed_networks, setting="KNOWLEDGE_URL_ALLOWED_NETWORKS")
    except netguard.RefusedAddress as exc:
        raise FetchError(str(exc)) from None


class _Text(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg"}
    BLOCK = {"p", "div", "section", "article", "li", "br", "tr", "table", "ul", "ol", "pre", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.out.append("\n\n" if tag != "li" else "\n- ")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        elif tag.startswith("h") and tag[1:].isdigit():
            self.out.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(html):
    parser = _Text()
    parser.feed(html)
    text = "".join(parser.out)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out, blank = [], False
    for line in lines:
        if line:
            out.append(line)
            blank = False
        elif not blank and out:
            out.append("")
            blank = True
    return "\n".join(out).strip()


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_CHARSET = re.compile(rb"""charset\s*=\s*["']?\s*([-\w.:]+)""", re.I)
_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([-\w.:]+)""", re.I)
# Labels that browsers read as windows-1252 (the WHATWG Encoding Standard).
_WINDOWS_1252 = {"ascii", "us-ascii", "iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "cp819"}


def _codec(label):
    """The Python codec of a charset label, or None when unknown."""
    if not label:
        return None
    label = label.decode("ascii", "replace").strip().lower() if isinstance(label, bytes) else label.lower()
    if label in _WINDOWS_1252:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_body(body, content_type="", html=False):
    """Text of a page body: a byte-order mark first, then the Content-Type charset, then (for
    HTML) a ``<meta charset>`` in the first 1024 bytes; undeclared bytes that are valid UTF-8 are
    UTF-8, anything else gets charset_normalizer's best guess."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body.decode(codec, errors="replace")
    declared = _CHARSET.search(content_type.encode("latin-1", "replace"))
    codec = _codec(declared.group(1)) if declared else None
    if codec is None and html:
        meta = _META_CHARSET.search(body[:1024])
        codec = _codec(meta.group(1)) if meta else None
        if codec in ("utf-16", "utf-16-le", "utf-16-be"):  # a meta tag readable as ASCII is not UTF-16
            codec = "utf-8"
    if codec is not None:
        return body.decode(codec, errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        best = charset_normalizer.from_bytes(body).best()
        return str(best) if best is not None else body.decode("cp1252", errors="replace")


class _Body:
    """Collects a body up to ``max_bytes``, decompressing gzip and deflate."""

    def __init__(self, encoding, max_bytes, url):
        self.max_bytes, self.url, self.parts, self.size = max_bytes, url, [], 0
        if encoding in ("", "identity"):
            self.inflate = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self.inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        else:
            raise FetchError(f"{url} is compressed with {encoding}, which is not supported")

    def feed(self, chunk):
        if self.inflate is not None:
            try:
                chunk = self.inflate.decompress(chunk, self.max_bytes + 1 - self.size)
            except zlib.error:
                raise FetchError(f"could not read {self.url}: bad compressed data") from None
            if self.inflate.unconsumed_tail:  # more output than the cap allows
                self.size = self.max_bytes + 1
        self._add(chunk)

    def bytes(self):
        if self.inflate is not None:
            self._add(self.inflate.flush())
        return b"".join(self.parts)

    def _add(self, data):
        self.parts.append(data)
        self.size += len(data)
        if self.size > self.max_bytes:
            raise FetchError(f"{self.url} is larger than {self.max_bytes} bytes")


def _get(target, deadline, max_bytes):
    """(status, headers, body or None) of one GET to the checked address; body only for 2xx."""
    url = httpcore.URL(scheme=target.url.raw_scheme, host=target.host.encode("ascii"), port=target.port,
                       target=target.url.raw_path)
    left = max(deadline - time.monotonic(), 0.001)
    extensions = {"timeout": {"connect": left, "read": left, "write": left, "pool": left}}
    with httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), retries=0, max_connections=1,
                                 network_backend=netguard.PinnedBackend(target, deadline)) as pool:
        with pool.stream("GET", url, headers=[(b"Host", target.url.netloc)] + HEADERS,
                         extensions=extensions) as resp:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
            if not 200 <= resp.status < 300:
                return resp.status, headers, None
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype and ctype not in TEXT_TYPES:
                raise FetchError(f"{target.url} is not text ({ctype})")
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"{target.url} is larger than {max_bytes} bytes")
            body = _Body(headers.get("content-encoding", "").strip().lower(), max_bytes, target.url)
            for chunk in resp.iter_stream():
                body.feed(chunk)
            return resp.status, headers, body.bytes()


def fetch_text(url, *, max_bytes=2_000_000, timeout=10, allowed_networks=(), max_redirects=5):
    """The text of a page (HTML converted). Raises FetchError with the reason.

    ``timeout`` (seconds) bounds the whole fetch: every connect, redirect and read.
    """
    deadline = time.monotonic() + timeout
    target = check_url(url, allowed_networks)
    for _ in range(max_redirects + 1):
        try:
            status, headers, body = _get(target, deadline, max_bytes)
        except httpcore.TimeoutException:
            raise FetchError(f"could not fetch {target.url}: no complete answer within {timeout} s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise FetchError(f"could not fetch {target.url}: {detail[:300]}") from None
        if status in REDIRECTS and headers.get("location"):
            target = check_url(headers["location"], allowed_networks, base=target.url)
            continue
        if body is None:
            raise FetchError(f"{target.url} answered HTTP {status}")
        ctype = headers.get("content-type", "")
        is_html = ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")
        text = decode_body(body, ctype, html=is_html or b"<html" in body[:500].lower())
        if is_html or "<html" in text[:500].lower():
            text = html_to_text(text)
        if not text.strip():
            raise FetchError(f"{target.url} has no text")
        return text
    raise FetchError(f"{url}: too many redirects")

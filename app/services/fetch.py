"""Fetching web pages for URL knowledge sources, safely.

Refuses loopback, private, link-local and other non-public addresses unless the
operator allows them (``KNOWLEDGE_URL_ALLOWED_NETWORKS``, e.g. ``["127.0.0.0/8"]``),
re-checks every redirect, bounds time and size, and turns HTML into text.
"""
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests

from app.providers import netguard

TEXT_TYPES = ("text/html", "text/plain", "text/markdown", "application/xhtml+xml")


class FetchError(Exception):
    """Why a page could not be used (stored as the source's sync error)."""


def check_url(url, allowed_networks=()):
    """Raise FetchError unless ``url`` is http(s) and every address it resolves to is allowed."""
    try:
        netguard.check_url(url, allowed_networks, setting="KNOWLEDGE_URL_ALLOWED_NETWORKS")
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


def fetch_text(url, *, max_bytes=2_000_000, timeout=10, allowed_networks=(), max_redirects=5):
    """The text of a page (HTML converted). Raises FetchError with the reason."""
    for _ in range(max_redirects + 1):
        check_url(url, allowed_networks)
        try:
            resp = requests.get(url, timeout=(min(5, timeout), timeout), stream=True, allow_redirects=False,
                                headers={"User-Agent": "chatport-knowledge/1", "Accept": "text/html,text/plain"})
        except requests.RequestException as exc:
            raise FetchError(f"could not fetch {url}: {type(exc).__name__}")
        try:
            if resp.is_redirect:
                url = urljoin(url, resp.headers.get("Location", ""))
                continue
            if resp.status_code >= 400:
                raise FetchError(f"{url} answered HTTP {resp.status_code}")
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and ctype not in TEXT_TYPES:
                raise FetchError(f"{url} is not text ({ctype})")
            if int(resp.headers.get("Content-Length") or 0) > max_bytes:
                raise FetchError(f"{url} is larger than {max_bytes} bytes")
            body = b""
            try:
                for chunk in resp.iter_content(65536):
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(f"{url} is larger than {max_bytes} bytes")
            except requests.RequestException as exc:  # a body that breaks off or stalls
                raise FetchError(f"could not read {url}: {type(exc).__name__}")
            text = body.decode(resp.encoding or "utf-8", errors="replace")
            text = html_to_text(text) if ctype in ("text/html", "application/xhtml+xml") or "<html" in text[:500].lower() else text
            if not text.strip():
                raise FetchError(f"{url} has no text")
            return text
        finally:
            resp.close()
    raise FetchError(f"{url}: too many redirects")

"""A Flask test client for the console: signs in, reads CSRF tokens off the pages it gets."""
import html
import re

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(text):
    found = CSRF.search(text)
    assert found, "the page has no CSRF token"
    return found.group(1)


class Console:
    """The console as a browser sees it: cookies kept, each form posted with the page's token."""

    def __init__(self, client):
        self.client = client
        self.token = None

    def get(self, path, **kw):
        resp = self._done(self.client.get(path, **kw))
        text = resp.get_data(as_text=True)
        found = CSRF.search(text)
        if found:
            self.token = found.group(1)
        return resp

    def post(self, path, data=None, csrf=True, **kw):
        """POST a form with the last page's CSRF token (``csrf=False``: none, ``csrf="x"``: that)."""
        data = dict(data or {})
        if csrf is True:
            if self.token is None:
                self.get("/console/sign-in")
            data["csrf_token"] = self.token
        elif csrf:
            data["csrf_token"] = csrf
        return self._done(self.client.post(path, data=data, **kw))

    @staticmethod
    def _done(resp):
        """Read the whole body and close the response, as a server does after the last byte
        (when a metered call writes its usage row)."""
        resp.get_data()
        resp.close()
        return resp

    def sign_in(self, key):
        self.get("/console/sign-in")
        resp = self.post("/console/sign-in", {"key": key})
        assert resp.status_code == 302, resp.get_data(as_text=True)
        self.get("/console/")  # the session's own token from now on
        return resp


def text_of(resp):
    """The page's text with tags dropped and entities decoded (for assertions on what shows)."""
    body = resp.get_data(as_text=True)
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def field_error(resp, name):
    """The error shown under form field ``name``, or None."""
    found = re.search(rf'id="{re.escape(name)}-error">([^<]*)<', resp.get_data(as_text=True))
    return html.unescape(found.group(1)) if found else None

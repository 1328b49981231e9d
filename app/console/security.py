"""The console's session cookie, CSRF check, response headers and error pages.

- The session lives in the database (``app.services.console_sessions``); the browser holds its
  token in the cookie ``chatport_console``, signed with ``SECRET_KEY`` (itsdangerous), HttpOnly,
  SameSite=Lax, Secure over HTTPS (``CONSOLE_COOKIE_SECURE``).
- Every POST carries a CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``): the
  session's own, or before sign-in the nonce of the signed cookie ``chatport_console_pre`` (a
  double-submit token: a page on another site can neither read it nor set it). A POST without a
  matching token is a 400 before the view runs: nothing changes.
- Pages answer with a Content-Security-Policy without inline scripts or styles,
  ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` and ``Cache-Control: no-store``.
"""
import hmac
import secrets
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from app.console import PREFIX, bp
from app.errors import ApiError
from app.services import console_sessions

API_PREFIX = PREFIX + "/api/"  # the console's JSON endpoints (the playground's turns)
COOKIE = "chatport_console"
PRE_COOKIE = "chatport_console_pre"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Endpoints open without a session.
PUBLIC = {"console.sign_in", "console.static"}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class CsrfRefused(ApiError):
    status, code = 400, "csrf_refused"
    default_message = "The form's security token is missing or out of date: reload the page and try again."


def _serializer(salt):
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=salt)


def _read_cookie(name, salt):
    raw = request.cookies.get(name)
    if not raw:
        return None
    try:
        value = _serializer(salt).loads(raw)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def _cookie_secure():
    forced = current_app.config.get("CONSOLE_COOKIE_SECURE")
    return bool(forced) if forced is not None else request.is_secure


def set_session_cookie(response, session_token):
    response.set_cookie(COOKIE, _serializer(COOKIE).dumps(session_token), httponly=True, samesite="Lax",
                        secure=_cookie_secure(), path="/")
    response.delete_cookie(PRE_COOKIE, path="/")


def clear_session_cookie(response):
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax", secure=_cookie_secure())


def current_session():
    """The signed-in session (with ``.key``, the admin key it acts as), or None."""
    if "console_session" not in g:
        config = current_app.config
        g.console_session = console_sessions.load(
            _read_cookie(COOKIE, COOKIE), idle_timeout=float(config["CONSOLE_IDLE_TIMEOUT"]),
            lifetime=float(config["CONSOLE_SESSION_LIFETIME"]))
    return g.console_session


def csrf_token():
    """The token this page's forms send: the session's, or before sign-in the pre-session nonce
    (set as a cookie with the response)."""
    session = current_session()
    if session is not None:
        return session.csrf_token
    if "console_pre_nonce" not in g:
        g.console_pre_nonce = _read_cookie(PRE_COOKIE, PRE_COOKIE) or secrets.token_urlsafe(32)
        g.console_set_pre = True
    return g.console_pre_nonce


def _check_csrf():
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    session = current_session()
    expected = session.csrf_token if session is not None else _read_cookie(PRE_COOKIE, PRE_COOKIE)
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()


def safe_next(target):
    """``target`` when it is a path of the console, else the overview (no open redirect)."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not (parts.path + "/").startswith(PREFIX + "/") \
            or target.startswith("//") or "\\" in target:
        return url_for("console.overview")
    return target


def _before():
    if request.endpoint in PUBLIC:
        if request.method == "POST":
            _check_csrf()
        return None
    if current_session() is None:
        if request.path.startswith(API_PREFIX):
            return render_error(ApiError("Signed out: sign in again", status=401, code="unauthorized"))
        nxt = request.full_path if request.method == "GET" else None
        return redirect(url_for("console.sign_in", next=nxt.rstrip("?") if nxt else None))
    if request.method == "POST":
        _check_csrf()
    g.api_key = current_session().key  # services and metering see the admin key it acts as
    return None


def _after(response):
    if g.pop("console_set_pre", False):
        response.set_cookie(PRE_COOKIE, _serializer(PRE_COOKIE).dumps(g.console_pre_nonce), httponly=True,
                            samesite="Lax", secure=_cookie_secure(), path="/")
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.endpoint != "console.static":
        headers["Cache-Control"] = "no-store"  # pages may show a secret once
    return response


def render_error(error):
    """An ApiError under /console: JSON for the console's own endpoints (``/console/api/``),
    else an HTML page."""
    if request.path.startswith(API_PREFIX):
        body = {"error": {"code": error.code, "message": error.message, "fields": error.fields}}
        return body, error.status, error.headers
    html = render_template("console/error.html", error=error)
    response = current_app.make_response((html, error.status, error.headers))
    return _after(response)


def init_blueprint(bp):
    bp.before_request(_before)
    bp.after_request(_after)

    @bp.app_context_processor
    def _globals():
        if not request.path.startswith(PREFIX):
            return {}
        return {"csrf_token": csrf_token, "signed_in": current_session,
                "nav_endpoints": current_app.view_functions}


init_blueprint(bp)  # once, when the module is first imported (every app shares the blueprint)

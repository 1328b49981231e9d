"""Error rendering: every error reaches the renderer of the dialect that owns the request.

Raised ``ApiError``s, werkzeug's 404/405/413, webargs' validation errors and unexpected
exceptions all go to the renderer registered for the request's blueprint or the longest
matching path prefix. Nothing answers with an HTML page or a stack trace.
"""
import logging

from flask import current_app, request
from werkzeug.exceptions import HTTPException

from app.errors import ApiError
from app.observe import metrics

log = logging.getLogger("chatport.errors")

_DIALECTS = "chatport.dialect_renderers"


def register_dialect(app, prefix, renderer):
    """Make ``renderer(error: ApiError) -> Response`` answer errors under ``prefix``."""
    app.extensions.setdefault(_DIALECTS, []).append((prefix, renderer))
    app.extensions[_DIALECTS].sort(key=lambda item: -len(item[0]))


def register_blueprint_dialect(app, blueprint_name, renderer):
    """Make ``renderer`` answer errors of every route of a blueprint, whatever its path
    (for dialects mounted at a configurable prefix that may be empty)."""
    app.extensions.setdefault(_DIALECTS + ".blueprints", {})[blueprint_name] = renderer


def _renderer_for(path):
    by_blueprint = current_app.extensions.get(_DIALECTS + ".blueprints", {})
    if request.blueprint in by_blueprint:
        return by_blueprint[request.blueprint]
    for prefix, renderer in current_app.extensions.get(_DIALECTS, []):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/") or prefix == "":
            return renderer
    return render_chatport


def _flatten_fields(messages, path=""):
    """webargs messages {"json": {"name": ["..."]}} -> {"name": "..."}."""
    out = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            if path == "" and key in ("json", "query", "form", "headers", "view_args", "files"):
                out.update(_flatten_fields(value, ""))
            else:
                out.update(_flatten_fields(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        out[path or "_body"] = " ".join(messages)
    elif isinstance(messages, list):
        for i, value in enumerate(messages):
            out.update(_flatten_fields(value, f"{path}.{i}" if path else str(i)))
    else:
        out[path or "_body"] = str(messages)
    return out


def from_http_exception(exc):
    """Translate a werkzeug/webargs HTTPException into an ApiError."""
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages") or data.get("errors")
    fields = _flatten_fields(messages) if messages else {}
    if exc.code == 422:  # webargs default; chatport answers 400 for bad bodies
        status = 400
    else:
        status = exc.code or 500
    if fields:
        names = ", ".join(sorted(fields))
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items()))
        message = f"Invalid field(s) {names} — {detail}"
    elif data.get("message"):
        message = data["message"]
    elif status == 405:
        message = f"Method {request.method} is not allowed for {request.path}"
    elif status == 404:
        message = f"No route for {request.path}"
    elif status == 413:
        max_len = request.max_content_length
        message = f"Request body is larger than {max_len} bytes"
    else:
        message = exc.description or exc.name
    codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
             415: "unsupported_media_type",
             429: "rate_limited"}
    err = ApiError(message, status=status, code=codes.get(status, "error"), fields=fields,
                   headers=data.get("headers"))
    if status == 405 and getattr(exc, "valid_methods", None):
        err.headers["Allow"] = ", ".join(exc.valid_methods)
    return err


def render_chatport(error):
    """chatport API error schema: {code, status, message, errors}."""
    from http import HTTPStatus

    try:
        status_name = HTTPStatus(error.status).phrase
    except ValueError:
        status_name = "Error"
    body = {"code": error.status, "status": status_name, "message": error.message,
            "error": error.code}
    if error.fields:
        body["errors"] = error.fields
    return body, error.status, error.headers


def handle_any(exc):
    """App-wide error handler: normalise, then render in the path's dialect."""
    if isinstance(exc, ApiError):
        err = exc
    elif isinstance(exc, HTTPException):
        err = from_http_exception(exc)
    else:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = ApiError("Internal server error", status=500, code="internal_error")
    if err.status == 429:
        metrics.refused(err)  # rate-limit and quota refusals (a provider's 429 has its own code)
    return _renderer_for(request.path)(err)


def init_app(app):
    """Install ``handle_any`` for every exception (replaces flask-smorest's handler)."""
    app.register_error_handler(Exception, handle_any)
    app.register_error_handler(HTTPException, handle_any)
    app.register_error_handler(ApiError, handle_any)

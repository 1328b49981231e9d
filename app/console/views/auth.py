"""Sign in with an admin key, sign out."""
from flask import current_app, redirect, request, url_for

from app.console import bp, forms
from app.console.security import (
    clear_session_cookie,
    current_session,
    safe_next,
    set_session_cookie,
)
from app.console.views.common import page
from app.errors import ApiError, RateLimited
from app.metering import limits
from app.services import console_sessions


def _client_address():
    return request.remote_addr or "unknown"


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    """The sign-in form; POST opens a session for an admin key (attempts rate limited per address)."""
    nxt = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_session() is not None:
            return redirect(nxt)
        return page("console/sign_in.html", values={"next": nxt})
    values = {"next": nxt}
    try:
        limits.check_rate(f"console-sign-in:{_client_address()}", "console_sign_in",
                          int(current_app.config["CONSOLE_SIGNIN_PER_MINUTE"]))
        token = forms.text("key").strip()
        if not token:
            raise forms.Invalid(fields={"key": "Paste an admin key (cp_...)."})
        session_token, _ = console_sessions.sign_in(
            token, last_used_interval=current_app.config["KEY_LAST_USED_INTERVAL"])
    except RateLimited as exc:
        html, _ = page("console/sign_in.html", values=values,
                       form_error="Too many sign-in attempts from this address: wait a minute and try again.")
        return html, 429, {"Retry-After": exc.headers.get("Retry-After", "60")}
    except (forms.Invalid, ApiError) as exc:
        err = forms.Invalid.of(exc)
        message = err.message if err.fields else "That key does not open the console: " + err.message
        return page("console/sign_in.html", status=err.status,
                    values=values, errors=err.fields or {"key": err.message}, form_error=message)
    response = redirect(nxt)
    set_session_cookie(response, session_token)
    return response


@bp.route("/sign-out", methods=["POST"])
def sign_out():
    """End the session."""
    console_sessions.sign_out(current_session())
    response = redirect(url_for("console.sign_in"))
    clear_session_cookie(response)
    return response

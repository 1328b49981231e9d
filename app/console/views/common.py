"""What every console view uses: the signed-in key, flash messages, page rendering."""
from flask import current_app, render_template

from app.console.security import current_session
from app.services import console_sessions


def key():
    """The admin key the session acts as (services' ``key=``: an admin key sees everything)."""
    return current_session().key


def flash(text, kind="info", **extra):
    """A message for the next page (shown after the redirect that follows a form)."""
    console_sessions.push_flash(current_session(), kind, text, **extra)


def page(template, status=200, **context):
    """Render a page with the messages waiting for it (each shown once)."""
    session = current_session()
    context.setdefault("values", {})
    context.setdefault("errors", {})
    flashes = console_sessions.pop_flash(session) if session is not None else []
    html = render_template(template, flashes=flashes, config=current_app.config, **context)
    return html, status


def invalid(template, exc, values, **context):
    """The form page again with the errors of ``exc`` (a forms.Invalid), status 400."""
    return page(template, status=exc.status, values=values, errors=exc.fields, form_error=exc.message,
                **context)

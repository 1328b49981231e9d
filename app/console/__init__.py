"""The console: server-rendered pages at ``/console`` for the people who run the bots.

Jinja2 templates and plain HTML forms (they work without JavaScript); one small script
(``static/console.js``) streams playground answers. Views parse forms (``forms.py``) and call
the same services as the API; the session, CSRF and response headers are ``security.py``'s.
``CONSOLE_ENABLED`` false serves neither ``/console`` nor the ``/`` redirect.
"""
import os
import secrets

from flask import Blueprint, redirect, url_for

PREFIX = "/console"
SECRET_FILE = "secret_key"

bp = Blueprint("console", __name__, url_prefix=PREFIX, template_folder="templates",
               static_folder="static", static_url_path="/static")


def instance_secret_key(instance_path):
    """The instance folder's secret key, created (0600, 64 random hex characters) when missing.

    Several workers may start at once: the file is created exclusively and whoever loses the
    race reads the winner's key."""
    path = os.path.join(instance_path, SECRET_FILE)
    os.makedirs(instance_path, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    with open(path) as fh:
        key = fh.read().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it and restart to generate a new secret key")
    return key


def init_app(app):
    """Mount the console (unless ``CONSOLE_ENABLED`` is false) and make ``/`` redirect to it."""
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = instance_secret_key(app.instance_path)
    if not app.config.get("CONSOLE_ENABLED", True):
        return
    from app.api.errors import register_blueprint_dialect, register_dialect
    from app.console import security, views  # noqa: F401 - views register their routes on bp

    app.register_blueprint(bp)
    register_blueprint_dialect(app, bp.name, security.render_error)
    register_dialect(app, PREFIX, security.render_error)

    @app.get("/")
    def root():
        """The console (a browser opening the server's address lands there)."""
        return redirect(url_for("console.overview"))

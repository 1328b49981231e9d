"""chatport: a self-hosted API server for LLM chatbots and prompt automations."""
import os
import sys

__version__ = "0.1.0"


def configured_flask(test_config=None):
    """The Flask object with its configuration layered and nothing else set up (no database,
    no blueprints): what ``create_app`` builds on, and what ``chatport serve`` reads its
    settings from before it starts gunicorn.

    Configuration layers, later wins: ``app.config.DEFAULTS``, the instance
    folder's ``config.py`` (optional), ``CHATPORT_*`` environment variables,
    then ``test_config``. The instance folder is ``./instance`` beside the
    package (in the current folder for the one-file binary, whose package lives in a temporary
    folder) unless ``CHATPORT_INSTANCE_PATH`` names another. ``PLUGINS_DIR`` is resolved here
    to an absolute path (default ``plugins/`` in the instance folder).
    """
    # Imported here, not at the top: `python -m app _gunicorn` (the gunicorn master of
    # `chatport serve`) imports this package and should load no more than gunicorn does.
    from flask import Flask

    instance_path = os.environ.get("CHATPORT_INSTANCE_PATH")
    if test_config and test_config.get("INSTANCE_PATH"):
        instance_path = test_config["INSTANCE_PATH"]
    if not instance_path and getattr(sys, "frozen", False):
        instance_path = "instance"
    app = Flask(
        __name__,
        instance_path=os.path.abspath(instance_path) if instance_path else None,
        instance_relative_config=True,
    )
    # JSON bodies keep the order the code builds them in, as the documented examples of each API
    # show them; sorting every response's keys would cost CPU for nothing.
    app.json.sort_keys = False
    from app.routing import LazyBuildRule

    app.url_rule_class = LazyBuildRule
    from app.config import DEFAULTS

    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("CHATPORT")
    if test_config:
        app.config.from_mapping(test_config)
    app.config["PLUGINS_DIR"] = os.path.join(app.instance_path, app.config.get("PLUGINS_DIR") or "plugins")
    return app


def create_app(test_config=None):
    """Build the WSGI app, configured as ``configured_flask`` describes.

    Raises ValueError for a setting out of its range (``app.config.check``).
    """
    from app import config

    app = configured_flask(test_config)
    config.check(app.config)
    os.makedirs(app.instance_path, exist_ok=True)
    if app.config["PROXY_HOPS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    from app.api import errors
    from app.storage import db

    db.init_app(app)
    from app.services import keys as _keys

    _keys.clear_cache()  # lookups cached from another database must not answer for this one
    errors.init_app(app)
    from app import observe

    observe.init_app(app)  # logging first: what follows may log

    from app.api import init_api

    with app.app_context():  # the OpenAPI document shows the bounds configured for this app
        init_api(app)

    from app import console, scheduler

    console.init_app(app)
    scheduler.init_app(app)

    if app.config["AUTO_UPGRADE"]:
        from app.storage.migrations import upgrade

        upgrade()
        if app.config.get("CHANNEL_CREDIT_QUOTA") is not None:
            from app.metering.limits import seed_channel_counters

            with db.db.connection_context():
                seed_channel_counters()
    if app.config.get("ADMIN_KEY"):
        from app.services.keys import ensure_env_admin_key

        with db.db.connection_context():
            ensure_env_admin_key(app.config["ADMIN_KEY"])
    return app

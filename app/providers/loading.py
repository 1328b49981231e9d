"""Plugin loading: lazily, once per process, from the entry-point group ``chatport``.

Built-in providers (``plugins/``) are registered through the same entry
points as third-party ones (see setup.cfg). ``CHATPORT_PLUGINS`` (a comma
list of entry-point names) restricts which load.
"""
import os
from importlib.metadata import entry_points

import pluggy

from app.providers import hookspecs

_pm = None


def get_plugin_manager():
    """The process-wide PluginManager, loading plugins on first call."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("chatport")
        pm.add_hookspecs(hookspecs)
        allowed = os.environ.get("CHATPORT_PLUGINS")
        allowed = {n.strip() for n in allowed.split(",") if n.strip()} if allowed else None
        for ep in entry_points(group="chatport"):
            if allowed is not None and ep.name not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            pm.register(ep.load(), name=ep.name)
        _pm = pm
    return _pm


def reset():
    """Forget loaded plugins (tests that change CHATPORT_PLUGINS)."""
    global _pm
    _pm = None

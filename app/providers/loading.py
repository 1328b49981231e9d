"""Plugin loading: lazily, once per process, from the entry-point group ``chatport`` and from
the plugins folder (``PLUGINS_DIR``).

Built-in providers (``plugins/``) are registered through the same entry
points as third-party ones (see setup.cfg). Every ``*.py`` module of the
plugins folder (default ``plugins/`` in the instance folder) is a plugin too,
named by its file stem, as datasette's ``--plugins-dir`` does: the way to add
a provider to the one-file binary, which has no site-packages to install
into. ``CHATPORT_PLUGINS`` (a comma list of plugin names) restricts which
load, from either source. A folder module that fails to import is logged and
skipped: one broken file does not keep the server from starting.
"""
import importlib.util
import logging
import os
import sys
from importlib.metadata import entry_points

import pluggy

from app.providers import hookspecs

log = logging.getLogger(__name__)

_pm = None
_loaded_dirs = set()


def _allowed():
    allowed = os.environ.get("CHATPORT_PLUGINS")
    return {n.strip() for n in allowed.split(",") if n.strip()} if allowed else None


def get_plugin_manager(config=None):
    """The process-wide PluginManager, loading plugins on first call.

    ``config`` (an app's configuration) names the plugins folder (``PLUGINS_DIR``, made
    absolute by ``app.configured_flask``); without it the folder is read from the same layers
    (``CHATPORT_INSTANCE_PATH``, the instance's config.py, ``CHATPORT_PLUGINS_DIR``) on the
    first call. Each folder is loaded once per process.
    """
    global _pm
    first = _pm is None
    if first:
        pm = pluggy.PluginManager("chatport")
        pm.add_hookspecs(hookspecs)
        allowed = _allowed()
        for ep in entry_points(group="chatport"):
            if allowed is not None and ep.name not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            pm.register(ep.load(), name=ep.name)
        _pm = pm
    if config is not None:
        load_plugins_dir(_pm, config.get("PLUGINS_DIR"))
    elif first:
        from app import configured_flask

        load_plugins_dir(_pm, configured_flask().config["PLUGINS_DIR"])
    return _pm


def load_plugins_dir(pm, folder):
    """Register each ``*.py`` module of ``folder`` (if it exists) as a plugin named by its file
    stem; a name already registered (an entry point, an earlier folder) is left as it is."""
    if not folder:
        return
    folder = os.path.abspath(folder)
    if folder in _loaded_dirs:
        return
    _loaded_dirs.add(folder)
    if not os.path.isdir(folder):
        return
    allowed = _allowed()
    for filename in sorted(os.listdir(folder)):
        name, ext = os.path.splitext(filename)
        if ext != ".py" or name.startswith((".", "_")):
            continue
        if allowed is not None and name not in allowed:
            continue
        if pm.get_plugin(name) is not None:
            log.warning("plugin %s in %s skipped: a plugin of that name is already loaded", name, folder)
            continue
        path = os.path.join(folder, filename)
        # A private module name, so a folder module cannot shadow an importable package (and
        # `import echo` elsewhere does not find it); the plugin keeps its plain name.
        module_name = f"chatport_plugins_dir.{name}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            pm.register(module, name=name)
        except Exception:
            sys.modules.pop(module_name, None)
            log.exception("plugin %s (%s) failed to load and is skipped", name, path)


def reset():
    """Forget loaded plugins (tests that change CHATPORT_PLUGINS)."""
    global _pm
    _pm = None
    _loaded_dirs.clear()

"""The layering of the code, read from each module's import statements (including imports inside
functions): views in ``app/api`` and ``app/console`` reach storage only through services, and
nothing below those layers imports them."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BELOW_THE_API = ("app/services", "app/metering", "app/storage", "app/providers", "app/scheduler.py")
STORAGE_INTERNALS = ("app.storage.models", "app.storage.prepared", "peewee")


def _modules(*places):
    """Paths of the ``.py`` files at ``places`` (files or folders, relative to the repo root)."""
    for place in places:
        path = os.path.join(ROOT, place)
        if os.path.isfile(path):
            yield path
            continue
        for folder, _, names in os.walk(path):
            yield from (os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))


def _package(path):
    parts = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
    return parts[:-1]


def _imports(path):
    """Every module name an import statement in ``path`` names, relative imports resolved.

    ``from a.b import c`` yields both ``a.b`` and ``a.b.c``, so importing a submodule by name
    (``from app.storage import models``) counts as importing it.
    """
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = []
            if node.level:
                base = _package(path)[:len(_package(path)) - (node.level - 1)]
            module = ".".join(base + (node.module.split(".") if node.module else []))
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names if alias.name != "*")


def _within(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _offenders(places, forbidden):
    found = {}
    for path in _modules(*places):
        hits = sorted({m for m in _imports(path) if _within(m, forbidden)})
        if hits:
            found[os.path.relpath(path, ROOT)] = hits
    return found


def test_api_views_reach_storage_only_through_services():
    assert list(_modules("app/api"))
    assert _offenders(["app/api"], STORAGE_INTERNALS) == {}


def test_console_views_reach_storage_only_through_services():
    assert list(_modules("app/console"))
    assert _offenders(["app/console"], STORAGE_INTERNALS) == {}


def test_services_and_scheduler_never_import_the_api_layer():
    assert all(os.path.exists(os.path.join(ROOT, p)) for p in BELOW_THE_API)
    assert _offenders(BELOW_THE_API, ("app.api", "app.console")) == {}


def test_the_import_reader_sees_every_form_of_import(tmp_path, monkeypatch):
    """The checks above are only as good as the reader: each spelling of a forbidden import is caught."""
    pkg = tmp_path / "app" / "api"
    pkg.mkdir(parents=True)
    samples = {
        "plain.py": "import peewee\n",
        "dotted.py": "import app.storage.models as m\n",
        "from_module.py": "from app.storage.models import Bot\n",
        "from_package.py": "from app.storage import prepared\n",
        "relative.py": "from ..storage import models\n",
        "lazy.py": "def f():\n    from peewee import fn\n    return fn\n",
        "fine.py": "from app.services import chat\nfrom app.storage.pagination import page_size\n",
    }
    for name, text in samples.items():
        (pkg / name).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", str(tmp_path))
    found = _offenders(["app/api"], STORAGE_INTERNALS)
    assert sorted(os.path.basename(p) for p in found) == sorted(n for n in samples if n != "fine.py")

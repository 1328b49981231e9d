"""Knowledge integrity: channels and scoped keys stay inside their bots, get-or-create under
concurrency, all-or-nothing writes, a full-text index that survives VACUUM, large tag filters,
and the layering of services below the API."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_services_and_scheduler_never_import_the_api_layer():
    paths = [os.path.join(ROOT, "app", "scheduler.py")]
    for folder in ("services", "storage", "metering"):
        base = os.path.join(ROOT, "app", folder)
        paths += [os.path.join(base, n) for n in os.listdir(base) if n.endswith(".py")]
    offenders = {os.path.relpath(p, ROOT): m for p in paths for m in _imports(p)
                 if m == "app.api" or m.startswith("app.api.")}
    assert offenders == {}

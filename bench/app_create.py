"""Creating the app: what every worker start, CLI command and test pays.

    .venv/bin/python -m bench.app_create [--apps 30]

Creates ``--apps`` apps (``create_app`` on a new SQLite file each, the test suite's way), in
rounds alternating two ways: ``eager`` writes the URL builders of every rule and the OpenAPI
document when the app is created (werkzeug's own ``Rule``, the document read at once: how
flask-smorest and Flask do it), ``lazy`` is chatport's (``app.routing.LazyBuildRule``, the
document written when first read). Prints the median milliseconds of each and their ratio.
"""
import argparse
import statistics
import tempfile
import time


def create(kind, folder):
    from werkzeug.routing import Rule

    import app.routing
    from app import create_app

    lazy_rule = app.routing.LazyBuildRule
    if kind == "eager":
        app.routing.LazyBuildRule = Rule  # what configured_flask installs as the app's rule class
    try:
        started = time.perf_counter()
        flask_app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{folder}/chatport.db",
                                "INSTANCE_PATH": folder})
        if kind == "eager":
            flask_app.extensions["chatport_api"].spec  # noqa: B018 - writes the document now
        return time.perf_counter() - started
    finally:
        app.routing.LazyBuildRule = lazy_rule


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=30, help="apps of each kind")
    args = parser.parse_args()
    create("lazy", tempfile.mkdtemp())  # imports, once
    times = {"eager": [], "lazy": []}
    for _ in range(args.apps):
        for kind in times:
            times[kind].append(create(kind, tempfile.mkdtemp()))
    eager, lazy = (statistics.median(times[k]) * 1000 for k in ("eager", "lazy"))
    print(f"create_app median ms: eager {eager:.1f}, lazy {lazy:.1f}, eager/lazy {eager / lazy:.2f}")


if __name__ == "__main__":
    main()

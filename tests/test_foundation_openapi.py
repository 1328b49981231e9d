"""OpenAPI: the document builds and documents every chatport API route."""
import json

from .conftest import run_cli


def _rules(app, prefix):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(prefix):
            yield rule


def _openapi_path(rule):
    import re

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def test_every_api_route_is_documented(app, client):
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.")
    missing = []
    for rule in _rules(app, app.config["API_PREFIX"] + "/"):
        path = _openapi_path(rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if method.lower() not in spec["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert not missing, missing
    error = spec["components"]["schemas"]["Error"]["properties"]
    assert {"code", "status", "error", "message", "errors"} <= set(error)
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_openapi_write_command(app, tmp_path):
    out = tmp_path / "openapi.json"
    result = run_cli(app, "openapi", "write", str(out))
    assert result.exit_code == 0, result.output
    assert "/api/v1/bots" in json.loads(out.read_text())["paths"]


def test_docs_page(client):
    resp = client.get("/api/docs")
    assert resp.status_code == 200 and b"swagger" in resp.data.lower()

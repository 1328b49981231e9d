"""Knowledge integrity: channels and scoped keys stay inside their bots, get-or-create under
concurrency, all-or-nothing writes, a full-text index that survives VACUUM, large tag filters,
and the layering of services below the API."""
import ast
import os

import pytest

from app.services import knowledge
from app.storage.db import db
from app.storage.models import BotSource, KnowledgeRow, KnowledgeSource

from .conftest import Api, create_key
from .test_channel_api import assert_fail, make_channel
from .test_mgmt_api import snapshot

K = "/api/v1/knowledge"
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


# ------------------------------------------------------------------ a channel and shared sources

def _synced_source(app, admin, name, text, bot_ids):
    src = admin.post(f"{K}/sources", json={"name": name, "bot_ids": bot_ids}).get_json()
    admin.post(f"{K}/sources/{src['id']}/rows", json={"rows": [{"name": name + ".md", "content": text}]})
    with app.app_context(), db.connection_context():
        knowledge.sync_source(src["id"])
    return src


def test_a_channel_cannot_change_a_source_other_bots_share(admin, client, app):
    bot, ch = make_channel(admin, client)
    other = admin.post("/api/v1/bots", json={"name": "other"}).get_json()
    shared = _synced_source(app, admin, "shared", "Walruses live in the Arctic.", [bot["id"], other["id"]])
    row_id = admin.get(f"{K}/sources/{shared['id']}/rows").get_json()["data"][0]["id"]
    before = snapshot(app)
    body = assert_fail(ch.put("data-sources", {"dataSourceId": shared["id"], "syncInterval": "day"}), 403)
    assert "shared" in body["message"]
    assert_fail(ch.delete("data-sources", {"dataSourceId": shared["id"]}), 403)
    assert_fail(ch.post("data-sources/row", {"dataSourceId": shared["id"],
                                             "dataSourceRows": [{"name": "x", "content": "x"}]}), 403)
    assert_fail(ch.put("data-sources/row", {"dataSourceId": shared["id"],
                                            "dataSourceRows": [{"id": row_id, "content": "changed"}]}), 403)
    assert_fail(ch.delete("data-sources/rows", {"dataSourceId": shared["id"], "dataSourceRows": [{"id": row_id}]}), 403)
    assert snapshot(app) == before  # rows, attachments, sources
    hits = admin.post(f"{K}/search", json={"query": "walruses"}).get_json()["data"]
    assert [h["source_id"] for h in hits] == [shared["id"]]  # the index entries are still there
    # reading it is fine, and once it is the channel's bot's alone, the channel may change it
    assert ch.get(f"data-sources?dataSourceId={shared['id']}").get_json()["success"] is True
    admin.patch(f"{K}/sources/{shared['id']}", json={"bot_ids": [bot["id"]]})
    assert ch.put("data-sources", {"dataSourceId": shared["id"], "syncInterval": "day"}).get_json()[
        "dataSource"]["syncInterval"] == "day"
    assert ch.delete("data-sources", {"dataSourceId": shared["id"]}).get_json() == {"success": True}
    with app.app_context(), db.connection_context():
        assert KnowledgeSource.select().count() == 0 and KnowledgeRow.select().count() == 0
        assert BotSource.select().count() == 0
    assert admin.post(f"{K}/search", json={"query": "walruses"}).get_json()["data"] == []

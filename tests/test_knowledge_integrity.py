"""Knowledge integrity: channels and scoped keys stay inside their bots, get-or-create under
concurrency, all-or-nothing writes, a full-text index that survives VACUUM, and large tag filters."""
import pytest

from app.services import knowledge
from app.storage.db import db
from app.storage.models import BotSource, KnowledgeRow, KnowledgeSource

from .conftest import Api, create_key
from .test_channel_api import assert_fail, make_channel
from .test_mgmt_api import snapshot

K = "/api/v1/knowledge"


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


# ------------------------------------------------------------------ a scoped key reads only its sources


def _two_bots_with_sources(app, admin):
    a = admin.post("/api/v1/bots", json={"name": "a"}).get_json()
    b = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    sa = _synced_source(app, admin, "alpha", "Lions of Alpha sleep twenty hours.", [a["id"]])
    sb = _synced_source(app, admin, "beta", "Lions of Beta hunt at dawn, a secret.", [b["id"]])
    return a, b, sa, sb


def test_search_tells_no_difference_between_unknown_and_not_yours(app, client, admin):
    a, b, sa, sb = _two_bots_with_sources(app, admin)
    scoped = Api(client, create_key(app, kind="client", bot_ids=[a["id"]]))
    unknown_id = "00000000-0000-4000-8000-000000000000"
    for mine, theirs, unknown in ((sa["id"], sb["id"], unknown_id), ("alpha", "beta", "gamma")):
        not_yours = scoped.post(f"{K}/search", json={"query": "lions", "source_ids": [theirs]})
        missing = scoped.post(f"{K}/search", json={"query": "lions", "source_ids": [unknown]})
        assert not_yours.status_code == missing.status_code == 404
        assert not_yours.get_json()["message"] == missing.get_json()["message"].replace(unknown, theirs)
        assert theirs in not_yours.get_json()["message"]
        both = scoped.post(f"{K}/search", json={"query": "lions", "source_ids": [mine, theirs]})
        assert both.status_code == 404  # never the allowed part alone
        hits = scoped.post(f"{K}/search", json={"query": "lions", "source_ids": [mine]}).get_json()["data"]
        assert {h["source_id"] for h in hits} == {sa["id"]}
    everything = admin.post(f"{K}/search", json={"query": "lions", "source_ids": ["beta"]}).get_json()["data"]
    assert {h["source_id"] for h in everything} == {sb["id"]}  # an admin key names any source


FLOW = {"name": "Lions", "inputs": [{"name": "q"}],
        "steps": [{"prompt": "Lions question: {{ q }}", "model": "echo/echo", "context": {"sources": ["alpha"]}}]}


def _run(api, flow_id, dialect, override):
    if dialect == "flows":
        resp = api.post(f"/v1/flows/{flow_id}/generate",
                        json={"flow": {"inputs": {"q": "lions"}}, "steps": {"step1": {"context": override}}})
        return resp, (resp.get_json()["results"]["result"] if resp.status_code == 200 else None)
    resp = api.post(f"/api/v1/automations/{flow_id}/run",
                    json={"inputs": {"q": "lions"}, "steps": {"step1": {"context": override}}})
    return resp, (resp.get_json()["result"] if resp.status_code == 200 else None)


@pytest.mark.parametrize("dialect", ["flows", "chatport"])
def test_step_overrides_stay_inside_the_keys_scope(app, client, admin, dialect):
    a, b, sa, sb = _two_bots_with_sources(app, admin)
    admin.post(f"{K}/sources", json={"name": "loose"})  # attached to no bot
    flow = admin.post("/api/v1/automations", json=FLOW).get_json()
    scoped = Api(client, create_key(app, kind="client", bot_ids=[a["id"]], automation_ids=[flow["id"]]))
    before = {k: v for k, v in snapshot(app).items() if k != "AutomationRun"}
    for override in ({"folders": {"ids": [sb["id"]]}}, {"folders": {"names": ["beta"]}},
                     {"folders": {"ids": [sa["id"]], "names": ["beta"]}}, {"folders": {"names": ["loose"]}}):
        resp, _ = _run(scoped, flow["id"], dialect, override)
        assert resp.status_code == 404, (override, resp.get_json())
        body = resp.get_json()
        assert "Unknown data source" in body["message"] and "secret" not in resp.get_data(as_text=True)
        assert body["error"] is True if dialect == "flows" else body["code"] == 404
    for override in ({"folders": {"ids": [], "names": []}}, {}, {"tags": {"names": []}}):
        resp, text = _run(scoped, flow["id"], dialect, override)  # "every source" = every source in scope
        assert resp.status_code == 200, resp.get_json()
        assert "twenty hours" in text and "dawn" not in text
    resp, text = _run(scoped, flow["id"], dialect, {"folders": {"names": ["alpha"]}})
    assert resp.status_code == 200 and "twenty hours" in text
    assert {k: v for k, v in snapshot(app).items() if k != "AutomationRun"} == before
    # an admin key (no bot scope) may still point a step at any source
    resp, text = _run(admin, flow["id"], dialect, {"folders": {"names": ["beta"]}})
    assert resp.status_code == 200 and "dawn" in text


def test_a_scoped_key_may_name_the_sources_its_automation_uses(app, client, admin):
    a, b, sa, sb = _two_bots_with_sources(app, admin)
    flow = admin.post("/api/v1/automations", json={**FLOW, "steps": [
        {**FLOW["steps"][0], "context": {"sources": ["beta"]}}]}).get_json()
    scoped = Api(client, create_key(app, kind="client", bot_ids=[a["id"]], automation_ids=[flow["id"]]))
    for dialect in ("flows", "chatport"):
        resp, text = _run(scoped, flow["id"], dialect, {"folders": {"names": ["beta"]}})
        assert resp.status_code == 200 and "dawn" in text  # the automation reads it anyway
        resp, text = _run(scoped, flow["id"], dialect, {"folders": {}})
        assert resp.status_code == 200 and "dawn" in text and "twenty hours" in text


# ------------------------------------------------------------------ a refused text writes nothing


def test_a_text_source_over_quota_is_refused_whole(app, admin):
    bot = admin.post("/api/v1/bots", json={"name": "kb"}).get_json()
    app.config["KNOWLEDGE_MAX_CHARS"] = 20
    before = snapshot(app)
    refused = admin.post(f"{K}/sources", json={"name": "big", "type": "TEXT", "text": "x" * 21,
                                               "bot_ids": [bot["id"]]})
    assert refused.status_code == 429 and refused.get_json()["code"] == 429
    wrong_type = admin.post(f"{K}/sources", json={"name": "m", "type": "MANUAL", "text": "short"})
    assert wrong_type.status_code == 400 and "text" in wrong_type.get_json()["message"]
    assert snapshot(app) == before  # no source, no attachment, no row
    ok = admin.post(f"{K}/sources", json={"name": "fits", "type": "TEXT", "text": "y" * 20, "bot_ids": [bot["id"]]})
    assert ok.status_code == 201
    with app.app_context(), db.connection_context():
        assert KnowledgeSource.select().count() == 1 and KnowledgeRow.select().count() == 1


def test_a_chatbot_whose_text_is_over_quota_is_not_created(app, admin):
    from app.storage.models import Bot

    created = admin.post("/api/v1/create-chatbot", json={"chatbotName": "Small", "sourceText": "Owls hoot."})
    assert created.status_code == 200
    bot_id = created.get_json()["chatbotId"]
    app.config["KNOWLEDGE_MAX_CHARS"] = 30
    before = snapshot(app)
    refused = admin.post("/api/v1/create-chatbot", json={"chatbotName": "Big", "sourceText": "z" * 31})
    assert refused.status_code == 429 and set(refused.get_json()) == {"message"}
    renamed = admin.post("/api/v1/update-chatbot-data", json={"chatbotId": bot_id, "chatbotName": "Renamed",
                                                              "sourceText": "w" * 31})
    assert renamed.status_code == 429
    assert snapshot(app) == before  # no bot, no source; the first bot keeps its name and text
    with app.app_context(), db.connection_context():
        assert [b.name for b in Bot.select()] == ["Small"] and KnowledgeSource.select().count() == 1
    replaced = admin.post("/api/v1/update-chatbot-data", json={"chatbotId": bot_id, "sourceText": "q" * 30})
    assert replaced.status_code == 200  # the old text does not count against the new one


# ------------------------------------------------------------------ get-or-create under concurrency

THREADS = 8
ROUNDS = 5


def _race(app, work):
    """Run ``work(i)`` in THREADS threads at once, each with its own connection; return the
    exceptions they raised."""
    import threading

    barrier, errors = threading.Barrier(THREADS), []

    def run(i):
        try:
            with app.app_context(), db.connection_context():
                barrier.wait(timeout=30)
                work(i)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_racing_user_upserts_make_one_row_and_lose_no_property(app):
    from app.services import users
    from app.storage.models import EndUser

    for r in range(ROUNDS):
        errors = _race(app, lambda i: users.upsert_user(f"user-{r}", {f"p{i}": i}))
        assert errors == []
        with app.app_context(), db.connection_context():
            rows = list(EndUser.select().where(EndUser.external_id == f"user-{r}"))
            assert len(rows) == 1 and rows[0].properties == {f"p{i}": i for i in range(THREADS)}


def test_racing_first_uses_of_a_conversation_id_make_one_conversation(app):
    from app.services import chatbots
    from app.storage.models import Bot, Conversation

    with app.app_context(), db.connection_context():
        bot = Bot.create(name="b", model="echo/echo")
    seen = []
    for r in range(ROUNDS):
        errors = _race(app, lambda i: seen.append(chatbots.conversation_for(bot, f"conv-{r}").id))
        assert errors == []
    assert sorted(set(seen)) == [f"conv-{r}" for r in range(ROUNDS)]
    with app.app_context(), db.connection_context():
        assert Conversation.select().count() == ROUNDS


def test_racing_writers_of_one_new_tag_make_one_tag(app):
    from app.storage.models import RowTag, Tag

    with app.app_context(), db.connection_context():
        source = knowledge.create_source(name="tags")
    for r in range(ROUNDS):
        errors = _race(app, lambda i: knowledge.add_rows(source, [{"content": f"row {i}", "tags": [f"t{r}"]}]))
        assert errors == []
        with app.app_context(), db.connection_context():
            tags = list(Tag.select().where(Tag.name == f"t{r}"))
            assert len(tags) == 1 and RowTag.select().where(RowTag.tag == tags[0].id).count() == THREADS


# ------------------------------------------------------------------ the full-text index survives VACUUM

WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel", "iris", "juniper"]


def _fruit_source():
    source = knowledge.create_source(name="fruit")
    rows = knowledge.add_rows(source, [{"name": w, "content": f"Common orchard note about {w}."} for w in WORDS])
    knowledge.sync_source(source.id)
    return source, {r.name: r.id for r in rows}


def _found(query):
    return sorted(h["name"] for h in knowledge.search(query, top_k=50))


def _rowids():
    return [r[0] for r in db.execute_sql("SELECT rowid FROM knowledge_chunk ORDER BY rowid")]


@pytest.mark.parametrize("renumber", ["vacuum", "table rebuild"])
def test_deletes_after_vacuum_remove_the_right_index_entries(sqlite_app, renumber):
    """SQLite documents that VACUUM may renumber the implicit rowids of a table without an
    INTEGER PRIMARY KEY; a schema change that rebuilds the table (SQLite's ALTER procedure, as
    ``playhouse.migrate`` runs it) renumbers them for certain."""
    from peewee import TextField
    from playhouse.migrate import SqliteMigrator, migrate

    from app.storage import search_index

    with sqlite_app.app_context(), db.connection_context():
        source, ids = _fruit_source()
        knowledge.delete_rows(source, [ids["banana"], ids["damson"], ids["fig"]])  # gaps in the rowids
        db.execute_sql("VACUUM")
        if renumber == "table rebuild":
            before = _rowids()
            migrate(SqliteMigrator(db).alter_column_type("knowledge_chunk", "heading", TextField(default="")))
            assert _rowids() != before  # the premise: the implicit rowids moved
        knowledge.delete_rows(source, [ids["hazel"]])
        remaining = sorted(set(WORDS) - {"banana", "damson", "fig", "hazel"})
        assert _found("common orchard") == remaining
        assert _found("hazel") == []
        for word in remaining:
            assert _found(word) == [word]
        assert search_index.orphan_count() == 0


def test_upgrade_rebuilds_an_index_keyed_by_the_old_rowids(sqlite_app, tmp_path):
    from app.storage import migrations, search_index
    from app.storage.models import SchemaVersion

    with sqlite_app.app_context(), db.connection_context():
        source, ids = _fruit_source()
        # the schema before version 10: no seq, index entries keyed by the implicit rowid
        db.execute_sql('DROP INDEX "knowledge_chunk_seq"')
        db.execute_sql("ALTER TABLE knowledge_chunk DROP COLUMN seq")
        db.execute_sql("DELETE FROM knowledge_chunk_fts")
        db.execute_sql("INSERT INTO knowledge_chunk_fts (rowid, content, heading, chunk_id, source_id, row_id) "
                       "SELECT rowid, content, heading, id, source_id, row_id FROM knowledge_chunk")
        SchemaVersion.update(version=8).execute()
    from .conftest import make_app

    upgraded = make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path)  # AUTO_UPGRADE
    with upgraded.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert search_index.orphan_count() == 0 and _found("common") == sorted(WORDS)
        knowledge.delete_rows(source, [ids["banana"], ids["damson"]])
        db.execute_sql("VACUUM")
        knowledge.delete_rows(source, [ids["elder"]])
        knowledge.add_rows(source, [{"name": "kiwi", "content": "Common orchard note about kiwi."}])
        knowledge.sync_source(source.id)
        assert _found("common orchard") == sorted(set(WORDS + ["kiwi"]) - {"banana", "damson", "elder"})
        assert search_index.orphan_count() == 0


# ------------------------------------------------------------------ a tag on a large corpus

BULK = 40_000


def _bulk_tagged_source(n):
    """A source of ``n`` rows tagged "bulk" (one indexed chunk each), written by the database
    itself (a recursive CTE: both SQLite and PostgreSQL), in seconds."""
    from app import clock
    from app.storage import search_index
    from app.storage.models import Tag

    source = knowledge.create_source(name="bulk")
    tag = Tag.create(name="bulk")
    p, now = db.param, clock.now()
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {int(n)}) "
    with db.atomic():
        db.execute_sql(numbers + "INSERT INTO knowledge_row (id, source_id, name, content, char_count, status, "
                       f"created_at, updated_at) SELECT 'row-' || i, {p}, 'r' || i, 'walrus note ' || i, 14, "
                       f"'synced', {p}, {p} FROM n", (source.id, now, now))
        db.execute_sql(numbers + "INSERT INTO knowledge_chunk (id, row_id, source_id, position, heading, content, "
                       f"seq) SELECT 'chunk-' || i, 'row-' || i, {p}, 0, '', 'walrus note ' || i, i FROM n",
                       (source.id,))
        db.execute_sql(f"INSERT INTO row_tag (row_id, tag_id) SELECT id, {p} FROM knowledge_row WHERE source_id = {p}",
                       (tag.id, source.id))
        search_index.rebuild()
    return source


def test_a_tag_filter_over_forty_thousand_rows(app):
    import sqlite3

    from app.storage.db import is_sqlite

    with app.app_context(), db.connection_context():
        if is_sqlite():  # SQLite's default build limit (this Python's library may allow more)
            db.connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32766)
        _bulk_tagged_source(BULK)
        loose = knowledge.create_source(name="loose")
        knowledge.add_rows(loose, [{"name": "untagged", "content": "walrus walrus walrus"}])
        knowledge.sync_source(loose.id)
        tag_ids = knowledge.resolve_tag_ids(names=["bulk"])
        hits = knowledge.search("walrus", tag_ids=tag_ids, top_k=50)
        assert len(hits) == 50 and all(h["name"].startswith("r") for h in hits)
        assert knowledge.search("walrus", top_k=1)[0]["name"] == "untagged"  # ranks first unfiltered
        assert knowledge.search_for("walrus", tag_names=["bulk"], top_k=1)[0]["name"] != "untagged"
        assert knowledge.search("walrus note 31337", tag_ids=tag_ids, top_k=1)[0]["name"] == "r31337"


def test_racing_first_texts_of_a_chatbot_make_one_source(app):
    from app.errors import RateLimited
    from app.services import chatbots
    from app.storage.models import Bot

    for r in range(ROUNDS):
        with app.app_context(), db.connection_context():
            bot = Bot.create(name=f"b{r}", model="echo/echo")
        errors = _race(app, lambda i: chatbots.update_chatbot_data(bot, source_text=f"Text number {i}."))
        assert all(isinstance(e, RateLimited) for e in errors), errors  # "a sync is running" at most
        with app.app_context(), db.connection_context():
            sources = list(KnowledgeSource.select().join(BotSource).where(BotSource.bot == bot.id))
            assert len(sources) == 1 and KnowledgeRow.select().where(KnowledgeRow.source == sources[0]).count() == 1

"""Keeping the data: `chatport db backup` / `restore`, `chatport db copy --to postgresql://`,
`chatport export` / `import`."""
import json
import os
import sqlite3
import threading
import time
import uuid

import pytest
import requests

from app.storage.db import db
from app.storage.migrations import LATEST

from .conftest import (
    PG_SKIP_REASON,
    PG_URL,
    Api,
    create_key,
    make_app,
    pg_schema_url,
    run_cli,
)


def populate(app):
    """An instance with a bot, knowledge (synced), a conversation with a tool call and its
    result, an automation and a usage row; returns what the checks look for."""
    from app.services import bots, chat, knowledge
    from app.storage.models import ApiKey, Message, Usage

    admin = create_key(app, kind="admin", name="ops admin")
    with app.app_context(), db.connection_context():
        bot = bots.create_bot(name="Helper", model="echo/echo", instructions="Be brief.")
        source = knowledge.create_source(name="Handbook", bot_ids=[bot.id])
        knowledge.add_rows(source, [{"name": "Lighthouse", "content": "The zephyrine lighthouse keeper logs storms.",
                                     "tags": ["coast"]}])
        knowledge.sync_source(source.id)
        key = ApiKey.get(ApiKey.name == "ops admin")
        conv = chat.start_conversation(bot, surface="api", api_key=key, title="weather talk")
        call = {"id": "call_1", "type": "function", "function": {"name": "forecast", "arguments": '{"city":"Oslo"}'}}
        Message.create(conversation=conv, role="user", content="Weather in Oslo?")
        Message.create(conversation=conv, role="assistant", content="", structure={"tool_calls": [call]})
        Message.create(conversation=conv, role="tool", content="rain", structure={"tool_call_id": "call_1"})
        Usage.create(key_id=key.id, dialect="api", category="chat", endpoint="/x", bot_id=bot.id, credits=3)
    return {"admin": admin, "bot": bot.id, "conversation": conv.id, "source": source.id}


def sqlite_path(app):
    return app.config["DATABASE_URL"][len("sqlite:///"):]


# ---------------------------------------------------------------- backup / restore


def test_backup_while_another_connection_writes(sqlite_app, tmp_path):
    """The backup opens, passes its check and holds every row committed before it started, and
    the rows form a prefix of the writer's sequence (one commit's state, not a mix)."""
    path = sqlite_path(sqlite_app)
    writer = sqlite3.connect(path, timeout=30, check_same_thread=False)
    writer.execute("CREATE TABLE IF NOT EXISTS ops_probe (n INTEGER PRIMARY KEY, pad TEXT)")
    writer.executemany("INSERT INTO ops_probe VALUES (?, ?)", [(i, "x" * 500) for i in range(20000)])
    writer.commit()
    stop, written = threading.Event(), [20000]

    def write():
        while not stop.is_set():
            writer.execute("INSERT INTO ops_probe VALUES (?, ?)", (written[0], "y" * 500))
            writer.commit()
            written[0] += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while written[0] < 20200:  # the writer is well under way
            time.sleep(0.01)
        before = written[0]
        result = run_cli(sqlite_app, "db", "backup", str(tmp_path / "b.db"))
        during = written[0]
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert result.exit_code == 0, result.output
    assert f"schema version {LATEST}" in result.output
    assert during > before  # the writer kept writing while the backup ran
    copy = sqlite3.connect(tmp_path / "b.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count, top = copy.execute("SELECT COUNT(*), MAX(n) FROM ops_probe").fetchone()
    assert count >= before and count == top + 1
    assert copy.execute("SELECT MAX(version) FROM chatport_schema").fetchone()[0] == LATEST
    assert not os.path.exists(tmp_path / "b.db.partial")


def test_backup_never_overwrites(sqlite_app, tmp_path):
    (tmp_path / "b.db").write_text("keep me")
    result = run_cli(sqlite_app, "db", "backup", str(tmp_path / "b.db"))
    assert result.exit_code != 0 and "exists" in result.output
    assert (tmp_path / "b.db").read_text() == "keep me"
    result = run_cli(sqlite_app, "db", "backup", str(tmp_path / "no" / "such" / "b.db"))
    assert result.exit_code != 0 and "no such folder" in result.output


@pytest.mark.postgres
def test_backup_and_restore_refuse_postgres(tmp_path):
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    schema = "t_" + uuid.uuid4().hex[:12]
    with _pg_schema(schema):
        app = make_app(pg_schema_url(schema), tmp_path)
        result = run_cli(app, "db", "backup", str(tmp_path / "b.db"))
        assert result.exit_code != 0 and "pg_dump" in result.output
        result = run_cli(app, "db", "restore", str(tmp_path / "b.db"))
        assert result.exit_code != 0 and "pg_dump" in result.output
        result = run_cli(app, "db", "copy", "--to", pg_schema_url(schema))
        assert result.exit_code != 0 and "already PostgreSQL" in result.output
        db.obj.close_all()


def test_restore_round_trip(sqlite_app, tmp_path):
    from app.storage.models import Bot, Conversation, Message

    seeded = populate(sqlite_app)
    assert run_cli(sqlite_app, "db", "backup", str(tmp_path / "b.db")).exit_code == 0
    with sqlite_app.app_context(), db.connection_context():
        Bot.delete().where(Bot.id == seeded["bot"]).execute()  # cascades to the conversation
        Bot.create(name="Added after the backup", model="echo/echo")

    refused = run_cli(sqlite_app, "db", "restore", str(tmp_path / "b.db"))
    assert refused.exit_code != 0 and "--yes" in refused.output
    with sqlite_app.app_context(), db.connection_context():
        assert [b.name for b in Bot.select()] == ["Added after the backup"]

    result = run_cli(sqlite_app, "db", "restore", "--yes", str(tmp_path / "b.db"))
    assert result.exit_code == 0, result.output
    with sqlite_app.app_context(), db.connection_context():
        assert [b.name for b in Bot.select()] == ["Helper"]
        conv = Conversation.get_by_id(seeded["conversation"])
        assert [m.role for m in conv.messages.order_by(Message.created_at, Message.id)] == ["user", "assistant", "tool"]
    api = sqlite_app.test_client()
    found = api.post("/api/v1/knowledge/search", json={"query": "zephyrine"},
                     headers={"Authorization": f"Bearer {seeded['admin']}"})
    assert found.status_code == 200 and found.get_json()["data"], found.get_json()


def test_restore_into_empty_database_needs_no_yes(sqlite_app, tmp_path):
    populate(sqlite_app)
    assert run_cli(sqlite_app, "db", "backup", str(tmp_path / "b.db")).exit_code == 0
    fresh = make_app(f"sqlite:///{tmp_path}/fresh.db", tmp_path)
    result = run_cli(fresh, "db", "restore", str(tmp_path / "b.db"))
    assert result.exit_code == 0, result.output
    with fresh.app_context(), db.connection_context():
        from app.storage.models import Bot

        assert [b.name for b in Bot.select()] == ["Helper"]


def test_restore_refuses_what_is_not_a_chatport_backup(sqlite_app, tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite at all" * 100)
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE notes (x)")
    other.commit()
    other.close()
    for name, says in (("junk.db", "not a SQLite database"), ("other.db", "not a chatport database"),
                       ("missing.db", "no such file")):
        result = run_cli(sqlite_app, "db", "restore", "--yes", str(tmp_path / name))
        assert result.exit_code != 0 and says in result.output, result.output


def test_restore_refuses_a_newer_schema_and_upgrades_an_older_one(sqlite_app, tmp_path):
    from app.storage.models import Bot

    populate(sqlite_app)
    assert run_cli(sqlite_app, "db", "backup", str(tmp_path / "new.db")).exit_code == 0
    assert run_cli(sqlite_app, "db", "backup", str(tmp_path / "old.db")).exit_code == 0
    newer = sqlite3.connect(tmp_path / "new.db")
    newer.execute("UPDATE chatport_schema SET version = ?", (LATEST + 1,))
    newer.commit()
    newer.close()
    result = run_cli(sqlite_app, "db", "restore", "--yes", str(tmp_path / "new.db"))
    assert result.exit_code != 0 and "newer than this chatport" in result.output

    # Version 14: before console sessions (the step to 15 creates their table).
    older = sqlite3.connect(tmp_path / "old.db")
    older.execute("DROP TABLE console_session")
    older.execute("UPDATE chatport_schema SET version = 14")
    older.commit()
    older.close()
    result = run_cli(sqlite_app, "db", "restore", "--yes", str(tmp_path / "old.db"))
    assert result.exit_code == 0, result.output
    assert f"schema version 14, upgraded to {LATEST}" in result.output
    with sqlite_app.app_context(), db.connection_context():
        assert db.table_exists("console_session")
        assert Bot.select().count() == 1


# ---------------------------------------------------------------- copy to PostgreSQL


class _pg_schema:
    """A fresh PostgreSQL schema, dropped afterwards (as the suite's ``database_url`` does)."""

    def __init__(self, schema):
        self.schema = schema

    def __enter__(self):
        import psycopg2

        self.conn = psycopg2.connect(PG_URL)
        self.conn.autocommit = True
        self.conn.cursor().execute(f"CREATE SCHEMA {self.schema}")
        return pg_schema_url(self.schema)

    def __exit__(self, *exc):
        self.conn.cursor().execute(f"DROP SCHEMA {self.schema} CASCADE")
        self.conn.close()


@pytest.fixture
def pg_target():
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    with _pg_schema("t_" + uuid.uuid4().hex[:12]) as url:
        yield url


def _pg_count(url, table):
    import psycopg2

    schema = url.rsplit("search_path%3D", 1)[1]
    conn = psycopg2.connect(PG_URL)
    try:
        cur = conn.cursor()
        cur.execute(f'SELECT COUNT(*) FROM "{schema}"."{table}"')
        return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.server
def test_copy_to_postgres_then_serve_from_it(tmp_path, pg_target):
    """A populated SQLite instance copied to PostgreSQL; a live `chatport serve` on PostgreSQL
    answers the same admin key, lists the conversation with its tool call, finds the knowledge."""
    from .servers import chatport_server

    instance = tmp_path / "instance"
    app = make_app(f"sqlite:///{instance}/chatport.db", tmp_path)
    seeded = populate(app)
    result = run_cli(app, "db", "copy", "--to", pg_target, "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["message"] == 3 and counts["knowledge_row"] == 1 and counts["usage"] == 1
    assert counts["bot_source"] == 1 and counts["row_tag"] == 1 and counts["api_key"] == 1

    again = run_cli(app, "db", "copy", "--to", pg_target)
    assert again.exit_code != 0 and "--replace" in again.output
    assert _pg_count(pg_target, "message") == 3  # the refusal changed nothing
    db.close()

    with chatport_server(instance, env={"CHATPORT_DATABASE_URL": pg_target}) as base:
        auth = {"Authorization": f"Bearer {seeded['admin']}"}
        convs = requests.get(f"{base}/api/v1/conversations", headers=auth, timeout=10)
        assert convs.status_code == 200, convs.text
        assert [c["id"] for c in convs.json()["data"]] == [seeded["conversation"]]
        msgs = requests.get(f"{base}/api/v1/conversations/{seeded['conversation']}/messages",
                            headers=auth, timeout=10).json()["data"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
        found = requests.post(f"{base}/api/v1/knowledge/search", json={"query": "zephyrine lighthouse"},
                              headers=auth, timeout=10)
        assert found.status_code == 200 and "zephyrine" in found.json()["data"][0]["content"], found.text
        # Serial ids were advanced past the copied ones: a new link row inserts cleanly.
        made = requests.post(f"{base}/api/v1/knowledge/sources", json={"name": "More", "bot_ids": [seeded["bot"]]},
                             headers=auth, timeout=10)
        assert made.status_code == 201, made.text
    assert _pg_count(pg_target, "bot_source") == 2
    with_structure = _pg_structure(pg_target)
    assert with_structure == [{"tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "forecast", "arguments": '{"city":"Oslo"}'}}]}, {"tool_call_id": "call_1"}]


def _pg_structure(url):
    import psycopg2

    schema = url.rsplit("search_path%3D", 1)[1]
    conn = psycopg2.connect(PG_URL)
    try:
        cur = conn.cursor()
        cur.execute(f'SELECT structure FROM "{schema}".message WHERE structure IS NOT NULL ORDER BY role')
        return [json.loads(s) for (s,) in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.postgres
def test_copy_replace_and_refusals(tmp_path, pg_target):
    app = make_app(f"sqlite:///{tmp_path}/a.db", tmp_path)
    populate(app)
    assert run_cli(app, "db", "copy", "--to", pg_target).exit_code == 0
    with app.app_context(), db.connection_context():
        from app.storage.models import Bot

        Bot.create(name="Second", model="echo/echo")
    result = run_cli(app, "db", "copy", "--to", pg_target, "--replace")
    assert result.exit_code == 0, result.output
    assert _pg_count(pg_target, "bot") == 2 and _pg_count(pg_target, "message") == 3
    bad = run_cli(app, "db", "copy", "--to", "mysql://x@localhost/db")
    assert bad.exit_code != 0 and "postgresql://" in bad.output


# ---------------------------------------------------------------- export / import


STORE_FIELDS = [{"name": "store", "type": "text", "searchable": True},
                {"name": "opening_hours", "type": "text", "searchable": True},
                {"name": "size", "type": "number", "searchable": False},
                {"name": "open_sunday", "type": "boolean", "searchable": False},
                {"name": "opened", "type": "date", "searchable": False}]
LYON = {"store": "Lyon", "opening_hours": "9-18", "size": 4, "open_sunday": False, "opened": "2021-03-01"}
PARIS = {"store": "Paris", "opening_hours": "10-20", "size": 12.5, "open_sunday": True,
         "opened": "2019-06-01T08:00:00Z"}


def populate_config(app):
    """Bots, knowledge (a MANUAL source with tagged rows, a TEXT source), tables (one with
    records of every type, attached to two bots; one empty and unattached) and an automation
    whose step context names a source by id and a tag."""
    from app.providers.llm import registry
    from app.services import automations, bots, databases, knowledge

    with app.app_context(), db.connection_context():
        helper = bots.create_bot(name="Helper", model="echo/echo", instructions="Be brief.", temperature=0.3,
                                 allowed_models=["extractive/extractive"])
        bots.create_bot(name="Quiet", model="echo/echo", enabled=False)
        finder = bots.create_bot(name="Finder", model="extractive/extractive")
        stores = databases.create_table(name="stores", description="Our stores", fields=STORE_FIELDS,
                                        config=app.config, bot_ids=[helper.id, finder.id])
        assert databases.import_records(stores, config=app.config, items=[LYON, PARIS])["rejected"] == []
        databases.create_table(name="empty", fields=[{"name": "note"}], config=app.config)
        manual = knowledge.create_source(name="Handbook", bot_ids=[helper.id])
        knowledge.add_rows(manual, [
            {"name": "Lighthouse", "content": "The zephyrine lighthouse keeper logs storms.", "tags": ["coast"]},
            {"name": "Harbour", "content": "Boats moor at the harbour.", "tags": ["coast", "boats"]}])
        knowledge.sync_source(manual.id)
        knowledge.create_source(name="Notes", type="TEXT", text="# Notes\n\nQuartzite cliffs.", bot_ids=[helper.id])
        automations.save({"name": "Summarise", "endpoint": "summarise", "inputs": [{"name": "text"}],
                          "steps": [{"prompt": "Summarise {{ text }}", "model": "echo/echo",
                                     "context": {"sources": [manual.id], "tags": ["coast"], "top_k": 2}}]},
                         registry=registry())


def _strip_time(doc):
    return {k: v for k, v in doc.items() if k != "exported_at"}


def _index_counts():
    """(value index rows, SQLite word index entries without their record): what the record
    indexes hold (call inside an app context)."""
    from app.storage import record_index
    from app.storage.models import DataValue

    return DataValue.select().count(), record_index.orphan_count()


def _ask(api, bot_id, question):
    conv = api.post("/api/v1/conversations", json={"bot_id": bot_id}).get_json()["id"]
    resp = api.post(f"/api/v1/conversations/{conv}/messages", json={"content": question, "stream": False})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["message"]


def test_export_import_round_trip(tmp_path, database_url):
    """An export imported into a fresh instance (SQLite and PostgreSQL) exports the same; its
    knowledge is searchable at once, its records found by a filter (the value index) and by a
    bot's turn (the word index); importing again conflicts (nothing changed) unless --replace,
    which overwrites in place (a table keeps its id and its bot links)."""
    source_app = make_app(f"sqlite:///{tmp_path}/a.db", tmp_path / "a")
    populate_config(source_app)
    out = tmp_path / "export.json"
    result = run_cli(source_app, "export", str(out))
    assert result.exit_code == 0, result.output
    assert "3 bot(s), 2 knowledge source(s), 2 table(s) (2 record(s)), 1 automation(s)" in result.output
    exported = json.loads(out.read_text())
    assert exported["format"] == "chatport-export" and exported["version"] == 2
    step = exported["automations"][0]["steps"][0]
    assert step["context"] == {"sources": ["Handbook"], "tags": ["coast"], "top_k": 2}  # names, not ids
    assert exported["tables"] == [
        {"name": "stores", "description": "Our stores", "fields": STORE_FIELDS,
         "records": [LYON, PARIS]},
        {"name": "empty", "description": "", "fields": [{"name": "note", "type": "text", "searchable": False}],
         "records": []}]
    assert {b["name"]: b["tables"] for b in exported["bots"]} == {"Helper": ["stores"], "Quiet": [],
                                                                  "Finder": ["stores"]}
    db.close()

    target = make_app(database_url, tmp_path)
    admin = create_key(target, kind="admin")
    api = Api(target.test_client(), admin)
    result = run_cli(target, "import", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["created"] == {"knowledge_sources": ["Handbook", "Notes"], "tables": ["stores", "empty"],
                                 "bots": ["Helper", "Quiet", "Finder"], "automations": ["Summarise"]}
    again = run_cli(target, "export", "-")
    assert _strip_time(json.loads(again.output)) == _strip_time(exported)

    found = api.post("/api/v1/knowledge/search", json={"query": "zephyrine"}).get_json()
    assert [p["content"] for p in found["data"]] == ["The zephyrine lighthouse keeper logs storms."]

    tables = {t["name"]: t for t in api.get("/api/v1/databases/tables").get_json()["data"]}
    stores_id = tables["stores"]["id"]
    base = f"/api/v1/databases/tables/{stores_id}/records"
    bot_ids = {b["name"]: b["id"] for b in api.get("/api/v1/bots").get_json()["data"]}
    assert sorted(tables["stores"]["bot_ids"]) == sorted([bot_ids["Helper"], bot_ids["Finder"]])
    assert tables["empty"]["bot_ids"] == []
    by_filter = api.get(f"{base}?filter=size:gte:5").get_json()["data"]
    assert [r["values"]["store"] for r in by_filter] == ["Paris"]
    lyon = api.get(f"{base}?filter=opened:2021-03-01").get_json()["data"]
    assert [r["values"]["store"] for r in lyon] == ["Lyon"]
    message = _ask(api, bot_ids["Finder"], "What are the opening hours of the Lyon store?")
    assert "opening hours: 9-18" in message["content"] and "Paris" not in message["content"]
    assert [(c["table_id"], c["record_id"]) for c in message["citations"]] == [(stores_id, lyon[0]["id"])]
    with target.app_context(), db.connection_context():
        assert _index_counts() == (10, 0)  # five values a record; no stray word entries

    from app.services import bots, databases
    from app.storage.models import Bot, DataRecord, DataTable, KnowledgeRow

    with target.app_context(), db.connection_context():
        helper_id = Bot.get(Bot.name == "Helper").id
        local = bots.create_bot(name="Local", model="echo/echo")  # the instance's own, not in the export
        databases.set_tables_of_bot(local.id, [stores_id])
    conflict = run_cli(target, "import", str(out))
    assert conflict.exit_code != 0 and "--replace" in conflict.output and "nothing imported" in conflict.output
    assert "table 'stores'" in conflict.output
    with target.app_context(), db.connection_context():
        assert (DataTable.select().count(), DataRecord.select().count()) == (2, 2)
    exported["bots"][0]["instructions"] = "Be very brief."
    exported["knowledge_sources"][0]["rows"] = exported["knowledge_sources"][0]["rows"][:1]
    exported["tables"][0]["fields"].append({"name": "city", "type": "text", "searchable": True})
    exported["tables"][0]["records"] = [{"store": "Lyon", "opening_hours": "8-20", "city": "Lyon"}]
    out.write_text(json.dumps(exported))
    result = run_cli(target, "import", str(out), "--replace")
    assert result.exit_code == 0, result.output
    assert "Replaced bots: Helper, Quiet, Finder" in result.output and "Replaced tables: stores, empty" in result.output
    with target.app_context(), db.connection_context():
        assert Bot.select().count() == 4
        helper = Bot.get(Bot.name == "Helper")
        assert (helper.id, helper.instructions) == (helper_id, "Be very brief.")  # in place
        assert KnowledgeRow.select().count() == 2  # Handbook's one row and the TEXT one
        stores = DataTable.get(DataTable.name == "stores")
        assert stores.id == stores_id and [f["name"] for f in stores.spec][-1] == "city"
        assert sorted(databases.bots_of(stores)) == sorted([bot_ids["Helper"], bot_ids["Finder"], local.id])
        assert DataRecord.select().count() == 1
        assert _index_counts() == (3, 0)  # the old records' entries are gone
    hours = api.get(f"{base}?filter=opening_hours:8-20").get_json()["data"]
    assert [r["values"] for r in hours] == [{"store": "Lyon", "opening_hours": "8-20", "city": "Lyon"}]
    assert api.get(f"{base}?filter=size:gte:5").get_json()["data"] == []
    message = _ask(api, bot_ids["Finder"], "What are the opening hours of the Lyon store?")
    assert "opening hours: 8-20" in message["content"] and "9-18" not in message["content"]
    assert [c["record_id"] for c in message["citations"]] == [hours[0]["id"]]


def test_import_is_all_or_nothing(tmp_path, database_url):
    from app.storage.models import Automation, Bot, KnowledgeRow, KnowledgeSource

    app = make_app(database_url, tmp_path)
    doc = {"format": "chatport-export", "version": 1,
           "knowledge_sources": [{"name": "Kb", "rows": [{"name": "a", "content": "alpha"}]}],
           "bots": [{"name": "B", "model": "echo/echo", "sources": ["Kb"]}],
           # The last item is invalid: a template using an undeclared variable.
           "automations": [{"name": "A", "steps": [{"prompt": "{{ nope }}", "model": "echo/echo"}]}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    result = run_cli(app, "import", str(path))
    assert result.exit_code != 0 and "automation 'A'" in result.output and "nope" in result.output
    with app.app_context(), db.connection_context():
        assert [m.select().count() for m in (KnowledgeSource, KnowledgeRow, Bot, Automation)] == [0, 0, 0, 0]

    for bad, says in (({"format": "other"}, "not a chatport export"),
                      ({"format": "chatport-export", "version": 99}, "newer than this chatport"),
                      ({"format": "chatport-export", "version": 1, "bots": [{"name": "x"}, {"name": "x"}]}, "unique"),
                      ({"format": "chatport-export", "version": 1, "bots": [{"name": "x", "sources": ["nope"]}]},
                       "lacks")):
        path.write_text(json.dumps(bad))
        result = run_cli(app, "import", str(path))
        assert result.exit_code != 0 and says in result.output, result.output
    path.write_text("{not json")
    assert "is not JSON" in run_cli(app, "import", str(path)).output


def _table_doc(*records, fields=STORE_FIELDS, name="stores", **extra):
    return {"format": "chatport-export", "version": 2,
            "tables": [{"name": name, "fields": fields, "records": list(records)}], **extra}


def _data_counts(app):
    from app.storage.models import Bot, BotTable, DataRecord, DataTable, DataValue, KnowledgeSource

    with app.app_context(), db.connection_context():
        return [m.select().count() for m in (DataTable, DataRecord, DataValue, BotTable, Bot, KnowledgeSource)]


def test_import_tables_all_or_nothing(tmp_path, database_url):
    """A record the Database API would refuse refuses the whole import, named by its table and
    position: nothing created, and a table it would have replaced keeps its records, indexes
    and links. Malformed table lists are refused before anything is written."""
    app = make_app(database_url, tmp_path)
    api = Api(app.test_client(), create_key(app, kind="admin"))
    path = tmp_path / "doc.json"

    def refused(doc, says, *options):
        path.write_text(json.dumps(doc))
        result = run_cli(app, "import", str(path), *options)
        assert result.exit_code != 0 and "nothing imported" in result.output, result.output
        assert says in result.output, result.output

    bad = _table_doc(LYON, {"store": "Nice", "size": "big"}, PARIS,
                     knowledge_sources=[{"name": "Kb", "rows": [{"name": "a", "content": "alpha"}]}],
                     bots=[{"name": "B", "model": "extractive/extractive", "sources": ["Kb"], "tables": ["stores"]}])
    refused(bad, "table 'stores': record 2: field size must be a number")
    assert _data_counts(app) == [0, 0, 0, 0, 0, 0]
    for record, says in (({"store": "Nice", "colour": "red"}, "record 2: unknown field(s): colour"),
                         ({"opened": "yesterday"}, "record 2: field opened must be an ISO 8601 date"),
                         ("Nice", "record 2: values must be an object"),
                         ({"open_sunday": "yes"}, "record 2: field open_sunday must be true or false")):
        refused(_table_doc(LYON, record), says)
    for doc, says in (
            ({**_table_doc(), "tables": [{"name": "t", "fields": []}, {"name": "t", "fields": []}]}, "unique"),
            ({**_table_doc(), "tables": [{"fields": []}]}, "every item of tables needs a name"),
            ({**_table_doc(), "tables": "stores"}, "tables must be a list of objects"),
            (_table_doc(fields=[{"name": "a", "type": "money"}]), "table 'stores': field a: type must be one of"),
            (_table_doc(fields=None), "table 'stores': fields must be a list"),
            ({**_table_doc(), "tables": [{"name": "t", "fields": [], "records": {"a": 1}}]}, "records must be a list"),
            (_table_doc(bots=[{"name": "B", "model": "echo/echo", "tables": ["nope"]}]),
             "bot 'B' names tables the export lacks: nope"),
            (_table_doc(bots=[{"name": "B", "model": "echo/echo", "tables": "stores"}]),
             "tables must be a list of table names")):
        refused(doc, says)
    assert _data_counts(app) == [0, 0, 0, 0, 0, 0]

    # an instance with the table: a failed --replace leaves it as it was
    path.write_text(json.dumps(_table_doc(LYON, PARIS, bots=[{"name": "B", "model": "extractive/extractive",
                                                               "tables": ["stores"]}])))
    assert run_cli(app, "import", str(path)).exit_code == 0
    before = _data_counts(app)
    assert before == [1, 2, 10, 1, 1, 0]
    bad = _table_doc(LYON, PARIS, {"store": "Nice", "size": float("inf")},
                     bots=[{"name": "B", "model": "extractive/extractive", "tables": []}])
    path.write_text(json.dumps(bad).replace("Infinity", "1e999"))  # json.load reads 1e999 as inf
    result = run_cli(app, "import", str(path), "--replace")
    assert result.exit_code != 0 and "table 'stores': record 3: field size must be a finite number" in result.output
    assert _data_counts(app) == before
    tid = api.get("/api/v1/databases/tables").get_json()["data"][0]["id"]
    found = api.get(f"/api/v1/databases/tables/{tid}/records?filter=store:Paris").get_json()["data"]
    assert [r["values"] for r in found] == [PARIS]
    bot = api.get("/api/v1/bots").get_json()["data"][0]["id"]
    message = _ask(api, bot, "What are the opening hours of the Lyon store?")
    assert "opening hours: 9-18" in message["content"] and len(message["citations"]) == 1


def test_import_tables_within_the_configured_bounds(tmp_path, database_url):
    app = make_app(database_url, tmp_path, DATABASE_MAX_TABLES=2, DATABASE_MAX_FIELDS=2, DATABASE_MAX_RECORDS=2,
                   DATABASE_MAX_RECORD_BYTES=40, DATABASE_IMPORT_MAX_LINES=1)
    path = tmp_path / "doc.json"
    fields = [{"name": "a"}, {"name": "n", "type": "number"}]
    for doc, says in (
            ({**_table_doc(fields=fields), "tables": [{"name": t, "fields": fields} for t in "xyz"]},
             "table 'z': this instance already has 2 tables (DATABASE_MAX_TABLES)"),
            (_table_doc(fields=fields + [{"name": "b"}]), "a table has at most 2 fields (DATABASE_MAX_FIELDS)"),
            (_table_doc({"a": "x"}, {"n": 1}, {"a": "y"}, fields=fields),
             "table 'stores': record 3: the table already holds 2 records (DATABASE_MAX_RECORDS)"),
            (_table_doc({"a": "x" * 50}, fields=fields), "record 1: the record's values take 58 bytes, more than 40")):
        path.write_text(json.dumps(doc))
        result = run_cli(app, "import", str(path))
        assert result.exit_code != 0 and says in result.output, result.output
        assert _data_counts(app) == [0, 0, 0, 0, 0, 0]
    # within the bounds: two records in two import calls of DATABASE_IMPORT_MAX_LINES (1) each
    path.write_text(json.dumps(_table_doc({"a": "x"}, {"n": 1}, fields=fields)))
    result = run_cli(app, "import", str(path))
    assert result.exit_code == 0, result.output
    assert _data_counts(app)[:3] == [1, 2, 2]


def test_a_version_1_export_still_imports(tmp_path, database_url):
    """A document without tables (written before they were exported) imports; a bot it
    replaces keeps its table links, since the document says nothing about them."""
    from app.services import bots, databases

    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        kept = bots.create_bot(name="Kept", model="echo/echo")
        table = databases.create_table(name="stores", fields=STORE_FIELDS, config=app.config, bot_ids=[kept.id])
    doc = {"format": "chatport-export", "version": 1, "exported_at": "2026-01-01T00:00:00Z",
           "bots": [{"name": "Kept", "model": "echo/echo", "instructions": "Changed.", "sources": []},
                    {"name": "New", "model": "echo/echo", "sources": ["Kb"]}],
           "knowledge_sources": [{"name": "Kb", "type": "MANUAL", "rows": [{"name": "a", "content": "alpha"}]}],
           "automations": []}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(doc))
    result = run_cli(app, "import", str(path), "--replace", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["created"]["bots"] == ["New"] and report["replaced"]["bots"] == ["Kept"]
    assert report["created"]["tables"] == report["replaced"]["tables"] == []
    with app.app_context(), db.connection_context():
        assert databases.bots_of(table) == [kept.id]
        assert bots.get_bot(kept.id).instructions == "Changed."
    exported = json.loads(run_cli(app, "export", "-").output)
    assert {b["name"]: b["tables"] for b in exported["bots"]} == {"Kept": ["stores"], "New": []}
    # "tables": [] says the bot has none
    doc["bots"] = [{"name": "Kept", "model": "echo/echo", "tables": []}]
    doc["version"], doc["tables"], doc["knowledge_sources"] = 2, [], []
    path.write_text(json.dumps(doc))
    assert run_cli(app, "import", str(path), "--replace").exit_code == 0
    with app.app_context(), db.connection_context():
        assert databases.bots_of(table) == []


@pytest.mark.postgres
def test_copy_failure_leaves_the_target_untouched(tmp_path, pg_target):
    """One transaction: a row PostgreSQL refuses (a NUL character in text) fails the copy with
    its table named, and the target has not even the schema."""
    import psycopg2

    app = make_app(f"sqlite:///{tmp_path}/a.db", tmp_path)
    populate(app)
    with app.app_context(), db.connection_context():
        from app.storage.models import Usage

        Usage.create(dialect="api", category="chat", endpoint="bad\x00byte")
    result = run_cli(app, "db", "copy", "--to", pg_target)
    assert result.exit_code != 0 and "copying usage failed, nothing was copied" in result.output, result.output
    schema = pg_target.rsplit("search_path%3D", 1)[1]
    conn = psycopg2.connect(PG_URL)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,))
        assert cur.fetchone()[0] == 0
    finally:
        conn.close()


@pytest.mark.parametrize("cmd", [["db", "backup"], ["db", "restore"], ["db", "copy"], ["export"], ["import"]],
                         ids=" ".join)
def test_help(sqlite_app, cmd):
    result = run_cli(sqlite_app, *cmd, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output and len(result.output.splitlines()) > 4

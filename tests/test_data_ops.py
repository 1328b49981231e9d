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


def populate_config(app):
    """Bots, knowledge (a MANUAL source with tagged rows, a TEXT source) and an automation whose
    step context names a source by id and a tag."""
    from app.providers.llm import registry
    from app.services import automations, bots, knowledge

    with app.app_context(), db.connection_context():
        helper = bots.create_bot(name="Helper", model="echo/echo", instructions="Be brief.", temperature=0.3,
                                 allowed_models=["extractive/extractive"])
        bots.create_bot(name="Quiet", model="echo/echo", enabled=False)
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


def test_export_import_round_trip(tmp_path, database_url):
    """An export imported into a fresh instance (SQLite and PostgreSQL) exports the same; its
    knowledge is searchable at once; importing again conflicts (nothing changed) unless
    --replace, which overwrites in place."""
    source_app = make_app(f"sqlite:///{tmp_path}/a.db", tmp_path / "a")
    populate_config(source_app)
    out = tmp_path / "export.json"
    result = run_cli(source_app, "export", str(out))
    assert result.exit_code == 0, result.output
    assert "2 bot(s), 2 knowledge source(s), 1 automation(s)" in result.output
    exported = json.loads(out.read_text())
    assert exported["format"] == "chatport-export" and exported["version"] == 1
    step = exported["automations"][0]["steps"][0]
    assert step["context"] == {"sources": ["Handbook"], "tags": ["coast"], "top_k": 2}  # names, not ids
    db.close()

    target = make_app(database_url, tmp_path)
    admin = create_key(target, kind="admin")
    result = run_cli(target, "import", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["created"] == {"knowledge_sources": ["Handbook", "Notes"], "bots": ["Helper", "Quiet"],
                                 "automations": ["Summarise"]}
    again = run_cli(target, "export", "-")
    assert _strip_time(json.loads(again.output)) == _strip_time(exported)

    found = target.test_client().post("/api/v1/knowledge/search", json={"query": "zephyrine"},
                                      headers={"Authorization": f"Bearer {admin}"}).get_json()
    assert [p["content"] for p in found["data"]] == ["The zephyrine lighthouse keeper logs storms."]

    from app.storage.models import Bot, KnowledgeRow

    with target.app_context(), db.connection_context():
        helper_id = Bot.get(Bot.name == "Helper").id
    conflict = run_cli(target, "import", str(out))
    assert conflict.exit_code != 0 and "--replace" in conflict.output and "nothing imported" in conflict.output
    exported["bots"][0]["instructions"] = "Be very brief."
    exported["knowledge_sources"][0]["rows"] = exported["knowledge_sources"][0]["rows"][:1]
    out.write_text(json.dumps(exported))
    result = run_cli(target, "import", str(out), "--replace")
    assert result.exit_code == 0, result.output
    assert "Replaced bots: Helper, Quiet" in result.output
    with target.app_context(), db.connection_context():
        assert Bot.select().count() == 2
        helper = Bot.get(Bot.name == "Helper")
        assert (helper.id, helper.instructions) == (helper_id, "Be very brief.")  # in place
        assert KnowledgeRow.select().count() == 2  # Handbook's one row and the TEXT one


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

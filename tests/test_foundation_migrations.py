"""Schema versions: an older instance upgrades in place, with its data."""
import pytest
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from app.storage import migrations
from app.storage.db import db, is_sqlite
from app.storage.models import Bot, EndUser, KnowledgeChunk, KnowledgeRow, KnowledgeSource, Message, SchemaVersion

from .conftest import make_app, run_cli


def _downgrade_to_v1():
    """Turn a current database into what version 1 looked like, with data in it."""
    migrator = SqliteMigrator(db) if is_sqlite() else PostgresqlMigrator(db)
    migrate(
        migrator.drop_column("end_user", "last_seen_at"),
        migrator.drop_column("message", "rating_comment"),
    )
    SchemaVersion.update(version=1).execute()
    db.execute_sql("INSERT INTO end_user (id, external_id, properties, created_at, updated_at) "
                   "VALUES ('u1', 'alice', '{\"plan\": \"pro\"}', '2024-01-01 00:00:00', '2024-01-01 00:00:00')")


def _schema():
    """Where the test's tables are: SQLite's main database, or PostgreSQL's current schema
    (peewee's introspection assumes ``public``)."""
    return None if is_sqlite() else db.execute_sql("SELECT current_schema()").fetchone()[0]


def _columns(table):
    return {c.name for c in db.get_columns(table, schema=_schema())}


def test_upgrade_at_startup_keeps_data(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        bot = Bot.create(name="old bot", model="echo/echo")
        _downgrade_to_v1()
        assert "last_seen_at" not in _columns("end_user")
        assert migrations.current_version() == 1
    app2 = make_app(database_url, tmp_path)  # AUTO_UPGRADE at start-up
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert "last_seen_at" in _columns("end_user")
        assert "rating_comment" in _columns("message")
        user = EndUser.get(EndUser.external_id == "alice")
        assert user.properties == {"plan": "pro"}
        assert Bot.get_by_id(bot.id).name == "old bot"
        EndUser.update(last_seen_at=user.created_at).where(EndUser.id == user.id).execute()
        assert SchemaVersion.select().count() == 1


def test_upgrade_by_cli_and_idempotent(database_url, tmp_path):
    app = make_app(database_url, tmp_path, AUTO_UPGRADE=True)
    with app.app_context(), db.connection_context():
        _downgrade_to_v1()
    app = make_app(database_url, tmp_path, AUTO_UPGRADE=False)
    result = run_cli(app, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"from version 1 to {migrations.LATEST}" in result.output
    with app.app_context(), db.connection_context():
        assert "rating_comment" in _columns("message")
        assert EndUser.get(EndUser.external_id == "alice").last_seen_at is None
    again = run_cli(app, "db", "upgrade")
    assert again.exit_code == 0 and "already at version" in again.output


def test_newer_database_refuses(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        SchemaVersion.update(version=migrations.LATEST + 1).execute()
    with pytest.raises(RuntimeError, match="newer than this chatport"):
        make_app(database_url, tmp_path)


def _indexes(table):
    if is_sqlite():
        return {i.name for i in db.get_indexes(table)}
    # The catalogs of this test's schema only: peewee's query reads every schema's table of that
    # name, and a parallel test dropping its schema meanwhile makes that read fail.
    return {name for (name,) in db.execute_sql(
        "SELECT i.relname FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = %s AND t.relname = %s", (_schema(), table)).fetchall()}


def test_v8_drops_the_message_indexes_the_composite_one_covers(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        assert _indexes("message") & {"message_conversation_id", "message_created_at"} == set()
        assert "message_conversation_id_created_at_id" in _indexes("message")
        db.execute_sql('CREATE INDEX "message_conversation_id" ON "message" ("conversation_id")')
        db.execute_sql('CREATE INDEX "message_created_at" ON "message" ("created_at")')
        SchemaVersion.update(version=7).execute()
    app2 = make_app(database_url, tmp_path)  # AUTO_UPGRADE at start-up
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert _indexes("message") & {"message_conversation_id", "message_created_at"} == set()
        assert "message_conversation_id_created_at_id" in _indexes("message")


def test_timestamps_read_back_whatever_text_form_they_were_stored_in(app):
    from datetime import datetime

    from app.storage.models import Conversation

    field = Conversation.created_at
    assert field.python_value("2026-11-25 21:10:11.123456") == datetime(2026, 11, 25, 21, 10, 11, 123456)
    assert field.python_value("2026-11-25 21:10:11") == datetime(2026, 11, 25, 21, 10, 11)
    assert field.python_value("2026-11-25T21:10:11") == datetime(2026, 11, 25, 21, 10, 11)
    assert field.python_value("2026-11-25") == datetime(2026, 11, 25)
    assert field.python_value("not a time") == "not a time"  # as peewee leaves it
    assert field.python_value(None) is None
    with app.app_context(), db.connection_context():
        bot = Bot.create(name="t", model="echo/echo")
        stored = Bot.get_by_id(bot.id).created_at
        assert isinstance(stored, datetime) and stored == bot.created_at


def test_fresh_database_is_latest(app):
    with app.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert Message.select().count() == 0


def test_v12_gives_stop_switches_their_conversation(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        migrator = SqliteMigrator(db) if is_sqlite() else PostgresqlMigrator(db)
        migrate(migrator.drop_column("generation_stop", "conversation_id"),
                migrator.drop_column("generation_stop", "stop_requested"))
        db.execute_sql("INSERT INTO generation_stop (id, created_at) VALUES ('any-id', '2024-01-01 00:00:00')")
        SchemaVersion.update(version=8).execute()
    app2 = make_app(database_url, tmp_path)
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert {"conversation_id", "stop_requested"} <= _columns("generation_stop")
        assert db.execute_sql("SELECT COUNT(*) FROM generation_stop").fetchone()[0] == 0


def _gin_options(index):
    row = db.execute_sql("SELECT c.reloptions FROM pg_class c WHERE c.oid = %s::regclass", (index,)).fetchone()
    return row[0] or []


def test_v18_turns_off_the_knowledge_index_pending_list(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        if not is_sqlite():
            assert "fastupdate=off" in _gin_options("knowledge_chunk_tsv")
            # The index as version 17 created it: with a pending list, and chunks waiting in it.
            db.execute_sql("DROP INDEX knowledge_chunk_tsv")
            db.execute_sql("CREATE INDEX knowledge_chunk_tsv ON knowledge_chunk USING GIN (tsv)")
            assert "fastupdate=off" not in _gin_options("knowledge_chunk_tsv")
            source = KnowledgeSource.create(name="docs")
            row = KnowledgeRow.create(source=source, name="a.md", content="x")
            KnowledgeChunk.insert_many(
                [{"row": row, "source": source, "position": i, "content": f"opening hours {i} lyon"}
                 for i in range(200)]).execute()
        SchemaVersion.update(version=17).execute()
    app2 = make_app(database_url, tmp_path)
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        if not is_sqlite():
            assert "fastupdate=off" in _gin_options("knowledge_chunk_tsv")
            # Nothing left in the list: the migration merged it into the index.
            pending = db.execute_sql(
                "SELECT gin_clean_pending_list('knowledge_chunk_tsv'::regclass)").fetchone()[0]
            assert pending == 0

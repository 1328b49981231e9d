"""Schema versions and forward migrations (``playhouse.migrate``).

A new database gets every table at ``LATEST``. An older one is upgraded in
place, one step at a time, at start-up (``AUTO_UPGRADE``) or by
``chatport db upgrade``. Each step is a function of a migrator; add a step
and bump ``LATEST`` whenever a model changes, and keep old steps untouched.

History:
  1  the first schema.
  2  end users remember when they were last seen; message ratings carry a comment.
  4  the knowledge full-text index (FTS5 table on SQLite, GIN index on PostgreSQL).
  6  rate-limit state in double precision on PostgreSQL (REAL lost seconds at epoch scale);
     usage and rate-limit subjects up to 64 characters ("channel:<id>").
  7  messages indexed by (conversation, created_at, id): history reads stop sorting whole conversations.
  8  the message indexes that one covers (conversation_id; created_at, which no query used) are
     dropped: two fewer index writes per message.
  10 knowledge chunks carry a stable integer key (``seq``) that SQLite's full-text table is keyed
     by (the implicit rowid it used may change on VACUUM); the index is rebuilt.
  11 credit counters per subject and month (the quota is reserved and settled on them, seeded
     with this month's credits from the usage rows) and stream leases (the concurrent-stream cap).
  12 a generation_stop row exists while its generation runs: it names its conversation and
     carries a stop_requested flag.
  13 messages keep their structure when they are more than text (content parts, tool calls,
     the tool call a result answers): ``message.structure``.
  14 a conversation may be with a provider model rather than a bot (``conversation.bot`` may be
     null, ``conversation.model`` names the model), and the Responses API keeps its stored
     responses (``response``: the turn's answer id, its input messages, the request's settings).
  15 console sessions (``console_session``).
  16 the Database API: tables (``data_table``), their bots (``bot_data_table``) and records
     (``data_record``, indexed by (table, id)).
  17 the Database API's record indexes (``app.storage.record_index``): record values for filters
     (``data_value``), and the words of searchable fields in the full-text machinery
     (``data_record.seq`` keys SQLite's FTS5 table; a ``tsvector`` column on PostgreSQL).

On SQLite, steps run with foreign keys off (SQLite's own procedure for table changes: a step
that rebuilds a table, as dropping a NOT NULL does, would otherwise cascade the drop of the old
table to the rows referring to it); ``PRAGMA foreign_key_check`` must pass before the commit.
"""
from contextlib import contextmanager

from peewee import BooleanField, CharField, DateTimeField, DoubleField, IntegerField, TextField
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from app import clock
from app.storage.db import db, is_sqlite
from app.storage.models import ALL_MODELS, SchemaVersion


def _v2(migrator):
    migrate(
        migrator.add_column("end_user", "last_seen_at", DateTimeField(null=True)),
        migrator.add_column("message", "rating_comment", TextField(null=True)),
    )


# Called after a fresh database's tables are created (e.g. full-text indexes
# that are not peewee models). Migration steps that add such things call the
# same function for existing databases.
def _create_search_index():
    from app.storage.search_index import create_schema

    create_schema()


def _create_record_index():
    from app.storage import record_index

    record_index.create_schema()


AFTER_CREATE = [_create_search_index, _create_record_index]

def _v4(migrator):
    from app.storage.search_index import create_schema

    create_schema()


def _v6(migrator):
    if not is_sqlite():  # SQLite's REAL is a double and it does not enforce VARCHAR lengths
        migrate(
            migrator.alter_column_type("rate_limit_state", "tat", DoubleField(default=0)),
            migrator.alter_column_type("rate_limit_state", "key_id", CharField(max_length=64)),
            migrator.alter_column_type("usage", "key_id", CharField(max_length=64, null=True)),
        )


def _v7(migrator):
    db.execute_sql('CREATE INDEX IF NOT EXISTS "message_conversation_id_created_at_id" '
                   'ON "message" ("conversation_id", "created_at", "id")')


def _v8(migrator):
    db.execute_sql('DROP INDEX IF EXISTS "message_conversation_id"')
    db.execute_sql('DROP INDEX IF EXISTS "message_created_at"')


def _v10(migrator):
    from app.storage.search_index import create_schema, rebuild

    if "seq" not in _columns("knowledge_chunk"):
        migrate(migrator.add_column("knowledge_chunk", "seq", IntegerField(null=True)))
    db.execute_sql('CREATE UNIQUE INDEX IF NOT EXISTS "knowledge_chunk_seq" ON "knowledge_chunk" ("seq")')
    create_schema()
    rebuild()


def _v11(migrator):
    from peewee import Value, fn

    from app.metering.limits import month_key, month_start
    from app.storage.models import CreditCounter, StreamLease, Usage

    db.create_tables([CreditCounter, StreamLease], safe=True)
    now = clock.now()
    this_month = (Usage.select(Usage.key_id, Value(month_key(now)), fn.SUM(Usage.credits))
                  .where(Usage.key_id.is_null(False) & (Usage.created_at >= month_start(now)))
                  .group_by(Usage.key_id))
    CreditCounter.insert_from(this_month, [CreditCounter.subject, CreditCounter.month,
                                           CreditCounter.used]).execute()


def _v12(migrator):
    db.execute_sql('DELETE FROM "generation_stop"')  # stop requests naming no conversation
    have = _columns("generation_stop")
    migrate(*[migrator.add_column("generation_stop", name, field) for name, field in (
        ("conversation_id", CharField(max_length=36, null=True)),
        ("stop_requested", BooleanField(default=False))) if name not in have])


def _v13(migrator):
    from app.storage.models import JSONField

    if "structure" not in _columns("message"):
        migrate(migrator.add_column("message", "structure", JSONField(null=True)))


def _v14(migrator):
    from app.storage.models import StoredResponse

    ops = []
    if "model" not in _columns("conversation"):
        ops.append(migrator.add_column("conversation", "model", CharField(max_length=200, null=True)))
    ops.append(migrator.drop_not_null("conversation", "bot_id"))
    migrate(*ops)
    db.create_tables([StoredResponse], safe=True)


def _v15(migrator):
    from app.storage.models import ConsoleSession

    db.create_tables([ConsoleSession], safe=True)


def _v16(migrator):
    from app.storage.models import BotTable, DataRecord, DataTable

    db.create_tables([DataTable, BotTable, DataRecord], safe=True)


def _v17(migrator):
    from app.storage import record_index
    from app.storage.models import DataValue

    if "seq" not in _columns("data_record"):
        migrate(migrator.add_column("data_record", "seq", IntegerField(null=True)))
    db.execute_sql('CREATE UNIQUE INDEX IF NOT EXISTS "data_record_seq" ON "data_record" ("seq")')
    db.create_tables([DataValue], safe=True)
    record_index.create_schema()
    record_index.rebuild()


def _v18(migrator):
    from app.storage import search_index

    search_index.tune_schema()


STEPS = {2: _v2, 4: _v4, 6: _v6, 7: _v7, 8: _v8, 10: _v10, 11: _v11, 12: _v12, 13: _v13, 14: _v14, 15: _v15,
         16: _v16, 17: _v17, 18: _v18}
LATEST = max(STEPS)


def _migrator():
    return SqliteMigrator(db) if is_sqlite() else PostgresqlMigrator(db)


def _lock():
    """Serialise upgrades across processes (several workers start at once)."""
    if is_sqlite():
        return db.atomic("IMMEDIATE")
    txn = db.atomic()
    txn.__enter__()
    db.execute_sql("SELECT pg_advisory_xact_lock(424242)")

    class _Held:
        def __enter__(self):
            return txn

        def __exit__(self, *exc):
            return txn.__exit__(*exc)

    return _Held()


def _table_exists(name):
    """Like ``db.table_exists`` but honours PostgreSQL's search_path (peewee assumes public)."""
    if is_sqlite():
        return db.table_exists(name)
    return db.execute_sql("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None


def _columns(table):
    """A table's column names (on PostgreSQL in the current schema: peewee assumes public)."""
    if is_sqlite():
        return {c.name for c in db.get_columns(table)}
    # The catalog of the current schema alone (peewee's query would assume public).
    return {name for (name,) in db.execute_sql(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (table,)).fetchall()}


@contextmanager
def _foreign_keys_off():
    """On SQLite, foreign keys off around the upgrade's transaction (``PRAGMA foreign_keys`` is
    a no-op inside one); ``_check_foreign_keys`` runs before its commit."""
    if not is_sqlite():
        yield
        return
    db.execute_sql("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        db.execute_sql("PRAGMA foreign_keys=ON")


def _check_foreign_keys():
    """Raises RuntimeError (the upgrade rolls back) when rows refer to nothing (SQLite)."""
    if is_sqlite():
        broken = db.execute_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the schema upgrade left rows of {broken[0][0]} referring to nothing")


def current_version():
    """The stored schema version, or None for a database without chatport tables."""
    if not _table_exists(SchemaVersion._meta.table_name):
        return None
    row = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
    return row.version if row else None


def upgrade():
    """Create or upgrade the schema to ``LATEST``; return (before, after) versions.

    Raises RuntimeError when the database is newer than this code.
    """
    with db.connection_context(), _foreign_keys_off():
        with _lock():
            before = current_version()
            if before is None:
                db.create_tables(ALL_MODELS, safe=True)
                for hook in AFTER_CREATE:
                    hook()
                SchemaVersion.create(version=LATEST, upgraded_at=clock.now())
                return None, LATEST
            if before > LATEST:
                raise RuntimeError(
                    f"database schema is version {before}, newer than this chatport ({LATEST})"
                )
            migrator = _migrator()
            for version in sorted(v for v in STEPS if before < v <= LATEST):
                STEPS[version](migrator)
            _check_foreign_keys()
            if before != LATEST:
                SchemaVersion.delete().execute()
                SchemaVersion.create(version=LATEST, upgraded_at=clock.now())
            return before, LATEST

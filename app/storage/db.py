"""The database: one peewee ``DatabaseProxy`` bound late by the app factory.

SQLite (the default, a file in the instance folder) runs with WAL, foreign
keys, a busy timeout and ``synchronous=NORMAL``. PostgreSQL URLs get a
connection pool. Connections open lazily on first query and close (or
return to the pool) at the end of each request; outside a request use
``with db.connection_context():``.
"""
import os
from urllib.parse import urlparse

from peewee import DatabaseProxy, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import connect as connect_url
from playhouse.pool import PooledSqliteDatabase

db = DatabaseProxy()


class SqliteDatabaseImmediate(PooledSqliteDatabase):
    """Pooled SQLite whose transactions take the write lock up front (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes fails at once with
    "database is locked" when another connection committed in between (WAL
    snapshot); an immediate one waits for the lock with the busy timeout.

    The default is set in ``begin``, where every transaction starts: the
    ``DatabaseProxy`` the app uses has its own ``atomic`` and ``transaction``,
    which reach this database only through ``begin()`` (without a lock type).
    """

    def begin(self, lock_type=None):
        super().begin(lock_type or "IMMEDIATE")


def default_url(instance_path):
    """The default database URL: ``sqlite:///<instance>/chatport.db``."""
    return "sqlite:///" + os.path.join(instance_path, "chatport.db")


def make_database(url, *, busy_timeout_ms=5000, synchronous="NORMAL"):
    """Create (not connect) a peewee database for ``url``.

    Raises ValueError for a scheme chatport does not support.
    """
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite://"):]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if not path or path == ":memory:":
            return SqliteDatabase(":memory:", pragmas={"foreign_keys": 1})
        # A small pool: opening a connection and setting its pragmas on every
        # request cost more than the request's queries.
        return SqliteDatabaseImmediate(
            path,
            max_connections=int(os.environ.get("CHATPORT_SQLITE_POOL_SIZE", "256")),
            stale_timeout=300,
            check_same_thread=False,
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": int(busy_timeout_ms),
                "synchronous": synchronous,
            },
            timeout=busy_timeout_ms / 1000.0,
        )
    if scheme in ("postgres", "postgresql", "postgres+pool", "postgresql+pool"):
        rest = url.split("://", 1)[1]
        return connect_url(
            "postgres+pool://" + rest,
            max_connections=int(os.environ.get("CHATPORT_PG_POOL_SIZE", "20")),
            stale_timeout=300,
            timeout=10,
        )
    raise ValueError(f"unsupported database URL scheme {scheme!r} (use sqlite:/// or postgresql://)")


def is_sqlite():
    """True when the bound database is SQLite."""
    return isinstance(db.obj, SqliteDatabase)


def is_postgres():
    """True when the bound database is PostgreSQL."""
    return isinstance(db.obj, PostgresqlDatabase)


def ping():
    """Run a trivial statement on a connection of its own; raises when the database is unreachable."""
    with db.connection_context():
        db.execute_sql("SELECT 1")


def init_app(app):
    """Bind ``db`` to the app's DATABASE_URL and close connections after each request."""
    url = app.config.get("DATABASE_URL") or default_url(app.instance_path)
    app.config["DATABASE_URL"] = url
    if db.obj is not None and not db.is_closed():
        db.close()
    db.initialize(
        make_database(
            url,
            busy_timeout_ms=app.config["SQLITE_BUSY_TIMEOUT_MS"],
            synchronous=app.config["SQLITE_SYNCHRONOUS"],
        )
    )

    @app.teardown_appcontext
    def _close_db(exc):
        if not db.is_closed():
            db.close()

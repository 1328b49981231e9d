"""SQL built once for the queries every chat turn runs, on the process's own SQLite connection.

peewee builds a query's SQL on every execution, and for the small indexed queries of a turn
(conversation by id, its bot, its recent history, two message inserts, one update) building
cost more CPU than SQLite spent running them. Here each query is built once per database type
with placeholder values, its SQL kept, and later executed with the real parameters.
Results come back as model instances, as peewee's own queries give them (``select``,
``first``, ``joined`` for a query over several models), or as plain tuples (``rows``).

On a SQLite file these statements run on one connection per OS thread (under gevent: one per
worker process) instead of a pooled one. Each is its own autocommit transaction, or a few
share one in ``atomic()``, and SQLite never yields to another greenlet inside a call, so no
statement can interleave with another; threads do not share one (Python's sqlite3 objects are not safe to use from two
threads at once). Two things make this cheaper:
- there is no pool checkout per call;
- the page cache stays warm, where a write through any other connection empties a
  connection's whole cache in WAL mode.
Inside a peewee transaction, and on PostgreSQL, the statements run on the caller's connection.
``session()`` is what a caller outside a request puts around them.
"""
import os
from contextlib import contextmanager, nullcontext

import peewee

from app.storage.db import SqliteDatabaseImmediate, db

_SQL = {}


def sql(key, build, nparams):
    """The SQL of ``build()`` (a peewee query) for this database type, built once.

    ``nparams`` is how many parameters the caller will pass: checked against the built query,
    so a query whose shape adds parameters cannot silently misbind."""
    cache_key = (type(db.obj), key)
    text = _SQL.get(cache_key)
    if text is None:
        text, params = build().sql()
        if len(params) != nparams:
            raise ValueError(f"{key}: the query has {len(params)} parameters, not {nparams}")
        _SQL[cache_key] = text
    return text


def _thread_local():
    """Storage local to the OS thread: under gevent, shared by all the greenlets of a worker
    (``threading.local`` is patched to be per greenlet)."""
    try:
        from gevent import monkey

        return monkey.get_original("_thread", "_local")()
    except ImportError:  # pragma: no cover - gevent is a dependency
        import _thread

        return _thread._local()


def _direct():
    """This thread's own connection to the bound SQLite file, or None: PostgreSQL, in-memory
    SQLite, or a peewee transaction open in this greenlet (its statements must join it)."""
    database = db.obj
    if type(database) is not SqliteDatabaseImmediate or database.in_transaction():
        return None
    local = database.__dict__.get("_chatport_own")
    if local is None:
        local = database.__dict__.setdefault("_chatport_own", _thread_local())
    own = getattr(local, "conn", None)
    if own is None or own[0] != os.getpid():  # not one inherited across a fork
        # the pool's own connect: same file, timeout, pragmas and functions
        own = local.conn = (os.getpid(), peewee.SqliteDatabase._connect(database))
    return own[1]


def session():
    """A context for prepared calls outside a request: nothing on a SQLite file, else a pooled
    connection for the block."""
    if type(db.obj) is SqliteDatabaseImmediate:
        return nullcontext()
    return db.connection_context()


@contextmanager
def atomic():
    """One transaction around a few of these statements (one commit instead of one each).

    On the thread's own SQLite connection: ``BEGIN IMMEDIATE`` ... ``COMMIT``. That connection
    is shared by the greenlets of a worker, so the block must not yield to another greenlet:
    only database statements inside, no network I/O. Elsewhere: ``db.atomic()``."""
    conn = _direct()
    if conn is None:
        with db.atomic():
            yield
        return
    with peewee.__exception_wrapper__:
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        with peewee.__exception_wrapper__:
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # never leave the shared connection inside a transaction
            conn.execute("ROLLBACK")
        raise


def _run(text, params):
    conn = _direct()
    if conn is None:
        return db.execute_sql(text, params)
    with peewee.__exception_wrapper__:  # the same IntegrityError & co. as peewee's own calls
        return conn.execute(text, params)


def select(model, key, build, *params):
    """Model instances (or rows of the selected columns) of the cached query."""
    text = sql(key, build, len(params))
    query = model.raw(text, *params)
    conn = _direct()
    if conn is None:
        return list(query)
    with peewee.__exception_wrapper__:
        return list(query._get_cursor_wrapper(conn.execute(text, params)))


def rows(key, build, *params):
    """The cached query's rows as plain tuples of database values: no model instances, no
    field conversion (for text and numbers read on every call)."""
    text = sql(key, build, len(params))
    conn = _direct()
    if conn is None:
        return db.execute_sql(text, params).fetchall()
    with peewee.__exception_wrapper__:
        return conn.execute(text, params).fetchall()


def columns(model):
    """Every column of ``model``, in the order ``joined`` reads them back."""
    return model._meta.sorted_fields


def joined(key, build, models, *params):
    """Rows of a cached query that selects ``columns(m)`` of each of ``models`` in turn, then
    any extra expressions: for each row, one instance per model (values converted as peewee
    converts them) followed by the extra values as the database returned them."""
    out = []
    for row in rows(key, build, *params):
        items, i = [], 0
        for model in models:
            data = {}
            for f in model._meta.sorted_fields:
                value = row[i]
                data[f.name] = value if value is None else f.python_value(value)
                i += 1
            items.append(model(__no_default__=1, **data))
        items.extend(row[i:])
        out.append(items)
    return out


def first(model, key, build, *params):
    rows = select(model, key, build, *params)
    return rows[0] if rows else None


def execute(key, build, *params):
    """Run a cached UPDATE or DELETE; return the number of rows it changed."""
    return _run(sql(key, build, len(params)), params).rowcount


def insert_values(model, values):
    """INSERT one row given as ``{column name: value}`` naming every column (no model instance
    is built: rows written on every call)."""
    fields = model._meta.sorted_fields
    text = sql(("insert", model.__name__), lambda: model.insert({f: None for f in fields}), len(fields))
    _run(text, [f.db_value(values[f.name]) for f in fields])

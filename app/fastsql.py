"""SQL built once for the queries every chat turn runs.

peewee builds a query's SQL on every execution, and for the small indexed queries of a turn
(conversation by id, its bot, its recent history, two message inserts, one update) building
cost more CPU than SQLite spent running them. Here each query is built once per database type
with placeholder values, its SQL kept, and later executed with the real parameters.
Results come back as model instances, as peewee's own queries give them.
"""
from .db import db

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


def select(model, key, build, *params):
    """Model instances (or rows of the selected columns) of the cached query."""
    return list(model.raw(sql(key, build, len(params)), *params))


def first(model, key, build, *params):
    rows = select(model, key, build, *params)
    return rows[0] if rows else None


def execute(key, build, *params):
    """Run a cached UPDATE or DELETE; return the number of rows it changed."""
    return db.execute_sql(sql(key, build, len(params)), params).rowcount


def insert(instance):
    """INSERT one new model instance (every column, defaults already applied); return it."""
    model = type(instance)
    fields = model._meta.sorted_fields
    text = sql(("insert", model.__name__), lambda: model.insert({f: None for f in fields}), len(fields))
    db.execute_sql(text, [f.db_value(instance.__data__.get(f.name)) for f in fields])
    instance._dirty.clear()
    return instance

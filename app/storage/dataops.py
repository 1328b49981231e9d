"""Keeping the data: backups of a SQLite instance, their restore, and the copy to PostgreSQL.

``backup`` takes a consistent copy of the live SQLite file with SQLite's online backup API
(one step, inside one read transaction: in WAL mode the server's writers go on meanwhile and
the copy is the database as of a commit). ``restore`` writes a backup back into the instance's
database with the same API, then upgrades it to this code's schema. ``copy_to`` moves an
instance from SQLite to PostgreSQL: the target schema created at ``LATEST``, every table of
``ALL_MODELS`` in foreign-key order with its ids, in batches, in one transaction on the target.

Errors the operator must act on raise ``DataOpError`` with a message saying what to do.
"""
import os
import sqlite3
from contextlib import contextmanager

from peewee import AutoField, DatabaseError, sort_models

from app import clock
from app.storage.db import db, is_sqlite, make_database
from app.storage.migrations import AFTER_CREATE, LATEST, current_version, upgrade
from app.storage.models import ALL_MODELS, SchemaVersion

BATCH = 500  # rows per INSERT of the copy (and per fetch from the source)


class DataOpError(Exception):
    """A backup, restore or copy refused: the message says why and what to do."""


def _sqlite_path():
    """The file of the bound SQLite database; DataOpError for PostgreSQL or a memory database."""
    if not is_sqlite():
        raise DataOpError("this instance's database is PostgreSQL: back it up with pg_dump "
                          "(pg_dump --format=custom --file=chatport.dump \"$DATABASE_URL\") and restore "
                          "it with pg_restore; `chatport db backup` and `restore` are for SQLite")
    path = db.obj.database
    if not path or path == ":memory:":
        raise DataOpError("the database is in memory: there is no file to back up or restore")
    return path


def _data_tables():
    """Tables that hold an instance's data (all but the schema version), in foreign-key order."""
    return [m for m in sort_models(ALL_MODELS) if m is not SchemaVersion]


# ---------------------------------------------------------------- backup


def backup(dest):
    """Copy the live SQLite database to the new file ``dest``; return its schema version.

    Written to ``dest + ".partial"`` and renamed when complete and checked, so ``dest`` is
    either absent or a whole backup. Raises DataOpError when ``dest`` exists.
    """
    src_path = _sqlite_path()
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        raise DataOpError(f"{dest} exists: choose a new file (a backup never overwrites one)")
    if os.path.abspath(src_path) == dest:
        raise DataOpError("the backup file is the database itself")
    if not os.path.isdir(os.path.dirname(dest)):
        raise DataOpError(f"{os.path.dirname(dest)}: no such folder")
    partial = dest + ".partial"
    if os.path.exists(partial):
        os.remove(partial)
    src = sqlite3.connect(src_path, timeout=30)
    try:
        out = sqlite3.connect(partial)
        try:
            # pages=-1 (the default): the whole database in one step, under one read lock, so the
            # copy is one commit's state; a stepwise backup restarts whenever another connection
            # writes, which a busy server may never let finish.
            src.backup(out)
            ok = out.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise DataOpError(f"the backup failed its check: {ok}")
            version = out.execute("SELECT MAX(version) FROM chatport_schema").fetchone()[0]
        finally:
            out.close()
        os.replace(partial, dest)
    finally:
        src.close()
        if os.path.exists(partial):
            os.remove(partial)
    return version


# ---------------------------------------------------------------- restore


def backup_version(path):
    """The schema version of the chatport backup at ``path``.

    Raises DataOpError when it is missing, not a SQLite file or not a chatport database.
    """
    if not os.path.isfile(path):
        raise DataOpError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DataOpError(f"{path} cannot be opened: {exc}")
    try:
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise DataOpError(f"{path} is not a SQLite database ({exc})")
        if "chatport_schema" not in tables:
            raise DataOpError(f"{path} is not a chatport database (it has no chatport_schema table)")
        version = conn.execute("SELECT MAX(version) FROM chatport_schema").fetchone()[0]
        if version is None:
            raise DataOpError(f"{path} is not a chatport database (its schema version is missing)")
        return int(version)
    finally:
        conn.close()


def has_data():
    """True when the bound database has a row in any chatport table but the schema version's."""
    with db.connection_context():
        if current_version() is None:
            return False
        # Raw statements on the tables there are: an older schema may lack some (or columns).
        return any(db.execute_sql(f'SELECT 1 FROM "{m._meta.table_name}" LIMIT 1').fetchone()
                   for m in _data_tables() if db.table_exists(m._meta.table_name))


def restore(src, *, replace=False):
    """Replace the instance's SQLite database with the backup ``src``; return (backup's version,
    version after the upgrade).

    Refuses (DataOpError) a file that is not a chatport database, one newer than this code, and,
    unless ``replace``, a current database that holds data. The backup's pages are written into
    the live file with the backup API (which takes SQLite's locks, so another connection sees
    the old database or the new one, never a mix); then the schema is upgraded to ``LATEST``.
    """
    dest_path = _sqlite_path()
    version = backup_version(src)
    if version > LATEST:
        raise DataOpError(f"{src} is at schema version {version}, newer than this chatport ({LATEST}): "
                          "restore it with the chatport version that made it")
    if os.path.abspath(src) == os.path.abspath(dest_path):
        raise DataOpError("the backup file is the database itself")
    if not replace and has_data():
        raise DataOpError("the current database has data: pass --yes to replace it with the backup "
                          "(take a backup of it first)")
    if hasattr(db.obj, "close_all"):
        db.obj.close_all()  # no pooled connection keeps the old database's pages cached
    elif not db.is_closed():
        db.close()
    source = sqlite3.connect(f"file:{os.path.abspath(src)}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(dest_path, timeout=30)
        try:
            source.backup(target)
        except sqlite3.Error as exc:  # e.g. the server holds the write lock past the timeout
            raise DataOpError(f"the restore failed, the database is unchanged: {exc} (stop the server first)")
        finally:
            target.close()
    finally:
        source.close()
    _before, after = upgrade()
    return version, after


# ---------------------------------------------------------------- copy to PostgreSQL


@contextmanager
def _bound(database):
    """Bind the app's database proxy to ``database`` for the block (the schema code, the models
    and the search index all go through it), then back to the one it had."""
    previous = db.obj
    db.initialize(database)
    try:
        yield
    finally:
        if not database.is_closed():
            database.close()
        if hasattr(database, "close_all"):
            database.close_all()
        db.initialize(previous)


def _target_state():
    """(schema version or None, has data) of the bound target database."""
    version = current_version()
    if version is None:
        return None, False
    existing = [m for m in _data_tables() if _exists(m._meta.table_name)]
    return version, any(m.select().exists() for m in existing)


def _exists(table):
    return db.execute_sql("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None


def _source_rows(conn, model):
    """The rows of ``model``'s table in the source, batch by batch, as model field values."""
    fields = model._meta.sorted_fields
    columns = ", ".join('"%s"' % f.column_name for f in fields)
    cursor = conn.execute(f'SELECT {columns} FROM "{model._meta.table_name}"')
    while True:
        batch = cursor.fetchmany(BATCH)
        if not batch:
            return
        # Through each field's python_value, as a peewee read would: JSON text becomes the
        # value, text timestamps datetimes, 0/1 booleans; the insert converts them back.
        yield [tuple(None if v is None else f.python_value(v) for f, v in zip(fields, row)) for row in batch]


def copy_to(url, *, replace=False):
    """Copy the bound SQLite instance into the PostgreSQL database at ``url``; return
    ``{table: rows copied}``.

    The source is read in one read transaction (a consistent snapshot while the server
    writes). On the target, in one transaction: the chatport tables dropped when ``replace``
    (else DataOpError if they hold data), the schema created at ``LATEST``, every table copied
    in foreign-key order with its ids, serial columns advanced past the copied ids, the
    knowledge search index rebuilt. Nothing is left half-copied on failure.
    """
    if not is_sqlite():
        raise DataOpError("this instance's database is already PostgreSQL: the copy moves a SQLite "
                          "instance (copy between PostgreSQL servers with pg_dump | pg_restore)")
    src_path = _sqlite_path()
    if not url.split("://", 1)[0].startswith("postgres"):
        raise DataOpError("--to must be a postgresql:// URL (the copy moves a SQLite instance to PostgreSQL)")
    with db.connection_context():
        version = current_version()
    if version != LATEST:
        raise DataOpError(f"the SQLite database is at schema version {version}, not {LATEST}: "
                          "run `chatport db upgrade` first")
    try:
        target = make_database(url)
    except Exception as exc:  # a malformed URL
        raise DataOpError(f"cannot use {url!r}: {exc}")
    source = sqlite3.connect(src_path, timeout=30, isolation_level=None)
    counts = {}
    try:
        source.execute("BEGIN")  # one snapshot for every table (WAL: writers are not blocked)
        with _bound(target):
            try:
                target.connect(reuse_if_open=True)
            except Exception as exc:
                raise DataOpError(f"cannot connect to the target database: {exc}")
            with db.atomic():
                have, filled = _target_state()
                if filled and not replace:
                    raise DataOpError("the target database already has chatport data: pass --replace "
                                      "to drop it and copy over it")
                if have is not None:
                    for model in reversed(sort_models(ALL_MODELS)):
                        db.execute_sql(f'DROP TABLE IF EXISTS "{model._meta.table_name}" CASCADE')
                db.create_tables(ALL_MODELS)
                for hook in AFTER_CREATE:
                    hook()
                SchemaVersion.create(version=LATEST, upgraded_at=clock.now())
                for model in _data_tables():
                    fields = model._meta.sorted_fields
                    n = 0
                    try:
                        for rows in _source_rows(source, model):
                            model.insert_many(rows, fields=fields).execute()
                            n += len(rows)
                    except (DatabaseError, ValueError) as exc:  # e.g. a NUL character (PostgreSQL text has none)
                        raise DataOpError(f"copying {model._meta.table_name} failed, nothing was copied: "
                                          f"{str(exc).strip()}")
                    counts[model._meta.table_name] = n
                    _advance_serial(model)
                from app.storage.search_index import rebuild

                rebuild()  # PostgreSQL's index is the generated tsv column, filled by the inserts
    finally:
        source.close()
    return counts


def _advance_serial(model):
    """Set a serial primary key's sequence past the largest copied id (the copy inserted them
    explicitly, so the sequence did not move)."""
    pk = model._meta.primary_key
    if not isinstance(pk, AutoField):
        return
    table, column = model._meta.table_name, pk.column_name
    db.execute_sql(
        f'SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(MAX("{column}"), 0) + 1, false) '
        f'FROM "{table}"', (table, column))

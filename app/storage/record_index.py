"""Indexes of the Database API's records: what filters and a bot turn's record search read.

- **Values** (``data_value``): one row per value a record holds, ``(table_id, field, num, txt)``
  with one B-tree over those four columns. Numbers and booleans (0/1) are in ``num`` (a double),
  text and dates (normalised ISO text, which compares as the dates do) in ``txt``, cut to
  ``PREFIX`` characters (PostgreSQL's B-tree refuses keys of more than about 2.7 kB).
  A filter reads the index for *candidates*, a superset of the matches (a long text's prefix,
  an integer beyond 2**53 rounded to a double), and the caller keeps the exact test on the
  record's own values: the index finds, the record decides.
  A value index per (table, field) on the record table would be simpler, but SQLite parses
  every index of the schema when a connection opens and tests every partial index's condition
  on every insert: at 5,000 indexes (100 tables of 50 fields, the default bounds) opening took
  250 ms and an insert 94 ms.
- **Words** of the searchable fields (``data_record.search_text``), in the full-text machinery
  the knowledge index uses (``app.storage.search_index``): SQLite's FTS5 table
  ``data_record_fts`` keyed by ``data_record.seq`` (a stable integer: the implicit rowid may
  change on VACUUM), ranked with BM25; PostgreSQL's stored ``tsvector`` column with a GIN index,
  ranked with ``ts_rank``.

Callers (``app.services.databases``) write inside their own transaction: ``number`` then insert
the records, then ``add``; ``remove`` before deleting or rewriting records.
"""
from app.storage.db import db, is_sqlite
from app.storage.search_index import any_of, terms

PREFIX = 200
BATCH = 500
RARE = 1000


def create_schema():
    """Create the word index (idempotent). Registered in migrations.AFTER_CREATE; the value
    table is a model (``DataValue``)."""
    if is_sqlite():
        db.execute_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS data_record_fts USING fts5("
            "search_text, record_id UNINDEXED, table_id UNINDEXED, tokenize = 'porter unicode61')")
    else:
        db.execute_sql(
            "ALTER TABLE data_record ADD COLUMN IF NOT EXISTS tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', search_text)) STORED")
        db.execute_sql("CREATE INDEX IF NOT EXISTS data_record_tsv ON data_record USING GIN (tsv) "
                       "WITH (fastupdate = off)")


def number(rows):
    """Give new record rows (dicts, not yet inserted) their word-index key ``seq`` (SQLite; call
    inside the write transaction that inserts them: one writer at a time, so the next numbers
    after the current maximum are free)."""
    if not is_sqlite() or not rows:
        return
    top = db.execute_sql("SELECT COALESCE(MAX(seq), 0) FROM data_record").fetchone()[0]
    for offset, row in enumerate(rows, start=1):
        row["seq"] = top + offset


def value_rows(record_id, table_id, values, types):
    """The ``data_value`` rows of one record's ``values`` ({field: value}, checked) given the
    table's ``types`` ({field: type})."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        type_ = types.get(name)
        if type_ in ("number", "boolean"):
            out.append((record_id, table_id, name, float(value), None))
        else:
            out.append((record_id, table_id, name, None, str(value)[:PREFIX]))
    return out


def add(rows, types):
    """Index record rows (dicts with ``id``, ``table``, ``values``, ``search_text`` and, on
    SQLite, ``seq``), already inserted."""
    _insert_values([v for row in rows for v in value_rows(row["id"], row["table"], row["values"], types)])
    if is_sqlite():
        words = [(row["seq"], row["search_text"], row["id"], row["table"]) for row in rows if row["search_text"]]
        for start in range(0, len(words), BATCH):
            part = words[start:start + BATCH]
            db.execute_sql("INSERT INTO data_record_fts (rowid, search_text, record_id, table_id) VALUES "
                           + ",".join(["(?, ?, ?, ?)"] * len(part)), [x for w in part for x in w])


def remove(record_ids):
    """Drop the index entries of these records (before they are deleted or rewritten)."""
    from app.storage.models import DataValue

    record_ids = list(record_ids)
    for start in range(0, len(record_ids), BATCH):
        part = record_ids[start:start + BATCH]
        DataValue.delete().where(DataValue.record.in_(part)).execute()
        if is_sqlite():
            db.execute_sql("DELETE FROM data_record_fts WHERE rowid IN (SELECT seq FROM data_record WHERE id IN (%s))"
                           % ",".join("?" * len(part)), part)


def remove_table(table_id):
    """Drop every index entry of a table's records (before the table's records are deleted)."""
    from app.storage.models import DataValue

    DataValue.delete().where(DataValue.table_id == table_id).execute()
    if is_sqlite():
        db.execute_sql("DELETE FROM data_record_fts WHERE rowid IN (SELECT seq FROM data_record WHERE table_id = ?)",
                       [table_id])


def held(table_id, field):
    """How many records of the table hold a value of ``field``."""
    from app.storage.models import DataValue

    return DataValue.select().where((DataValue.table_id == table_id) & (DataValue.field == field)).count()


def candidates(table_id, field, type_, op, value):
    """A subquery of record ids: a superset of the records whose ``field`` compares to
    ``value`` by ``op`` (eq gt gte lt lte; ``value`` None with eq means "holds a value")."""
    from app.storage.models import DataValue

    query = DataValue.select(DataValue.record).where((DataValue.table_id == table_id) & (DataValue.field == field))
    if value is None:
        return query
    if type_ in ("number", "boolean"):
        column, key = DataValue.num, float(value)
        query = query.where(DataValue.txt.is_null())  # the index's order: the column before num is fixed
    else:
        column, key = DataValue.txt, str(value)[:PREFIX]
        query = query.where(DataValue.num.is_null())
    # inclusive bounds: a cut or rounded key may equal the value's while the value differs
    return query.where({"eq": column == key, "gt": column >= key, "gte": column >= key,
                        "lt": column <= key, "lte": column <= key}[op])


def search(table_ids, words, top_k):
    """``[(record_id, score)]`` best first (higher is better): records of ``table_ids`` whose
    searchable text holds some of ``words`` (a list, as ``databases.query_words`` gives them).

    Ranking every record that holds any word of the question costs in proportion to them (a
    city named by a tenth of 100,000 stores: 40 ms), so the rare words are tried first: words
    held by at most ``RARE`` records in all (counted, up to that bound, by the index). Those
    decide the order anyway (BM25 and ``ts_rank`` weigh a word by its rarity), and the records
    they find are the ones the question is about: the common words are added only when the rare
    ones find nothing (a record that holds only "Lyon" is no answer to a question about the
    store "Lyon 12")."""
    words = terms(" ".join(words))  # the index's own word boundaries and bound
    if not words or not table_ids or top_k <= 0:
        return []
    held = sorted((_held(w), i, w) for i, w in enumerate(words))
    present = [w for n, _, w in held if n]
    rare, total = [], 0
    for n, _, w in held:
        if n == 0:
            continue
        if total + n > RARE:
            break
        rare.append(w)
        total += n
    if not present:
        return []
    hits = _match(rare, table_ids, top_k) if rare else []
    if not hits and len(rare) < len(present):
        hits = _match(present, table_ids, top_k)
    return hits


def _held(word):
    """How many records hold ``word`` (any table), counted up to ``RARE + 1``."""
    if is_sqlite():
        sql = ("SELECT count(*) FROM (SELECT rowid FROM data_record_fts WHERE data_record_fts MATCH ? LIMIT ?)")
    else:
        sql = ("SELECT count(*) FROM (SELECT 1 FROM data_record WHERE tsv @@ to_tsquery('english', %s) LIMIT %s) s")
    return db.execute_sql(sql, [any_of([word]), RARE + 1]).fetchone()[0]


def _match(words, table_ids, top_k):
    if is_sqlite():
        sql = ("SELECT record_id, -bm25(data_record_fts) FROM data_record_fts WHERE data_record_fts MATCH ? "
               "AND table_id IN (%s) ORDER BY bm25(data_record_fts) LIMIT ?" % ",".join("?" * len(table_ids)))
    else:
        sql = ("SELECT id, ts_rank(tsv, q) AS score FROM data_record, to_tsquery('english', %%s) q "
               "WHERE tsv @@ q AND table_id IN (%s) ORDER BY score DESC, id LIMIT %%s"
               % ",".join(["%s"] * len(table_ids)))
    params = [any_of(words), *table_ids, int(top_k)]
    return [(r[0], float(r[1])) for r in db.execute_sql(sql, params).fetchall()]


def rebuild():
    """Re-create every index entry from the records (after a copy or an upgrade): the value rows,
    and on SQLite the words (records without a ``seq`` get one first)."""
    from app.storage.models import DataRecord, DataTable, DataValue

    DataValue.delete().execute()
    if is_sqlite():
        db.execute_sql("UPDATE data_record SET seq = (SELECT COALESCE(MAX(seq), 0) FROM data_record) + rowid "
                       "WHERE seq IS NULL")
        db.execute_sql("DELETE FROM data_record_fts")
        db.execute_sql("INSERT INTO data_record_fts (rowid, search_text, record_id, table_id) "
                       "SELECT seq, search_text, id, table_id FROM data_record WHERE search_text != ''")
    for table in DataTable.select():
        types = {f["name"]: f["type"] for f in table.spec}
        batch = []
        for record in DataRecord.select(DataRecord.id, DataRecord.values).where(DataRecord.table == table).iterator():
            batch.extend(value_rows(record.id, table.id, record.values, types))
            if len(batch) >= BATCH * 4:
                _insert_values(batch)
                batch = []
        _insert_values(batch)


def _insert_values(values):
    """Insert ``data_value`` rows: one statement per ``BATCH`` rows, built here (peewee's
    ``insert_many`` spent 50 µs a row building it: three quarters of a 100,000-record import)."""
    mark = "?" if is_sqlite() else "%s"
    one = "(%s)" % ", ".join([mark] * 5)
    for start in range(0, len(values), BATCH):
        part = values[start:start + BATCH]
        db.execute_sql('INSERT INTO data_value (record_id, table_id, field, num, txt) VALUES '
                       + ", ".join([one] * len(part)), [x for row in part for x in row])


def orphan_count():
    """Word-index entries whose record no longer exists or is keyed otherwise (always 0)."""
    if not is_sqlite():
        return 0
    return db.execute_sql(
        "SELECT count(*) FROM data_record_fts f LEFT JOIN data_record r ON r.id = f.record_id "
        "AND r.seq = f.rowid WHERE r.id IS NULL").fetchone()[0]

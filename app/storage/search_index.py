"""Full-text index of knowledge chunks, behind one small interface.

SQLite: an FTS5 table ranked with BM25. PostgreSQL: a stored ``tsvector``
column (heading and content, English) with a GIN index, ranked with ``ts_rank``. Callers use
``number_chunks``, ``index_chunks``, ``remove_rows``, ``remove_sources`` and ``search``;
an embedding backend could implement the same functions.
"""
import re

from app.storage.db import db, is_sqlite

WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32


def create_schema():
    """Create the index objects (idempotent). Registered in migrations.AFTER_CREATE."""
    if is_sqlite():
        db.execute_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_fts USING fts5("
            "content, heading, chunk_id UNINDEXED, source_id UNINDEXED, row_id UNINDEXED, "
            "tokenize = 'porter unicode61')"
        )
    else:
        # A stored tsvector: ranking reads it instead of re-parsing every matching chunk. The GIN
        # index has no pending list (fastupdate = off): a sync writes thousands of chunks at once,
        # and every search until the next vacuum would otherwise scan them unindexed.
        db.execute_sql(
            "ALTER TABLE knowledge_chunk ADD COLUMN IF NOT EXISTS tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', heading || ' ' || content)) STORED"
        )
        db.execute_sql("CREATE INDEX IF NOT EXISTS knowledge_chunk_tsv ON knowledge_chunk USING GIN (tsv) "
                       "WITH (fastupdate = off)")


def tune_schema():
    """Turn off the pending list of an index created before ``create_schema`` asked for it, and
    merge what the list holds into the index (PostgreSQL; nothing to do on SQLite)."""
    if is_sqlite():
        return
    db.execute_sql("ALTER INDEX knowledge_chunk_tsv SET (fastupdate = off)")
    db.execute_sql("SELECT gin_clean_pending_list('knowledge_chunk_tsv'::regclass)")


def terms(query):
    """The words of a query, de-duplicated, lower-case, bounded: no query syntax survives."""
    seen = []
    for word in WORD.findall((query or "").lower()):
        if word not in seen:
            seen.append(word)
        if len(seen) >= MAX_TERMS:
            break
    return seen


def any_of(words):
    """The full-text query matching any of ``words`` (from ``terms``): an FTS5 ``MATCH`` of quoted
    words joined by OR on SQLite, a ``to_tsquery`` text joined by | on PostgreSQL."""
    if is_sqlite():
        return " OR ".join('"%s"' % w.replace('"', '""') for w in words)
    return " | ".join(words)


def number_chunks(chunks):
    """Give new ``KnowledgeChunk`` objects (not yet inserted) their full-text key ``seq``.

    Call inside the write transaction that inserts them: SQLite runs one writer at a time,
    so the next numbers after the current maximum are free. PostgreSQL needs no key.
    """
    if not is_sqlite() or not chunks:
        return
    top = db.execute_sql("SELECT COALESCE(MAX(seq), 0) FROM knowledge_chunk").fetchone()[0]
    for offset, chunk in enumerate(chunks, start=1):
        chunk.seq = top + offset


def index_chunks(chunks):
    """Add ``KnowledgeChunk`` rows (already inserted, numbered by ``number_chunks``) to the index.

    On SQLite the FTS row's rowid is the chunk's ``seq``, so removing a row's entries is an
    index lookup, not a scan. PostgreSQL indexes the table itself.
    """
    if not is_sqlite() or not chunks:
        return
    row_ids = sorted({c.row_id for c in chunks})
    for start in range(0, len(row_ids), 500):
        part = row_ids[start:start + 500]
        db.execute_sql(
            "INSERT INTO knowledge_chunk_fts (rowid, content, heading, chunk_id, source_id, row_id) "
            "SELECT seq, content, heading, id, source_id, row_id FROM knowledge_chunk WHERE row_id IN (%s)"
            % ",".join("?" * len(part)), part)


def remove_rows(row_ids):
    """Drop the index entries of these rows (call before deleting their chunks)."""
    if is_sqlite() and row_ids:
        row_ids = list(row_ids)
        for start in range(0, len(row_ids), 500):
            part = row_ids[start:start + 500]
            db.execute_sql("DELETE FROM knowledge_chunk_fts WHERE rowid IN "
                           "(SELECT seq FROM knowledge_chunk WHERE row_id IN (%s))" % ",".join("?" * len(part)), part)


def remove_sources(source_ids):
    """Drop the index entries of these sources (call before deleting their chunks)."""
    if is_sqlite() and source_ids:
        db.execute_sql("DELETE FROM knowledge_chunk_fts WHERE rowid IN "
                       "(SELECT seq FROM knowledge_chunk WHERE source_id IN (%s))" % ",".join("?" * len(source_ids)),
                       list(source_ids))


def rebuild():
    """Re-create every index entry from the chunks (SQLite; PostgreSQL's index is the table's).
    Chunks without a ``seq`` get one first."""
    if not is_sqlite():
        return
    db.execute_sql("UPDATE knowledge_chunk SET seq = (SELECT COALESCE(MAX(seq), 0) FROM knowledge_chunk) + rowid "
                   "WHERE seq IS NULL")
    db.execute_sql("DELETE FROM knowledge_chunk_fts")
    db.execute_sql("INSERT INTO knowledge_chunk_fts (rowid, content, heading, chunk_id, source_id, row_id) "
                   "SELECT seq, content, heading, id, source_id, row_id FROM knowledge_chunk")


def search(query, *, source_ids=None, tag_ids=None, top_k=5):
    """``[(chunk_id, score)]`` best first; higher score is better. ``source_ids``/``tag_ids``
    None means no filter, ``[]`` finds nothing. Tags filter through a subquery on ``row_tag``,
    so the statement stays small however many rows carry them."""
    words = terms(query)
    if not words or source_ids == [] or tag_ids == []:
        return []
    if is_sqlite():
        mark = "?"
        sql = "SELECT chunk_id, -bm25(knowledge_chunk_fts) AS score FROM knowledge_chunk_fts WHERE knowledge_chunk_fts MATCH ?"
    else:
        mark = "%s"
        sql = ("SELECT id, ts_rank(tsv, q) AS score FROM knowledge_chunk, to_tsquery('english', %s) q "
               "WHERE tsv @@ q")
    params = [any_of(words)]
    if source_ids is not None:
        sql += " AND source_id IN (%s)" % ",".join([mark] * len(source_ids))
        params += list(source_ids)
    if tag_ids is not None:
        sql += " AND row_id IN (SELECT row_id FROM row_tag WHERE tag_id IN (%s))" % ",".join([mark] * len(tag_ids))
        params += list(tag_ids)
    if is_sqlite():
        sql += " ORDER BY bm25(knowledge_chunk_fts) LIMIT ?"
    else:
        sql += " ORDER BY score DESC, id LIMIT %s"
    params.append(int(top_k))
    return [(r[0], float(r[1])) for r in db.execute_sql(sql, params).fetchall()]


def orphan_count():
    """Index entries whose chunk no longer exists, or is keyed by another ``seq`` (should always be 0)."""
    if not is_sqlite():
        return 0
    return db.execute_sql(
        "SELECT count(*) FROM knowledge_chunk_fts f LEFT JOIN knowledge_chunk c ON c.id = f.chunk_id "
        "AND c.seq = f.rowid WHERE c.id IS NULL").fetchone()[0]

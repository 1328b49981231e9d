"""Knowledge: data sources (folders) of rows (documents), chunked and indexed for retrieval.

This module holds the rules; ``search_index`` holds the database-specific
full-text SQL. Sync chunks each row (markdown-aware: headings, paragraphs,
bounded size, small overlap) and indexes the chunks.
"""
import logging
import re
import threading
import time
from datetime import timedelta

from peewee import OperationalError, fn

from app import clock
from app.errors import BadRequest, Forbidden, NotFound, QuotaExceeded, RateLimited
from app.ids import new_id
from app.storage import prepared, search_index
from app.storage.db import db, is_sqlite
from app.storage.models import BotSource, KnowledgeChunk, KnowledgeRow, KnowledgeSource, RowTag, Tag
from app.storage.pagination import paginate

log = logging.getLogger("chatport.knowledge")

TYPES = ("MANUAL", "TEXT", "URL")
STALE_SYNC = timedelta(minutes=15)  # a claim older than this (crashed worker) may be re-taken
INTERVALS = ("day", "week", "month")
CHUNK_CHARS = 1200
CHUNK_OVERLAP = 150
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


# ---------------------------------------------------------------- chunking


def chunk_markdown(text, max_chars=CHUNK_CHARS, overlap=CHUNK_OVERLAP):
    """``[(heading, content)]``: split at headings, then paragraphs, then sentences, each
    chunk at most ``max_chars`` with ``overlap`` characters carried from the previous one."""
    sections, heading, lines = [], "", []
    for line in (text or "").splitlines():
        m = HEADING.match(line.strip())
        if m:
            if "".join(lines).strip():
                sections.append((heading, "\n".join(lines)))
            heading, lines = m.group(2).strip(), []
        else:
            lines.append(line)
    if "".join(lines).strip():
        sections.append((heading, "\n".join(lines)))
    chunks = []
    for heading, body in sections:
        pieces = []
        for para in re.split(r"\n\s*\n", body):
            para = para.strip()
            if not para:
                continue
            if len(para) <= max_chars:
                pieces.append(para)
            else:  # a long paragraph: by sentences, then hard cuts
                for sentence in re.split(r"(?<=[.!?])\s+", para):
                    while len(sentence) > max_chars:
                        pieces.append(sentence[:max_chars])
                        sentence = sentence[max_chars:]
                    if sentence:
                        pieces.append(sentence)
        current = ""
        for piece in pieces:
            if current and len(current) + 2 + len(piece) > max_chars:
                chunks.append((heading, current))
                tail = current[-overlap:] if overlap else ""
                current = (tail + " " + piece).strip() if len(tail) + 1 + len(piece) <= max_chars else piece
            else:
                current = (current + "\n\n" + piece).strip() if current else piece
        if current:
            chunks.append((heading, current))
    return chunks


# ---------------------------------------------------------------- sources and rows


def _check_interval(interval):
    if interval not in (None,) + INTERVALS:
        raise BadRequest("syncInterval must be day, week, month or null", fields={"syncInterval": "invalid"})


def create_source(*, name, type="MANUAL", url=None, sync_interval=None, bot_ids=(), text=None,
                  max_row_chars=1_000_000, quota=None):
    """Create a source attached to ``bot_ids`` (a TEXT source with its ``text``), all or
    nothing. Raises BadRequest, QuotaExceeded (the text does not fit the storage quota)."""
    if type not in TYPES:
        raise BadRequest(f"type must be one of {', '.join(TYPES)}", fields={"type": "invalid"})
    if (type == "URL") != bool(url):
        raise BadRequest("url is required for URL sources and only for them", fields={"url": "invalid"})
    if url and not url.startswith(("http://", "https://")):
        raise BadRequest("url must start with http:// or https://", fields={"url": "invalid"})
    if text is not None and type != "TEXT":
        raise BadRequest("text is the body of a TEXT source (type TEXT)", fields={"text": "invalid"})
    if url:
        from app.providers import netguard

        try:  # syntax only: addresses are checked (and may change) at every sync
            netguard.parse_url(url)
        except netguard.RefusedAddress as exc:
            raise BadRequest(f"url: {exc}", fields={"url": "invalid"}) from None
    _check_interval(sync_interval)
    with db.atomic():
        source = KnowledgeSource.create(name=name, type=type, url=url, sync_interval=sync_interval)
        attach(source, bot_ids)
        if text is not None:
            replace_text(source, text, max_row_chars=max_row_chars, quota=quota)
    return source


def attach(source, bot_ids):
    """Attach the source to these bots (unknown bots: BadRequest)."""
    from app.services import bots

    for bot_id in bots.existing_ids(bot_ids):
        BotSource.insert(bot=bot_id, source=source).on_conflict_ignore().execute()


def set_bots(source, bot_ids):
    """Attach the source to exactly these bots."""
    with db.atomic():
        BotSource.delete().where(BotSource.source == source).execute()
        attach(source, bot_ids)


def bots_of(source):
    return [link.bot_id for link in BotSource.select(BotSource.bot).where(BotSource.source == source)]


def sources_query(bot_id=None):
    query = KnowledgeSource.select()
    if bot_id is not None:
        query = query.join(BotSource).where(BotSource.bot == bot_id)
    return query


def list_sources(bot_id=None, *, limit=None, cursor=None):
    """One page of data sources (those linked to ``bot_id`` when given), oldest first:
    ``(items, {"total", "last"})``."""
    return paginate(sources_query(bot_id), KnowledgeSource, limit=limit, cursor=cursor)


def sources_by_status():
    """``{status: number of sources}`` of every knowledge source (the metrics' sync-state gauge)."""
    with db.connection_context():
        rows = KnowledgeSource.select(KnowledgeSource.status, fn.COUNT(KnowledgeSource.id)).group_by(
            KnowledgeSource.status).tuples()
        return {status: count for status, count in rows}


def get_source(source_id, bot_id=None):
    """Raises NotFound (also when the source is not attached to ``bot_id``)."""
    source = sources_query(bot_id).where(KnowledgeSource.id == source_id).first()
    if source is None:
        raise NotFound(f"Data source {source_id} not found")
    return source


def _lock_source(source):
    """Hold the source row until the transaction ends: attaching it to a bot (which checks the
    foreign key) waits, so "attached to this bot alone" stays true until the change commits.
    On SQLite the transaction holds the write lock instead (``db.atomic()`` begins IMMEDIATE)."""
    if not is_sqlite():
        KnowledgeSource.select(KnowledgeSource.id).where(KnowledgeSource.id == source.id).for_update().execute()


def _check_sole_owner(source, bot_id):
    """Inside a transaction: raise Forbidden unless ``bot_id`` is the only bot the source is
    attached to (``bot_id`` None: no restriction, as for an admin key)."""
    if bot_id is None:
        return
    _lock_source(source)
    others = BotSource.select().where((BotSource.source == source) & (BotSource.bot != bot_id)).exists()
    if others:
        raise Forbidden(f"Data source {source.id} is shared with other bots: only an admin may change it",
                        code="shared_source")


def update_source(source, *, only_bot=None, bot_ids=None, **changes):
    """Apply ``changes`` (and attach the source to exactly ``bot_ids`` when given), all or
    nothing; with ``only_bot``, only when the source belongs to that bot alone (Forbidden
    otherwise, nothing changed)."""
    if "sync_interval" in changes:
        _check_interval(changes["sync_interval"])
    with db.atomic():
        _check_sole_owner(source, only_bot)
        if bot_ids is not None:
            set_bots(source, bot_ids)
        for field, value in changes.items():
            setattr(source, field, value)
        source.updated_at = clock.now()
        source.save()
    return source


def delete_source(source, *, only_bot=None):
    """Delete a source with its rows, chunks and index entries (one transaction); with
    ``only_bot``, only when the source belongs to that bot alone (Forbidden otherwise)."""
    with db.atomic():
        _check_sole_owner(source, only_bot)
        search_index.remove_sources([source.id])
        source.delete_instance()  # rows, chunks, tags links and bot links cascade


def set_sources_of_bot(bot_id, source_ids):
    """Make ``bot_id`` retrieve from exactly these sources (one transaction). Raises BadRequest
    naming unknown source ids (nothing changed)."""
    source_ids = list(dict.fromkeys(source_ids or []))
    with db.atomic():
        found = ({s.id for s in KnowledgeSource.select(KnowledgeSource.id).where(KnowledgeSource.id.in_(source_ids))}
                 if source_ids else set())
        missing = [s for s in source_ids if s not in found]
        if missing:
            raise BadRequest(f"unknown data source(s): {', '.join(missing)}", fields={"source_ids": "unknown"})
        BotSource.delete().where((BotSource.bot == bot_id) & BotSource.source.not_in(source_ids)).execute()
        for source_id in source_ids:
            BotSource.insert(bot=bot_id, source=source_id).on_conflict_ignore().execute()


def source_ids_of_bot(bot):
    """Ids of the sources attached to ``bot`` (runs on every turn: SQL built once)."""
    bot_id = bot.id if hasattr(bot, "id") else bot
    rows = prepared.select(BotSource, "sources_of_bot",
                          lambda: BotSource.select(BotSource.source).where(BotSource.bot == "?"), bot_id)
    return [row.source_id for row in rows]


def _tag_ids(names):
    ids = []
    for name in names:
        name = name.strip() if isinstance(name, str) else name
        if not isinstance(name, str) or not name or len(name) > 100:
            raise BadRequest("tags must be non-empty strings of at most 100 characters", fields={"tags": "invalid"})
        # insert-or-nothing, then read: racing writers of one new tag make one row
        Tag.insert(id=new_id(), name=name, created_at=clock.now()).on_conflict_ignore().execute()
        tag_id = Tag.select(Tag.id).where(Tag.name == name).scalar()
        if tag_id not in ids:  # a tag named twice on one row is one link
            ids.append(tag_id)
    return ids


def _check_row(row, max_chars):
    name, content = row.get("name", ""), row.get("content")
    if not isinstance(content, str) or not content.strip():
        raise BadRequest("content must be a non-empty string", fields={"content": "empty"})
    if len(content) > max_chars:
        raise BadRequest(f"content is longer than {max_chars} characters", fields={"content": "too long"})
    if not isinstance(name, str) or len(name) > 500:
        raise BadRequest("name must be a string of at most 500 characters", fields={"name": "invalid"})
    tags = row.get("tags") or []
    if not isinstance(tags, list) or len(tags) > 50:
        raise BadRequest("tags must be a list of at most 50 strings", fields={"tags": "invalid"})


def _check_quota(extra_chars, quota):
    if quota is None:
        return
    used = KnowledgeRow.select(fn.COALESCE(fn.SUM(KnowledgeRow.char_count), 0)).scalar()
    if used + extra_chars > quota:
        raise QuotaExceeded(f"Knowledge storage is exhausted ({used} of {quota} characters used)",
                            code="storage_exhausted")


def add_rows(source, rows, *, max_row_chars=1_000_000, quota=None, only_bot=None):
    """Create rows, all or nothing. Raises BadRequest, QuotaExceeded (storage), Forbidden
    (``only_bot`` given and the source is shared with other bots)."""
    for row in rows:
        _check_row(row, max_row_chars)
    created = []
    with db.atomic():
        _check_sole_owner(source, only_bot)
        _check_quota(sum(len(r["content"]) for r in rows), quota)
        for row in rows:
            r = KnowledgeRow.create(source=source, name=row.get("name", ""), content=row["content"],
                                    char_count=len(row["content"]))
            for tag_id in _tag_ids(row.get("tags") or []):
                RowTag.create(row=r, tag=tag_id)
            created.append(r)
        KnowledgeSource.update(status="not_synced", updated_at=clock.now()).where(
            (KnowledgeSource.id == source.id) & (KnowledgeSource.status != "syncing")).execute()
    return created


def rows_query(source):
    return KnowledgeRow.select().where(KnowledgeRow.source == source)


def list_rows(source, *, limit=None, cursor=None):
    """One page of a data source's rows, oldest first: ``(items, {"total", "last"})``."""
    return paginate(rows_query(source), KnowledgeRow, limit=limit, cursor=cursor)


def get_row(source, row_id):
    """Raises NotFound."""
    row = rows_query(source).where(KnowledgeRow.id == row_id).first()
    if row is None:
        raise NotFound(f"Data source row {row_id} not found")
    return row


def _rows_by_id(source, ids):
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
        raise BadRequest("rows must be a non-empty list with string ids", fields={"dataSourceRows": "invalid"})
    found = {r.id: r for r in rows_query(source).where(KnowledgeRow.id.in_(ids))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"Data source row(s) not found: {', '.join(missing)}")
    return found


def update_rows(source, rows, *, max_row_chars=1_000_000, quota=None, only_bot=None):
    """Update name/content/tags of rows by id, all or nothing; they need a new sync.

    Raises BadRequest, NotFound (an id not in the source), QuotaExceeded, Forbidden (see add_rows).
    """
    found = _rows_by_id(source, [r.get("id") for r in rows] if isinstance(rows, list) else None)
    for row in rows:
        merged = {"name": row.get("name", found[row["id"]].name),
                  "content": row.get("content", found[row["id"]].content), "tags": row.get("tags")}
        _check_row(merged, max_row_chars)
    with db.atomic():
        _check_sole_owner(source, only_bot)
        growth = sum(len(r["content"]) - found[r["id"]].char_count for r in rows if "content" in r)
        if growth > 0:
            _check_quota(growth, quota)
        for row in rows:
            target = found[row["id"]]
            if "name" in row:
                target.name = row["name"]
            if "content" in row:
                target.content, target.char_count = row["content"], len(row["content"])
            target.status, target.updated_at = "not_synced", clock.now()
            target.save()
            if row.get("tags") is not None:
                RowTag.delete().where(RowTag.row == target).execute()
                for tag_id in _tag_ids(row["tags"]):
                    RowTag.create(row=target, tag=tag_id)
        KnowledgeSource.update(status="not_synced", updated_at=clock.now()).where(
            (KnowledgeSource.id == source.id) & (KnowledgeSource.status != "syncing")).execute()
    return list(found.values())


def delete_rows(source, ids, *, only_bot=None):
    """Delete rows with their chunks and index entries, all or nothing. Raises NotFound,
    Forbidden (see add_rows)."""
    found = _rows_by_id(source, ids)
    with db.atomic():
        _check_sole_owner(source, only_bot)
        search_index.remove_rows(list(found))
        KnowledgeRow.delete().where(KnowledgeRow.id.in_(list(found))).execute()


def replace_text(source, text, name="text", *, max_row_chars=1_000_000, quota=None):
    """A TEXT source holds one row: replace its content (and its index entries), all or
    nothing. Raises BadRequest, QuotaExceeded (the old text no longer counts)."""
    with db.atomic():
        old = [r.id for r in KnowledgeRow.select(KnowledgeRow.id).where(KnowledgeRow.source == source)]
        search_index.remove_rows(old)
        KnowledgeRow.delete().where(KnowledgeRow.source == source).execute()
        return add_rows(source, [{"name": name, "content": text}], max_row_chars=max_row_chars, quota=quota)


def row_tags(row):
    return [t.name for t in Tag.select(Tag.name).join(RowTag).where(RowTag.row == row).order_by(Tag.name)]


# ---------------------------------------------------------------- sync


SYNC_BATCH = 100


def fetch_options(config):
    """Keyword arguments for ``fetch_text`` from the app's ``KNOWLEDGE_URL_*`` settings."""
    return {"max_bytes": config["KNOWLEDGE_URL_MAX_BYTES"], "timeout": config["KNOWLEDGE_URL_TIMEOUT"],
            "allowed_networks": config["KNOWLEDGE_URL_ALLOWED_NETWORKS"]}


def _row_failed(row_id, exc):
    log.warning("sync of row %s failed: %s", row_id, exc)
    KnowledgeRow.update(status="sync_error", error=f"{type(exc).__name__}: {exc}"[:500]).where(
        KnowledgeRow.id == row_id).execute()


def _index_row(row_id, source_id):
    """(Re)chunk and (re)index one row, inside the caller's transaction."""
    row = KnowledgeRow.get_or_none(KnowledgeRow.id == row_id)
    if row is None:  # deleted meanwhile
        return
    search_index.remove_rows([row.id])
    KnowledgeChunk.delete().where(KnowledgeChunk.row == row).execute()
    chunks = [KnowledgeChunk(row=row.id, source=source_id, position=i, heading=h, content=c)
              for i, (h, c) in enumerate(chunk_markdown(row.content))]
    search_index.number_chunks(chunks)
    KnowledgeChunk.bulk_create(chunks, batch_size=200)
    search_index.index_chunks(chunks)
    KnowledgeRow.update(status="synced", error=None, last_sync=clock.now()).where(KnowledgeRow.id == row.id).execute()


def index_now(source):
    """Chunk and index every row of ``source`` inside the caller's transaction and mark it synced
    (an import: its rows are searchable when it commits, or it is not there at all). A URL
    source with an interval is due at once, so its next sync fetches the page again."""
    row_ids = [r.id for r in KnowledgeRow.select(KnowledgeRow.id).where(KnowledgeRow.source == source)]
    for row_id in row_ids:
        _index_row(row_id, source.id)
    now = clock.now()
    KnowledgeSource.update(status="synced", error=None, last_sync=now, sync_started_at=None,
                           next_sync_at=now if source.sync_interval else None).where(
        KnowledgeSource.id == source.id).execute()


def claim_sync(source_id):
    """Mark the source ``syncing`` if no sync holds it (atomic, across workers).

    Raises RateLimited (429) when a sync is already running.
    """
    now = clock.now()
    claimed = KnowledgeSource.update(status="syncing", sync_started_at=now).where(
        (KnowledgeSource.id == source_id)
        & ((KnowledgeSource.status != "syncing") | (KnowledgeSource.sync_started_at.is_null())
           | (KnowledgeSource.sync_started_at < now - STALE_SYNC))).execute()
    if not claimed:
        raise RateLimited("A sync of this data source is already running", code="sync_running")


def sync_source(source_id, *, claimed=False, fetch_options=None):
    """Chunk and index every row of a source now; return the source.

    Rows move not_synced → syncing → synced (or sync_error with the reason).
    Raises RateLimited when another sync holds the source (unless ``claimed``).
    """
    if not claimed:
        claim_sync(source_id)
    source = KnowledgeSource.get_by_id(source_id)
    if source.type == "URL":
        from app.services.fetch import FetchError, fetch_text

        try:
            text = fetch_text(source.url, **(fetch_options or {}))
        except FetchError as exc:  # the page stays as it was; the reason is kept
            KnowledgeSource.update(status="sync_error", error=str(exc)[:500], sync_started_at=None).where(
                KnowledgeSource.id == source_id).execute()
            return KnowledgeSource.get_by_id(source_id)
        replace_text(source, text, name=source.url[:500])
    KnowledgeRow.update(status="syncing").where(KnowledgeRow.source == source_id).execute()
    # Ids first: iterating a live SELECT while writing keeps an old WAL snapshot open, and
    # the first write after another connection's commit then fails with "database is locked".
    row_ids = [r.id for r in KnowledgeRow.select(KnowledgeRow.id).where(KnowledgeRow.source == source_id)]
    errors = 0
    for start in range(0, len(row_ids), SYNC_BATCH):
        batch = row_ids[start:start + SYNC_BATCH]
        try:  # a batch per short transaction: fast, and a writer never waits long for the lock
            with db.atomic():
                for row_id in batch:
                    _index_row(row_id, source_id)
        except Exception:  # noqa: BLE001 - retry the batch row by row to find the culprit(s)
            log.warning("sync of %s: batch failed, retrying row by row", source_id, exc_info=True)
            for row_id in batch:
                for attempt in range(3):
                    try:
                        with db.atomic():
                            _index_row(row_id, source_id)
                        break
                    except OperationalError as exc:  # e.g. a lock held past the busy timeout
                        if attempt == 2:
                            errors += 1
                            _row_failed(row_id, exc)
                        else:
                            time.sleep(0.2 * (attempt + 1))
                    except Exception as exc:  # noqa: BLE001 - recorded per row
                        errors += 1
                        _row_failed(row_id, exc)
                        break
    now = clock.now()
    interval = {"day": timedelta(days=1), "week": timedelta(weeks=1), "month": timedelta(days=30)}
    KnowledgeSource.update(
        status="sync_error" if errors else "synced", last_sync=source.last_sync if errors else now,
        error=f"{errors} row(s) failed (see the rows' errors)" if errors else None, sync_started_at=None,
        next_sync_at=now + interval[source.sync_interval] if source.sync_interval else None,
    ).where(KnowledgeSource.id == source_id).execute()
    return KnowledgeSource.get_by_id(source_id)


def sync_in_background(source_id, fetch_options=None):
    """Claim the source now (429 if a sync runs), then sync it in a thread (a greenlet
    under gevent); the caller returns at once."""
    claim_sync(source_id)

    def run():
        try:
            with db.connection_context():
                sync_source(source_id, claimed=True, fetch_options=fetch_options)
        except Exception as exc:  # noqa: BLE001
            log.exception("background sync of %s failed", source_id)
            with db.connection_context():
                KnowledgeSource.update(status="sync_error", error=f"sync failed: {type(exc).__name__}: {exc}"[:500],
                                       sync_started_at=None).where(KnowledgeSource.id == source_id).execute()

    thread = threading.Thread(target=run, name=f"sync-{source_id}", daemon=True)
    thread.start()
    return thread


def sync_due(now=None, fetch_options=None):
    """Sync every source whose interval is due, each claimed by exactly one caller; return ids."""
    now = now or clock.now()
    done = []
    due = list(KnowledgeSource.select(KnowledgeSource.id).where(  # a list: see sync_source
        KnowledgeSource.sync_interval.is_null(False) & (KnowledgeSource.next_sync_at <= now)))
    for source in due:
        try:
            claim_sync(source.id)
        except RateLimited:
            continue
        sync_source(source.id, claimed=True, fetch_options=fetch_options)
        done.append(source.id)
    return done


# ---------------------------------------------------------------- search


def resolve_source_ids(ids=(), names=(), *, within=None):
    """Source ids from ids and/or names (a name means every source of that name).

    Both empty: None (every source), or every id of ``within`` when given. ``within`` (ids)
    bounds what may be named: a source outside it is as unknown as one that does not exist,
    with the same message. Raises NotFound.
    """
    ids, names = list(dict.fromkeys(ids or [])), list(dict.fromkeys(names or []))
    if not ids and not names:
        return None if within is None else sorted(within)
    query = KnowledgeSource.select(KnowledgeSource.id, KnowledgeSource.name).where(
        KnowledgeSource.id.in_(ids) | KnowledgeSource.name.in_(names))
    if within is not None:
        query = query.where(KnowledgeSource.id.in_(sorted(within)))
    wanted_ids, wanted_names = set(ids), set(names)
    rows = [r for r in query if r.id in wanted_ids or r.name in wanted_names]
    found_ids, found_names = {r.id for r in rows}, {r.name for r in rows}
    missing = [i for i in ids if i not in found_ids] + [n for n in names if n not in found_names]
    if missing:
        raise NotFound(f"Unknown data source(s): {', '.join(missing)}")
    return sorted(found_ids)


def source_ids_in_scope(bot_scope):
    """Ids of the sources attached to the bots of ``bot_scope``; None (no bound) when it is None."""
    if bot_scope is None:
        return None
    return {s for bot in bot_scope for s in source_ids_of_bot(bot)}


def resolve_tag_ids(ids=(), names=()):
    """Tag ids from ids and/or names; None when both are empty (all). Raises NotFound."""
    ids, names = list(ids or []), list(names or [])
    if not ids and not names:
        return None
    found = {t.id for t in Tag.select(Tag.id).where(Tag.id.in_(ids))} if ids else set()
    by_name = {t.name: t.id for t in Tag.select().where(Tag.name.in_(names))} if names else {}
    missing = [i for i in ids if i not in found] + [n for n in names if n not in by_name]
    if missing:
        raise NotFound(f"Unknown tag(s): {', '.join(map(str, missing))}")
    return sorted(found | set(by_name.values()))


def search(query, *, source_ids=None, tag_ids=None, top_k=5):
    """Ranked passages ``{source_id, row_id, chunk_id, name, content, score}``.

    ``source_ids``/``tag_ids`` None means all; filtering happens in SQL.
    """
    hits = search_index.search(query, source_ids=source_ids, tag_ids=tag_ids, top_k=top_k)
    if not hits:
        return []
    chunks = {c.id: c for c in KnowledgeChunk.select(KnowledgeChunk, KnowledgeRow.id, KnowledgeRow.name)
              .join(KnowledgeRow).where(KnowledgeChunk.id.in_([h[0] for h in hits]))}
    out = []
    for chunk_id, score in hits:
        c = chunks.get(chunk_id)
        if c is not None:
            out.append({"source_id": c.source_id, "row_id": c.row_id, "chunk_id": c.id,
                        "name": c.row.name, "content": c.content, "score": round(score, 6)})
    return out


def search_for(query, *, source_refs=(), tag_names=(), top_k=5, bot_scope=None):
    """Search as an API caller sees it: sources by id or name, tags by name. A key scoped to
    some bots (``bot_scope``) searches only the sources attached to them; naming any other
    source is the same NotFound as naming one that does not exist. Raises NotFound."""
    from app.ids import is_uuid

    source_ids = resolve_source_ids([r for r in source_refs if is_uuid(r)],
                                    [r for r in source_refs if not is_uuid(r)],
                                    within=source_ids_in_scope(bot_scope))
    tag_ids = resolve_tag_ids(names=tag_names)
    return search(query, source_ids=source_ids, tag_ids=tag_ids, top_k=top_k)

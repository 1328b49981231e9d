"""Knowledge passages for a chat turn (the seam between the chat engine, knowledge and tables).

Returns ``[{"source_id", "row_id", "chunk_id", "name", "content", "score"}]``
from the sources attached to the bot, for the new message plus a little
recent context, bounded by the bot's ``knowledge`` settings; before them, the
records of the bot's tables that match the new message best
(``[{"table_id", "record_id", "name", "content", "score"}]``, at most the bot's
``knowledge.records`` or ``DATABASE_TURN_RECORDS``).
"""
from flask import current_app, has_app_context

from app.services import databases, knowledge


def passages_for_turn(bot, query, recent=()):
    """Top records and passages from the bot's attached tables and sources for ``query`` (plus
    recent context, for knowledge).

    A bot read with ``has_knowledge`` (``chat.conversation_for_turn``: a source or a table is
    attached) false is answered without a query."""
    if getattr(bot, "has_knowledge", True) is False:
        return []
    settings = bot.knowledge or {}
    records = _records(bot, query, settings)
    source_ids = knowledge.source_ids_of_bot(bot)
    if not source_ids:
        return records
    top_k = int(settings.get("top_k", 4))
    if top_k <= 0:
        return records
    context = " ".join(list(recent)[-int(settings.get("context_messages", 1)):]) if recent else ""
    # the new message counts twice: it matters more than the context
    passages = knowledge.search(f"{query} {query} {context}", source_ids=source_ids, top_k=top_k)
    max_chars, out, used = int(settings.get("max_chars", 6000)), [], 0
    for p in passages:
        if used + len(p["content"]) > max_chars and out:
            break
        used += len(p["content"])
        out.append(p)
    return records + out


def _records(bot, query, settings):
    table_ids = databases.table_ids_of_bot(bot)
    if not table_ids:
        return []
    default = current_app.config.get("DATABASE_TURN_RECORDS", 3) if has_app_context() else 3
    return databases.passages_for(table_ids, query, int(settings.get("records", default)))

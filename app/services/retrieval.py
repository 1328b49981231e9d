"""Knowledge passages for a chat turn (the seam between the chat engine and knowledge).

Returns ``[{"source_id", "row_id", "chunk_id", "name", "content", "score"}]``
from the sources attached to the bot, for the new message plus a little
recent context, bounded by the bot's ``knowledge`` settings.
"""
from app.services import knowledge


def passages_for_turn(bot, query, recent=()):
    """Top passages from the bot's attached sources for ``query`` (plus recent context).

    A bot read with ``has_knowledge`` (``chat.conversation_for_turn``) that has no source
    attached is answered without a query."""
    if getattr(bot, "has_knowledge", True) is False:
        return []
    source_ids = knowledge.source_ids_of_bot(bot)
    if not source_ids:
        return []
    settings = bot.knowledge or {}
    top_k = int(settings.get("top_k", 4))
    if top_k <= 0:
        return []
    context = " ".join(list(recent)[-int(settings.get("context_messages", 1)):]) if recent else ""
    # the new message counts twice: it matters more than the context
    passages = knowledge.search(f"{query} {query} {context}", source_ids=source_ids, top_k=top_k)
    max_chars, out, used = int(settings.get("max_chars", 6000)), [], 0
    for p in passages:
        if used + len(p["content"]) > max_chars and out:
            break
        used += len(p["content"])
        out.append(p)
    return out

"""Knowledge passages for a chat turn (the seam between the chat engine and knowledge).

Returns ``[{"source_id", "row_id", "chunk_id", "name", "content", "score"}]``.
"""


def passages_for_turn(bot, query, recent=()):
    """Top passages from the bot's attached sources for ``query`` (plus recent context)."""
    return []

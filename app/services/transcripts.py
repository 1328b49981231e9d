"""Conversations as the people running the bots read them: filtered by bot, end user, date,
rating and status, newest first, a page at a time (the console's Conversations page)."""
from peewee import SQL, fn

from app.errors import BadRequest
from app.storage.models import Conversation, EndUser, Message

RATINGS = ("like", "dislike", "any", "none")
STATUSES = ("error", "incomplete")


def find(*, bot_id=None, end_user=None, start=None, end=None, rating=None, status=None, page=1, size=20):
    """``(conversations, total)``: one page, newest first, each with ``summary`` (messages,
    first user message, likes, dislikes, errors). ``end_user`` is the external id; ``start``
    and ``end`` (naive UTC, inclusive) bound the creation time; ``rating`` like | dislike | any
    (some answer rated) | none (no answer rated); ``status`` error | incomplete (an answer has
    it). Raises BadRequest for a rating or status outside those."""
    if rating not in (None,) + RATINGS:
        raise BadRequest(f"rating must be one of {', '.join(RATINGS)}", fields={"rating": "invalid"})
    if status not in (None,) + STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", fields={"status": "invalid"})
    query = Conversation.select()
    if bot_id:
        query = query.where(Conversation.bot == bot_id)
    if end_user:
        query = query.join(EndUser).where(EndUser.external_id == end_user)
    if start:
        query = query.where(Conversation.created_at >= start)
    if end:
        query = query.where(Conversation.created_at <= end)

    def having(condition):
        return fn.EXISTS(Message.select(SQL("1")).where((Message.conversation == Conversation.id) & condition))

    if rating in ("like", "dislike"):
        query = query.where(having(Message.rating == rating))
    elif rating == "any":
        query = query.where(having(Message.rating.is_null(False)))
    elif rating == "none":
        query = query.where(~having(Message.rating.is_null(False)))
    if status:
        query = query.where(having(Message.status == status))
    total = query.count()
    rows = list(query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).paginate(page, size))
    _summarise(rows)
    return rows, total


def _summarise(conversations):
    ids = [c.id for c in conversations]
    summary = {i: {"messages": 0, "first_user": "", "likes": 0, "dislikes": 0, "errors": 0} for i in ids}
    if ids:
        msgs = (Message.select(Message.conversation, Message.role, Message.content, Message.rating, Message.status)
                .where(Message.conversation.in_(ids)).order_by(Message.created_at, Message.id))
        for m in msgs:
            s = summary[m.conversation_id]
            s["messages"] += 1
            if m.role == "user" and not s["first_user"]:
                s["first_user"] = m.content[:200]
            s["likes"] += m.rating == "like"
            s["dislikes"] += m.rating == "dislike"
            s["errors"] += m.status == "error"
    for c in conversations:
        c.summary = summary[c.id]

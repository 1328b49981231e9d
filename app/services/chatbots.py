"""Chatbots as the chat API sees them: a bot plus one TEXT knowledge source (``sourceText``)."""
from app import clock
from app.errors import BadRequest, NotFound
from app.services import bots, knowledge
from app.storage.db import db, is_sqlite
from app.storage.models import Bot, BotSource, Conversation, KnowledgeSource

TEXT_SOURCE_NAME = "sourceText"


def _text_source(bot):
    return (KnowledgeSource.select().join(BotSource)
            .where((BotSource.bot == bot) & (KnowledgeSource.type == "TEXT")).first())


def _write_source_text(bot, text, limits):
    """Replace (or create and attach) the bot's TEXT source, inside the caller's transaction.

    The bot row is held first (``FOR UPDATE`` on PostgreSQL; on SQLite the caller's
    transaction has the write lock), so racing writers of a bot's first text make one source."""
    if not is_sqlite():
        Bot.select(Bot.id).where(Bot.id == bot.id).for_update().execute()
    source = _text_source(bot)
    if source is None:
        source = knowledge.create_source(name=f"{bot.name} {TEXT_SOURCE_NAME}", type="TEXT", bot_ids=[bot.id])
    knowledge.replace_text(source, text, name=TEXT_SOURCE_NAME, **limits)
    return source


def create_chatbot(name, source_text=None, *, default_model, max_row_chars=1_000_000, quota=None):
    """Create a bot and, when ``source_text`` is given, its TEXT source (synced before this
    returns), in one transaction: a refused text (QuotaExceeded, BadRequest) creates nothing."""
    with db.atomic():
        bot = bots.create_bot(name=name, default_model=default_model)
        source = _write_source_text(bot, source_text, {"max_row_chars": max_row_chars, "quota": quota}) \
            if source_text else None
    if source is not None:
        knowledge.sync_source(source.id)
    return bot


def update_chatbot_data(bot, *, name=None, source_text=None, max_row_chars=1_000_000, quota=None):
    """Rename the bot and/or replace its text, in one transaction (a refused text renames
    nothing); the new text is synced before this returns."""
    with db.atomic():
        if name is not None:
            bots.update_bot(bot.id, name=name)
        source = _write_source_text(bot, source_text, {"max_row_chars": max_row_chars, "quota": quota}) \
            if source_text is not None else None
    if source is not None:
        knowledge.sync_source(source.id)
    return bots.get_bot(bot.id)


def delete_chatbot(bot):
    """Delete the bot and the TEXT source that only it used."""
    source = _text_source(bot)
    with db.atomic():
        if source is not None and BotSource.select().where(BotSource.source == source).count() == 1:
            knowledge.delete_source(source)
        bot.delete_instance()


def check_model(bot, model):
    """A per-request model must be the bot's own or one it allows. Raises BadRequest."""
    if model is None or model == bot.model or model in (bot.allowed_models or []):
        return model
    allowed = [bot.model] + list(bot.allowed_models or [])
    raise BadRequest(f"Model {model!r} is not allowed for this chatbot (allowed: {', '.join(allowed)})",
                     fields={"model": "not allowed"})


def conversation_for(bot, conversation_id, *, api_key=None, surface="chat"):
    """The client-named conversation of ``bot``, created on first use (without the bot's
    greeting: the client sends its own history).

    Raises BadRequest when that id is taken by another bot's conversation (whose
    data stays invisible), NotFound when the bot is disabled and the conversation new.
    """
    if not isinstance(conversation_id, str) or not 1 <= len(conversation_id) <= 36:
        raise BadRequest("conversationId must be a string of 1 to 36 characters",
                         fields={"conversationId": "invalid"})
    conv = Conversation.get_or_none(Conversation.id == conversation_id)
    if conv is None:  # insert-or-nothing: racing first uses of one id make one conversation
        if not bot.enabled:
            raise NotFound(f"Bot {bot.id} is disabled")
        now = clock.now()
        Conversation.insert(id=conversation_id, bot=bot.id, surface=surface, title="",
                            api_key=api_key.id if api_key is not None else None,
                            created_at=now, updated_at=now).on_conflict_ignore().execute()
        conv = Conversation.get(Conversation.id == conversation_id)
        if conv.bot_id == bot.id:
            return conv
    if conv.bot_id != bot.id:
        raise BadRequest("conversationId is already used by another conversation",
                         fields={"conversationId": "taken"})
    Conversation.update(updated_at=clock.now()).where(Conversation.id == conv.id).execute()
    return conv

"""Bots: instructions + model + knowledge settings. Scoped by API key."""
from app import clock
from app.errors import BadRequest, Forbidden, NotFound
from app.services import keys
from app.services.sampling import check_temperature
from app.storage.models import Bot
from app.storage.pagination import paginate

EDITABLE = ("name", "instructions", "model", "temperature", "max_tokens", "greeting",
            "knowledge", "allowed_models", "enabled")


def _validate(fields):
    check_temperature(fields.get("temperature"))
    if "max_tokens" in fields and fields["max_tokens"] is not None:
        if int(fields["max_tokens"]) < 1:
            raise BadRequest("max_tokens must be at least 1", fields={"max_tokens": "out of range"})
    if "name" in fields and not str(fields["name"]).strip():
        raise BadRequest("name must not be empty", fields={"name": "empty"})


def scoped(key=None):
    """Bots the key may see (all for admin or unscoped keys)."""
    query = Bot.select()
    key = keys.scope_of(key)
    if key is not None and key.bot_ids:
        query = query.where(Bot.id.in_(key.bot_ids))
    return query


def all_bots(key=None):
    """Every bot the key may see, oldest first (not paginated)."""
    return list(scoped(key).order_by(Bot.created_at, Bot.id))


def enabled_bots(key=None):
    """The enabled bots the key may see."""
    return list(scoped(key).where(Bot.enabled == True))  # noqa: E712


def create_bot(*, name, model=None, default_model="echo/echo", **fields):
    """Create a bot. Raises BadRequest for invalid values."""
    data = {k: v for k, v in fields.items() if k in EDITABLE and v is not None}
    data["name"] = name
    _validate(data)
    return Bot.create(model=model or default_model, **data)


def get_bot(bot_id, key=None):
    """Raises NotFound when the bot does not exist or is outside the key's scope."""
    bot = scoped(key).where(Bot.id == bot_id).first()
    if bot is None:
        raise NotFound(f"Bot {bot_id} not found")
    return bot


def existing_ids(bot_ids):
    """``bot_ids`` without repeats, in order, when every one names a bot; else BadRequest."""
    bot_ids = list(dict.fromkeys(bot_ids or []))
    found = {b.id for b in Bot.select(Bot.id).where(Bot.id.in_(bot_ids))} if bot_ids else set()
    missing = [b for b in bot_ids if b not in found]
    if missing:
        raise BadRequest(f"unknown bot(s): {', '.join(missing)}", fields={"bot_ids": "unknown"})
    return bot_ids


def model_or_bot(name, key):
    """``(bot, None)`` for a request's model ``bot/<id or name>`` (one of ``key``'s bots),
    ``(None, name)`` for a provider model. Raises NotFound, and Forbidden when a key scoped to
    some bots names anything but a bot."""
    if name.startswith("bot/"):
        return find_bot(name[4:], key), None
    if keys.bot_scope(key) is not None:
        raise Forbidden("This key may only use its bots (model 'bot/<id>')")
    return None, name


def find_bot(ref, key=None):
    """A bot by id or by exact name. Raises NotFound."""
    bot = scoped(key).where((Bot.id == ref) | (Bot.name == ref)).order_by(Bot.created_at).first()
    if bot is None:
        raise NotFound(f"Bot {ref} not found")
    return bot


def update_bot(bot_id, key=None, **changes):
    bot = get_bot(bot_id, key)
    changes = {k: v for k, v in changes.items() if k in EDITABLE}
    _validate(changes)
    for field, value in changes.items():
        setattr(bot, field, value)
    bot.updated_at = clock.now()
    bot.save()
    return bot


def save_bot(bot_id=None, key=None, *, source_ids=None, default_model="echo/echo", **fields):
    """Create (``bot_id`` None) or update a bot and, when ``source_ids`` is given, set the
    knowledge sources it retrieves from: all or nothing. Raises BadRequest, NotFound."""
    from app.services import knowledge
    from app.storage.db import db

    with db.atomic():
        if bot_id is None:
            bot = create_bot(default_model=default_model, **fields)
        else:
            bot = update_bot(bot_id, key, **fields)
        if source_ids is not None:
            knowledge.set_sources_of_bot(bot.id, source_ids)
    return bot


def delete_bot(bot_id, key=None):
    get_bot(bot_id, key).delete_instance()


def list_bots(key=None, *, limit=None, cursor=None):
    return paginate(scoped(key), Bot, limit=limit, cursor=cursor)

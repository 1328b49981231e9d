"""A bot's API channels (the channel API): secret shown once, stored hashed."""
from app import clock, secrets_util
from app.errors import Forbidden, NotFound
from app.services import bots
from app.storage.models import Channel
from app.storage.pagination import paginate

SECRET_PREFIX = "cps_"


def create_channel(bot_id, *, name="API", key=None):
    """Create a channel; return ``(row, secret)``. Raises NotFound for the bot."""
    bot = bots.get_bot(bot_id, key)
    secret = secrets_util.generate(SECRET_PREFIX)
    row = Channel.create(bot=bot, name=name or "API", secret_hash=secrets_util.digest(secret),
                         secret_prefix=secret[:10])
    return row, secret


def get_channel(bot_id, channel_id, key=None):
    bots.get_bot(bot_id, key)
    row = Channel.get_or_none((Channel.id == channel_id) & (Channel.bot == bot_id))
    if row is None:
        raise NotFound(f"Channel {channel_id} not found")
    return row


def list_channels(bot_id, key=None, *, limit=None, cursor=None):
    bots.get_bot(bot_id, key)
    return paginate(Channel.select().where(Channel.bot == bot_id), Channel, limit=limit, cursor=cursor)


def update_channel(bot_id, channel_id, key=None, *, name=None, enabled=None):
    """Rename, enable or disable. Raises NotFound."""
    row = get_channel(bot_id, channel_id, key)
    if name is not None:
        row.name = name
    if enabled is not None:
        row.enabled = bool(enabled)
    row.updated_at = clock.now()
    row.save()
    return row


def set_enabled(bot_id, channel_id, enabled, key=None):
    return update_channel(bot_id, channel_id, key, enabled=enabled)


def rotate_secret(bot_id, channel_id, key=None):
    """Replace the secret; return ``(row, new_secret)``. The old one stops working."""
    row = get_channel(bot_id, channel_id, key)
    secret = secrets_util.generate(SECRET_PREFIX)
    row.secret_hash = secrets_util.digest(secret)
    row.secret_prefix = secret[:10]
    row.updated_at = clock.now()
    row.save()
    return row, secret


def delete_channel(bot_id, channel_id, key=None):
    get_channel(bot_id, channel_id, key).delete_instance()


def authenticate_channel(channel_id, secret):
    """The enabled channel for ``channel_id`` whose secret is ``secret``.

    Raises NotFound when the channel is unknown or disabled (or its bot is),
    Forbidden when the secret does not match (the channel API's codes).
    """
    row = Channel.get_or_none(Channel.id == channel_id) if channel_id else None
    if row is None or not row.enabled or not row.bot.enabled:
        raise NotFound("The channel id is incorrect or the channel is not enabled")
    if not secret or not secrets_util.matches(secret, row.secret_hash):
        raise Forbidden("The provided API secret key does not match this channel")
    return row

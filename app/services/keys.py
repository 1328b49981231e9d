"""API keys: creation (shown once), authentication, management.

Admin keys manage everything; client keys use bots and automations,
optionally scoped to some of them. Only a SHA-256 hash, a short display
prefix and the last 4 characters are stored.
"""
import time
from datetime import timedelta

from flask import current_app
from peewee import IntegrityError

from app import clock, secrets_util
from app.errors import BadRequest, Forbidden, NotFound, Unauthorized
from app.metering import limits
from app.storage import prepared
from app.storage.db import db
from app.storage.models import ApiKey, Automation, Bot
from app.storage.pagination import paginate

KEY_PREFIX = "cp_"
KINDS = ("admin", "client")


def create_key(*, kind="client", name="", bot_ids=(), automation_ids=(), plan=None,
               rate_limits=None, credit_quota=None, secret=None):
    """Create a key; return ``(row, plaintext)``. The plaintext is never stored.

    Raises BadRequest for an unknown kind or plan, or a scope naming bots or
    automations that do not exist.
    """
    clear_cache()  # a lookup of this token cached as unknown must not outlive its creation
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}", fields={"kind": "invalid"})
    _check_plan(plan)
    bot_ids, automation_ids = list(bot_ids or []), list(automation_ids or [])
    if kind == "admin" and (bot_ids or automation_ids):
        raise BadRequest("admin keys cannot be scoped", fields={"bot_ids": "admin keys see everything"})
    _check_exist(Bot, bot_ids, "bot_ids")
    _check_exist(Automation, automation_ids, "automation_ids")
    plaintext = secret or secrets_util.generate(KEY_PREFIX)
    row = ApiKey.create(
        kind=kind,
        name=name or "",
        key_hash=secrets_util.digest(plaintext),
        prefix=plaintext[:10],
        last4=plaintext[-4:],
        bot_ids=bot_ids,
        automation_ids=automation_ids,
        plan=plan,
        rate_limits=rate_limits or {},
        credit_quota=credit_quota,
    )
    return row, plaintext


def _check_plan(plan):
    """Raises BadRequest unless ``plan`` is None (the default plan) or a plan of ``RATE_LIMIT_PLANS``."""
    if plan is None:
        return
    plans = current_app.config.get("RATE_LIMIT_PLANS") or {}
    if plan not in plans:
        raise BadRequest(f"plan {plan!r} is not a plan of this instance ({', '.join(sorted(plans))})",
                         fields={"plan": "unknown plan"})


def _check_exist(model, ids, field):
    if not ids:
        return
    found = {r.id for r in model.select(model.id).where(model.id.in_(ids))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise BadRequest(f"{field}: unknown id(s) {', '.join(map(str, missing))}",
                         fields={field: "unknown id"})


def ensure_env_admin_key(plaintext):
    """Store ``CHATPORT_ADMIN_KEY`` hashed as an admin key if it is not stored yet."""
    if not plaintext:
        return None
    digest = secrets_util.digest(plaintext)
    row = ApiKey.get_or_none(ApiKey.key_hash == digest)
    if row:
        return row
    try:
        row, _ = create_key(kind="admin", name="CHATPORT_ADMIN_KEY", secret=plaintext)
    except IntegrityError:  # another worker stored it first
        row = ApiKey.get(ApiKey.key_hash == digest)
    return row


def _key_by_hash(digest):
    """The key with this hash, or None. Runs on every request: the SQL is built once
    (peewee's query building cost more than the indexed lookup itself)."""
    return prepared.first(ApiKey, "key_by_hash", lambda: ApiKey.select().where(ApiKey.key_hash == "?"), digest)


# digest -> (ApiKey row or None, monotonic expiry): a worker's short-lived cache of lookups
_CACHE = {}


def clear_cache():
    """Forget cached lookups (after a key changes here, and when the database is re-initialised)."""
    _CACHE.clear()


def _cached_key(digest, ttl):
    if ttl <= 0:
        return _key_by_hash(digest)
    now = time.monotonic()
    hit = _CACHE.get(digest)
    if hit is not None and hit[1] > now:
        return hit[0]
    row = _key_by_hash(digest)
    if len(_CACHE) > 10_000:  # many distinct tokens (a scan): start over rather than grow
        _CACHE.clear()
    _CACHE[digest] = (row, now + ttl)
    return row


def authenticate(token, *, last_used_interval=60, cache_seconds=0):
    """Return the enabled ApiKey for a bearer token.

    Raises Unauthorized when the token is missing, unknown or disabled.
    ``last_used_at`` is written at most once per ``last_used_interval`` seconds. A lookup is
    reused for ``cache_seconds`` (changes made through this module drop it at once).
    """
    if not token:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
    digest = secrets_util.digest(token)
    row = _cached_key(digest, cache_seconds)
    if row is None or not secrets_util.matches(token, row.key_hash):
        raise Unauthorized("Invalid API key")
    if not row.enabled:
        raise Unauthorized("This API key is disabled")
    now = clock.now()
    if row.last_used_at is None or now - row.last_used_at > timedelta(seconds=last_used_interval):
        ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
        row.last_used_at = now
    return row


def is_admin(key):
    """True for an admin key (it sees and manages everything)."""
    return key is not None and key.kind == "admin"


def scope_of(key):
    """``key`` as the scope the services' ``key=`` arguments take: None (everything) for an
    admin key, else the client key itself."""
    return None if key is None or is_admin(key) else key


def require_admin(key):
    """Raises Forbidden unless ``key`` is an admin key."""
    if not is_admin(key):
        raise Forbidden("This endpoint needs an admin key")


def can_use_bot(key, bot_id):
    """True when ``key`` may use the bot (admin, unscoped client, or in scope)."""
    return is_admin(key) or not key.bot_ids or bot_id in key.bot_ids


def can_use_automation(key, automation_id):
    """True when ``key`` may use the automation."""
    return is_admin(key) or not key.automation_ids or automation_id in key.automation_ids


def get_key(key_id):
    """Raises NotFound for an unknown id."""
    row = ApiKey.get_or_none(ApiKey.id == key_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return row


def set_enabled(key_id, enabled):
    clear_cache()
    row = get_key(key_id)
    ApiKey.update(enabled=bool(enabled)).where(ApiKey.id == row.id).execute()
    row.enabled = bool(enabled)
    return row


def update_key(key_id, **changes):
    """Update name / scope / plan / limits / quota. Raises NotFound, BadRequest."""
    clear_cache()
    row = get_key(key_id)
    if "plan" in changes:
        _check_plan(changes["plan"])
    if row.kind == "admin" and (changes.get("bot_ids") or changes.get("automation_ids")):
        raise BadRequest("admin keys cannot be scoped", fields={"bot_ids": "admin keys see everything"})
    if "bot_ids" in changes:
        _check_exist(Bot, changes["bot_ids"], "bot_ids")
    if "automation_ids" in changes:
        _check_exist(Automation, changes["automation_ids"], "automation_ids")
    gets_quota = changes.get("credit_quota") is not None and row.credit_quota is None
    with db.atomic():
        for field, value in changes.items():
            setattr(row, field, value)
        row.save()
        if gets_quota:
            limits.seed_counter(row.id)
    return row


def delete_key(key_id):
    clear_cache()
    row = get_key(key_id)
    row.delete_instance()


def all_keys():
    """Every API key, oldest first."""
    return ApiKey.select().order_by(ApiKey.created_at, ApiKey.id)


def list_keys(*, limit=None, cursor=None):
    """One page of API keys, oldest first: ``(items, {"total", "last"})``."""
    return paginate(ApiKey.select(), ApiKey, limit=limit, cursor=cursor)


def bot_scope(key):
    """Bot ids a key is limited to, or None when it may use every bot."""
    key = scope_of(key)
    if key is None or not key.bot_ids:
        return None
    return list(key.bot_ids)

"""Rate limits (GCRA, state in the database) and monthly credit quotas.

A limit is requests per minute for a subject (an API key id, or
``channel:<id>``) and an API category. GCRA lets ``limit`` requests through
at once, then one every ``60/limit`` seconds: no window edge lets twice the
limit through. The state lives in ``RateLimitState`` and is updated in one
short transaction, so the limit holds across workers and instances.
"""
import math
from dataclasses import dataclass
from datetime import datetime

from peewee import fn

from app import clock
from app.errors import QuotaExceeded, RateLimited
from app.storage.db import db, is_sqlite
from app.storage.models import RateLimitState, Usage

EPOCH = datetime(1970, 1, 1)


def now_epoch():
    return (clock.now() - EPOCH).total_seconds()


@dataclass
class Decision:
    limit: int
    remaining: int
    reset: int  # seconds until the full limit is available again
    retry_after: int = 0


def limit_for(key_plan, key_overrides, category, plans, default_plan):
    """Requests per minute for ``category`` (None = unlimited): key override, then plan."""
    overrides = key_overrides or {}
    for name in (category, "*"):
        if overrides.get(name) is not None:
            return int(overrides[name])
    plan = (plans or {}).get(key_plan or default_plan) or {}
    for name in (category, "*"):
        if plan.get(name) is not None:
            return int(plan[name])
    return None


def _read_tat(subject, category):
    if is_sqlite():
        row = (RateLimitState.select(RateLimitState.tat)
               .where((RateLimitState.key_id == subject) & (RateLimitState.category == category)).first())
        return row.tat if row else None
    cursor = db.execute_sql("SELECT tat FROM rate_limit_state WHERE key_id = %s AND category = %s FOR UPDATE",
                            (subject, category))
    row = cursor.fetchone()
    return row[0] if row else None


def check_rate(subject, category, limit):
    """Count one request against ``limit`` per minute. Returns a Decision; raises RateLimited.

    A limit below one (a plan in the configuration may say 0) lets no request through."""
    if limit < 1:
        decision = Decision(0, 0, 60, 60)
        raise RateLimited(f"Rate limit exceeded: no requests allowed for {category}",
                          headers=_headers(decision, retry=True))
    period = 60.0 / limit
    tolerance = period * (limit - 1)
    with db.atomic("IMMEDIATE") if is_sqlite() else db.atomic():
        if not is_sqlite():
            RateLimitState.insert(key_id=subject, category=category, tat=0).on_conflict_ignore().execute()
        t = now_epoch()
        stored = _read_tat(subject, category)
        tat = max(stored or 0.0, t)
        if tat - t > tolerance + 1e-9:
            retry = tat - tolerance - t
            decision = Decision(limit, 0, math.ceil(tat - t), max(1, math.ceil(retry)))
            raise RateLimited(f"Rate limit exceeded: {limit} requests per minute for {category}; "
                              f"retry in {decision.retry_after} s",
                              headers=_headers(decision, retry=True))
        new_tat = tat + period
        if stored is None and is_sqlite():
            RateLimitState.insert(key_id=subject, category=category, tat=new_tat).execute()
        else:
            RateLimitState.update(tat=new_tat).where(
                (RateLimitState.key_id == subject) & (RateLimitState.category == category)).execute()
    remaining = int(math.floor((tolerance + period - (new_tat - t)) / period + 1e-9))
    return Decision(limit, max(0, remaining), math.ceil(new_tat - t))


def _headers(decision, retry=False):
    headers = {"RateLimit-Limit": str(decision.limit), "RateLimit-Remaining": str(decision.remaining),
               "RateLimit-Reset": str(decision.reset)}
    if retry:
        headers["Retry-After"] = str(decision.retry_after)
    return headers


def headers_for(decision):
    return _headers(decision)


def month_start(when=None):
    when = when or clock.now()
    return datetime(when.year, when.month, 1)


def credits_used(subject, since=None):
    """Credits recorded for ``subject`` (a key id or ``channel:<id>``) since the start of this month."""
    since = since or month_start()
    return (Usage.select(fn.COALESCE(fn.SUM(Usage.credits), 0))
            .where((Usage.key_id == subject) & (Usage.created_at >= since)).scalar()) or 0


def check_quota(subject, quota):
    """Raises QuotaExceeded (429) when the month's credits reached ``quota``. Returns what is left."""
    if quota is None:
        return None
    used = credits_used(subject)
    if used >= quota:
        raise QuotaExceeded(f"You have run out of message credits: {used} of {quota} used this month",
                            code="credits_exhausted")
    return quota - used

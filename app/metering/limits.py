"""Rate limits (GCRA, state in the database), monthly credit quotas and concurrent streams.

A limit is requests per minute for a subject (an API key id, or
``channel:<id>``) and an API category. GCRA lets ``limit`` requests through
at once, then one every ``60/limit`` seconds: no window edge lets twice the
limit through. The state lives in ``RateLimitState`` and is updated in one
short transaction, so the limit holds across workers and instances. A limit
of 0 refuses every request.

The monthly credit quota is a ``CreditCounter`` row per subject and month,
reserved then settled: a call reserves its minimum credits with one
conditional statement (refused when the counter plus the reservation would
pass the quota), and the usage row's transaction adds the difference between
the call's real cost and its reservation. Concurrent calls therefore cannot
all pass a quota that only has room for some of them. A reservation that is
never settled (its process was killed) stays counted until the month ends:
the next month has its own row. Reports are computed from the usage rows.

Concurrent streams per subject are ``StreamLease`` rows, taken when a stream
starts and deleted when its response closes; a lease of a process that died
stops counting when it expires.
"""
import math
from dataclasses import dataclass
from datetime import datetime

import peewee
from peewee import EXCLUDED, Value, fn

from app import clock
from app.errors import QuotaExceeded, RateLimited
from app.ids import new_id
from app.storage import prepared
from app.storage.db import db, is_sqlite
from app.storage.models import CreditCounter, RateLimitState, StreamLease, Usage

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
    """Requests per minute for ``category`` (None = unlimited, 0 = refused): key override, then
    plan (the default plan for a key whose plan is no longer configured)."""
    overrides = key_overrides or {}
    for name in (category, "*"):
        if overrides.get(name) is not None:
            return int(overrides[name])
    plans = plans or {}
    plan = plans.get(key_plan if key_plan in plans else default_plan) or {}  # a removed plan: the default
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
    with db.atomic():
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


def month_key(when=None):
    """The ``CreditCounter.month`` of a time: year * 100 + month (UTC)."""
    when = when or clock.now()
    return when.year * 100 + when.month


def credits_used(subject, since=None):
    """Credits recorded in usage rows for ``subject`` (a key id or ``channel:<id>``) since the
    start of this month."""
    since = since or month_start()
    return (Usage.select(fn.COALESCE(fn.SUM(Usage.credits), 0))
            .where((Usage.key_id == subject) & (Usage.created_at >= since)).scalar()) or 0


_CC = CreditCounter


def _reserve_query():
    return _CC.insert(subject="?", month="?", used="?").on_conflict(
        conflict_target=[_CC.subject, _CC.month], update={_CC.used: _CC.used + EXCLUDED.used},
        where=(_CC.used + EXCLUDED.used <= "?"))


def _add_query():
    return _CC.insert(subject="?", month="?", used="?").on_conflict(
        conflict_target=[_CC.subject, _CC.month], update={_CC.used: _CC.used + EXCLUDED.used})


def counted(subject, month=None):
    """The counter of ``subject`` for a month (this one by default): credits settled plus reserved."""
    row = (_CC.select(_CC.used).where((_CC.subject == subject) & (_CC.month == (month or month_key())))
           .first())
    return row.used if row else 0


def reserve(subject, credits, quota, month=None):
    """Reserve ``credits`` of ``subject``'s ``quota`` for ``month`` (default: this one); return
    the month.

    Raises QuotaExceeded (429, nothing reserved) when the counter plus ``credits`` would pass
    the quota. One statement: an insert of the month's row, or a conditional update of it."""
    month = month or month_key()
    if credits <= quota:
        if prepared.execute("reserve_credits", _reserve_query, subject, month, credits, quota):
            return month
    used = counted(subject, month)
    raise QuotaExceeded(f"You have run out of message credits: {min(used, quota)} of {quota} used this month",
                        code="credits_exhausted")


def _set_counter(subject, month, used):
    _CC.insert(subject=subject, month=month, used=used).on_conflict(
        conflict_target=[_CC.subject, _CC.month], update={_CC.used: used}).execute()


def seed_counter(subject):
    """Set ``subject``'s counter for this month to the credits its usage rows record: counters
    are kept only while a subject has a quota, so one that gets a quota starts from what it has
    used."""
    _set_counter(subject, month_key(), credits_used(subject))


def seed_channel_counters():
    """Seed the counters of every channel that has usage this month (``CHANNEL_CREDIT_QUOTA``
    applies to all channels; the factory calls this when it is set)."""
    now = clock.now()
    month = month_key(now)
    spent = (Usage.select(Usage.key_id, fn.COALESCE(fn.SUM(Usage.credits), 0))
             .where(Usage.key_id.startswith("channel:") & (Usage.created_at >= month_start(now)))
             .group_by(Usage.key_id))
    with db.atomic():
        for subject, used in spent.tuples():
            _set_counter(subject, month, used)


def add_credits(subject, month, credits):
    """Add ``credits`` (negative: give back) to ``subject``'s counter for ``month``, without a
    quota check: settles a call's real cost against its reservation. Call it inside the
    transaction that writes the usage row."""
    prepared.execute("add_credits", _add_query, subject, month, credits)


_SL = StreamLease


def _lease_query():
    active = _SL.select(fn.COUNT(_SL.id)).where((_SL.subject == "?") & (_SL.expires_at > "?"))
    return _SL.insert_from(peewee.Select(columns=[Value("?"), Value("?"), Value("?")]).where(active < "?"),
                           [_SL.id, _SL.subject, _SL.expires_at])


def _take_lease(lease_id, subject, cap, now, ttl):
    params = (lease_id, subject, now + ttl, subject, now, cap)
    if is_sqlite():  # one write statement: SQLite runs it under the database's write lock
        return prepared.execute("take_stream_lease", _lease_query, *params)
    with db.atomic():  # PostgreSQL: count and insert under a lock per subject
        db.execute_sql("SELECT pg_advisory_xact_lock(4243, hashtext(%s))", (subject,))
        return prepared.execute("take_stream_lease", _lease_query, *params)


def acquire_stream(subject, cap, ttl):
    """Count one more stream of ``subject``; return its lease id (give it to ``release_stream``).

    Raises RateLimited (429) when ``cap`` streams are in flight. A lease stops counting ``ttl``
    seconds after it was taken (a process that died cannot release it)."""
    lease_id, now = new_id(), now_epoch()
    if cap > 0 and _take_lease(lease_id, subject, cap, now, ttl):
        return lease_id
    _SL.delete().where(_SL.expires_at <= now).execute()  # expired leases: keep the table small
    raise RateLimited(f"Too many concurrent streams: at most {cap} for this key; retry when one ends",
                      code="too_many_streams", headers={"Retry-After": "1"})


def release_stream(lease_id):
    """End a stream's lease (its response closed)."""
    prepared.execute("release_stream_lease", lambda: _SL.delete().where(_SL.id == "?"), lease_id)

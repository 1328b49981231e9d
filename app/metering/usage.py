"""Usage rows (one per API call) and the analytics read from them."""
import logging
from datetime import timedelta

from peewee import Case, fn

from app import clock
from app.errors import BadRequest
from app.ids import new_id
from app.metering import limits
from app.metering.credits import CALL_CREDITS, call_credits
from app.storage import prepared
from app.storage.db import is_sqlite
from app.storage.models import Usage

log = logging.getLogger("chatport.usage")

GROUPS = {"key": Usage.key_id, "bot": Usage.bot_id, "automation": Usage.automation_id,
          "model": Usage.model, "dialect": Usage.dialect, "category": Usage.category}


def credits_of(meter, prices):
    """What the call on ``meter`` costs: nothing when it was refused for its quota, else the
    call credit plus its token credits."""
    if meter.free:
        return 0
    if meter.token_credits is not None:
        credits = CALL_CREDITS + meter.token_credits
    else:
        credits = call_credits(prices, meter.model, meter.prompt_tokens, meter.completion_tokens)
    return credits + meter.extra_credits


def record(meter, *, status, latency_ms, prices):
    """Write the usage row of one call and settle its subject's credit counter (the real cost
    against what the call reserved), in one transaction; return the call's credits. Never raises
    (a failed write is logged)."""
    credits = 0
    try:
        credits = credits_of(meter, prices)
        now = clock.now()
        values = dict(
            id=new_id(), created_at=now, key_id=meter.key_id, dialect=meter.dialect,
            category=meter.category, endpoint=meter.details.get("endpoint", "")[:200], bot_id=meter.bot_id,
            automation_id=meter.automation_id, model=meter.model, prompt_tokens=meter.prompt_tokens,
            completion_tokens=meter.completion_tokens, tokens_estimated=meter.tokens_estimated,
            credits=credits, status=meter.status or status, latency_ms=round(latency_ms, 3))
        # Counters are kept for subjects with a quota (a key given one later is seeded then).
        settle = credits - meter.reserved if meter.quota is not None else 0
        with prepared.session():
            if not settle:
                prepared.insert_values(Usage, values)  # runs on every call: SQL built once
                return credits
            with prepared.atomic():  # one commit for both
                prepared.insert_values(Usage, values)
                limits.add_credits(meter.key_id, meter.month or limits.month_key(now), settle)
    except Exception:  # noqa: BLE001 - usage must never fail the call
        log.exception("could not record usage")
    return credits


def _bucket(interval):
    if interval not in ("hour", "day"):
        raise BadRequest("interval must be hour or day", fields={"interval": "invalid"})
    if is_sqlite():
        fmt = "%Y-%m-%dT%H:00:00Z" if interval == "hour" else "%Y-%m-%dT00:00:00Z"
        return fn.strftime(fmt, Usage.created_at)
    fmt = 'YYYY-MM-DD"T"HH24:00:00"Z"' if interval == "hour" else 'YYYY-MM-DD"T"00:00:00"Z"'
    return fn.to_char(fn.date_trunc(interval, Usage.created_at), fmt)


def _totals(*extra):
    return [fn.COUNT(Usage.id).alias("calls"),
            fn.COALESCE(fn.SUM(Usage.prompt_tokens), 0).alias("prompt_tokens"),
            fn.COALESCE(fn.SUM(Usage.completion_tokens), 0).alias("completion_tokens"),
            fn.COALESCE(fn.SUM(Usage.credits), 0).alias("credits"),
            fn.COALESCE(fn.SUM(Case(None, [(Usage.status >= 400, 1)], 0)), 0).alias("errors"), *extra]


def report(*, start=None, end=None, group_by=None, interval=None, key_id=None):
    """Totals, optional groups and an optional hour/day series over [start, end)."""
    end = end or clock.now() + timedelta(seconds=1)
    start = start or end - timedelta(days=30)
    where = (Usage.created_at >= start) & (Usage.created_at < end)
    if key_id is not None:
        where &= Usage.key_id == key_id
    if group_by is not None and group_by not in GROUPS:
        raise BadRequest(f"group_by must be one of {', '.join(GROUPS)}", fields={"group_by": "invalid"})

    def clean(row):
        return {k: (int(v) if k in ("calls", "prompt_tokens", "completion_tokens", "credits", "errors") else v)
                for k, v in row.items()}

    totals = clean(Usage.select(*_totals()).where(where).dicts().get())
    out = {"start": start, "end": end, "totals": totals}
    if group_by:
        col = GROUPS[group_by]
        rows = Usage.select(col.alias("group"), *_totals()).where(where).group_by(col).order_by(col).dicts()
        out["groups"] = [clean(r) for r in rows]
    if interval:
        bucket = _bucket(interval)
        cols = [bucket.alias("bucket")] + ([GROUPS[group_by].alias("group")] if group_by else [])
        query = Usage.select(*cols, *_totals()).where(where).group_by(*[bucket] + (
            [GROUPS[group_by]] if group_by else [])).order_by(bucket)
        out["series"] = [clean(r) for r in query.dicts()]
    return out


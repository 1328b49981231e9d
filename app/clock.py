"""Time in one place, so tests can control it.

Timestamps are naive UTC datetimes in the database and ISO 8601 with
milliseconds and ``Z`` on the wire.
"""
from datetime import datetime, timezone
from datetime import time as dtime

from app.errors import BadRequest

_override = None


def now():
    """Return the current UTC time as a naive datetime (or the frozen one)."""
    if _override is not None:
        return _override
    return datetime.now(timezone.utc).replace(tzinfo=None)


def freeze(when):
    """Make ``now()`` return ``when`` (a naive UTC datetime); ``None`` unfreezes."""
    global _override
    _override = when


def iso(dt):
    """Format a naive UTC datetime as ``2024-01-02T03:04:05.678Z`` (None stays None)."""
    if dt is None:
        return None
    if isinstance(dt, str):
        return dt
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(value, field, *, end_of_day=False):
    """A timestamp a client sent, as a naive UTC datetime (None or "" stay None).

    ``YYYY-MM-DD`` is that day's start (its last microsecond with ``end_of_day``, for an
    inclusive end); an ISO 8601 time with an offset (``Z``, ``+02:00``) is converted to UTC,
    one without is taken as UTC. Every dialect's time filters parse with this.
    Raises BadRequest naming ``field``.
    """
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d")
            return datetime.combine(day.date(), dtime.max) if end_of_day else day
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise BadRequest(f"{field} must be a date (YYYY-MM-DD) or an ISO 8601 time",
                         fields={field: "invalid"})
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed

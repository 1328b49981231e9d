"""Time in one place, so tests can control it.

Timestamps are naive UTC datetimes in the database and ISO 8601 with
milliseconds and ``Z`` on the wire.
"""
from datetime import datetime, timezone

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

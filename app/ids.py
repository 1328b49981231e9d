"""Identifiers: UUID strings that sort by creation time (UUID version 7 layout).

Time-ordered ids keep ``ORDER BY created_at, id`` stable and make index
inserts append-only.
"""
import os
import time
import uuid

_last_ms = 0
_seq = 0


def new_id():
    """Return a new UUIDv7 string (48-bit ms timestamp, then random bits)."""
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        # Same millisecond: bump a 12-bit counter so ids stay increasing per process.
        _seq = (_seq + 1) & 0xFFF
        if _seq == 0:
            _last_ms += 1
        ms = _last_ms
    else:
        _last_ms = ms
        _seq = int.from_bytes(os.urandom(2), "big") & 0x3FF
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= _seq << 64
    value |= 0b10 << 62
    value |= rand
    return str(uuid.UUID(int=value))


def is_uuid(value):
    """True when ``value`` is a string that parses as a UUID."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True

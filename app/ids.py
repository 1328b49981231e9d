"""Identifiers: UUID strings that sort by creation time (UUID version 7 layout).

Time-ordered ids keep ``ORDER BY created_at, id`` stable and make index
inserts append-only.
"""
import os
import re
import time
import uuid

_last_ms = 0
_seq = 0


def tool_call_id():
    """An id for a tool call whose provider gave none (``call_`` and 24 hex digits, as OpenAI's)."""
    return f"call_{new_id().replace('-', '')[:24]}"


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


# Ids a client supplies (conversation, message, bot, automation, row ids): visible ASCII without
# spaces, since they end up in URLs, response headers (``X-Conversation-Id``) and logs.
CLIENT_ID_MAX = 64
_CLIENT_ID = re.compile(r"[!-~]+")
# Labels a client gives its end users (``user``, ``userId``, ``external_id``): printable text,
# no control characters (CR, LF, NUL...).
USER_LABEL_MAX = 200


def is_client_id(value, max_length=CLIENT_ID_MAX):
    """True for a string of 1..max_length visible ASCII characters."""
    return isinstance(value, str) and 0 < len(value) <= max_length and _CLIENT_ID.fullmatch(value) is not None


def is_user_label(value, max_length=USER_LABEL_MAX, min_length=1):
    """True for printable text of min_length..max_length characters."""
    return isinstance(value, str) and min_length <= len(value) <= max_length and value.isprintable()

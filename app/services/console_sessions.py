"""Console sessions: a browser signed in with an admin key.

The browser holds a random session token; the database holds its SHA-256 (a leaked table
opens no session), the admin key it acts as, the session's CSRF token and the messages waiting
for the next page. A session ends on sign-out, after ``idle_timeout`` seconds without a request,
at ``lifetime`` seconds, or as soon as its key is disabled, deleted or no longer an admin key.
"""
import secrets
from datetime import timedelta

from app import clock, secrets_util
from app.errors import Forbidden
from app.services import keys
from app.storage.db import db
from app.storage.models import ApiKey, ConsoleSession

# A request writes ``last_seen_at`` only when it is older than this many seconds (or a tenth of
# the idle timeout, when that is shorter): idle expiry stays within that error, and reading
# pages writes nothing most of the time.
TOUCH_INTERVAL = 60


def sign_in(token, *, last_used_interval=60):
    """Open a session for the admin key ``token``; return ``(session token, session row)``.

    Raises Unauthorized (missing, unknown or disabled key), Forbidden (a client key).
    """
    key = keys.authenticate(token, last_used_interval=last_used_interval)
    if not keys.is_admin(key):
        raise Forbidden("The console needs an admin key; this is a client key")
    session_token = secrets.token_urlsafe(32)
    row = ConsoleSession.create(id=secrets_util.digest(session_token), key=key.id,
                                csrf_token=secrets.token_urlsafe(32), flash=[])
    row.key = key
    return session_token, row


def load(session_token, *, idle_timeout, lifetime):
    """The live session of ``session_token`` with its ``key``, or None (unknown or ended; an
    ended session's row is deleted). Refreshes ``last_seen_at``."""
    if not session_token:
        return None
    found = (ConsoleSession.select(ConsoleSession, ApiKey).join(ApiKey)
             .where(ConsoleSession.id == secrets_util.digest(session_token)).first())
    if found is None:
        return None
    now = clock.now()
    if (not found.key.enabled or not keys.is_admin(found.key)
            or now - found.last_seen_at > timedelta(seconds=idle_timeout)
            or now - found.created_at > timedelta(seconds=lifetime)):
        found.delete_instance()
        return None
    if now - found.last_seen_at > timedelta(seconds=min(TOUCH_INTERVAL, idle_timeout / 10)):
        ConsoleSession.update(last_seen_at=now).where(ConsoleSession.id == found.id).execute()
        found.last_seen_at = now
    return found


def sign_out(session):
    """End ``session`` (a row from ``load``)."""
    ConsoleSession.delete().where(ConsoleSession.id == session.id).execute()


def purge(*, idle_timeout, lifetime):
    """Delete every session that has ended by time; return how many."""
    now = clock.now()
    return ConsoleSession.delete().where(
        (ConsoleSession.last_seen_at < now - timedelta(seconds=idle_timeout))
        | (ConsoleSession.created_at < now - timedelta(seconds=lifetime))).execute()


def push_flash(session, kind, text, **extra):
    """Keep a message (``kind`` info | error | secret) for the session's next page."""
    with db.atomic():
        row = ConsoleSession.get_or_none(ConsoleSession.id == session.id)
        if row is None:
            return
        items = list(row.flash or []) + [{"kind": kind, "text": text, **extra}]
        ConsoleSession.update(flash=items).where(ConsoleSession.id == session.id).execute()


def pop_flash(session):
    """The messages waiting for this page, removed from the session (a secret is shown once)."""
    if not session.flash:
        return []
    with db.atomic():
        row = ConsoleSession.get_or_none(ConsoleSession.id == session.id)
        items = list(row.flash or []) if row is not None else []
        if items:
            ConsoleSession.update(flash=[]).where(ConsoleSession.id == session.id).execute()
    session.flash = []
    return items

"""End users: an external id with properties (a label a client sends, never an identity)."""
from app import clock
from app.errors import BadRequest, NotFound
from app.ids import new_id
from app.storage.db import db, is_sqlite
from app.storage.models import EndUser
from app.storage.pagination import paginate


def _check_properties(properties, max_properties):
    if not isinstance(properties, dict):
        raise BadRequest("properties must be an object", fields={"properties": "not an object"})
    if max_properties is not None and len(properties) > max_properties:
        raise BadRequest(f"at most {max_properties} properties",
                         fields={"properties": "too many"})


def upsert_user(external_id, properties=None, *, merge=True, max_properties=None):
    """Create the end user or update its properties; return ``(row, created)``.

    Safe under concurrency: the row is inserted with ``ON CONFLICT DO NOTHING`` and then read
    under a row lock (``FOR UPDATE`` on PostgreSQL; on SQLite the transaction takes the write
    lock up front), so racing calls make one row and every merge sees the one before it.
    ``max_properties`` bounds the properties the user has after the update (the caller's
    ``MAX_PROPERTIES``; None: no bound). Raises BadRequest with nothing changed.
    """
    properties = properties or {}
    _check_properties(properties, max_properties)
    now, fresh_id = clock.now(), new_id()
    with db.atomic():  # on SQLite BEGIN IMMEDIATE: the write lock before the read
        EndUser.insert(id=fresh_id, external_id=external_id, properties=properties, created_at=now,
                       updated_at=now).on_conflict_ignore().execute()
        query = EndUser.select().where(EndUser.external_id == external_id)
        row = (query if is_sqlite() else query.for_update()).get()
        if row.id == fresh_id:
            return row, True
        merged = {**row.properties, **properties} if merge else properties
        _check_properties(merged, max_properties)
        row.properties, row.updated_at = merged, now
        row.save()
    return row, False


def touch(external_id):
    """The end user for a label sent with a chat call, created on first sight."""
    if not external_id:
        return None
    row, _ = upsert_user(external_id)
    return row


def find(user_id):
    """By chatport id or external id, or None."""
    return EndUser.get_or_none((EndUser.id == user_id) | (EndUser.external_id == user_id))


def get_user(user_id):
    """By chatport id or external id. Raises NotFound."""
    row = EndUser.get_or_none((EndUser.id == user_id) | (EndUser.external_id == user_id))
    if row is None:
        raise NotFound(f"User {user_id} not found")
    return row


def delete_user(user_id):
    get_user(user_id).delete_instance()


def list_users(*, limit=None, cursor=None):
    return paginate(EndUser.select(), EndUser, limit=limit, cursor=cursor)

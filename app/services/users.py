"""End users: an external id with properties (a label a client sends, never an identity)."""
from app import clock
from app.errors import BadRequest, NotFound
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

    ``max_properties`` bounds the properties the user has after the update (the caller's
    ``MAX_PROPERTIES``; None: no bound).
    """
    properties = properties or {}
    row = EndUser.get_or_none(EndUser.external_id == external_id)
    if row is None:
        _check_properties(properties, max_properties)
        return EndUser.create(external_id=external_id, properties=properties), True
    merged = {**row.properties, **properties} if merge else properties
    _check_properties(merged, max_properties)
    row.properties = merged
    row.updated_at = clock.now()
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

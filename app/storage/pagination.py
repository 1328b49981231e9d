"""Cursor pagination (docs/chatport-api.md, "Pagination").

``limit`` 1..100 (default 10); ``cursor`` is the ``last`` id of the previous
page. Order is (created_at, id), so rows inserted between pages neither
shift nor repeat items. Returns items plus ``{"total", "last"}``.
"""
from app.errors import BadRequest


def paginate(query, model, *, limit=10, cursor=None, max_limit=100):
    """Return ``(items, {"total": n, "last": id_or_None})`` for one page.

    Raises BadRequest for a limit out of range or a cursor that is not an
    id of ``query``'s rows.
    """
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise BadRequest("limit must be an integer", fields={"limit": "not an integer"})
    if not 1 <= limit <= max_limit:
        raise BadRequest(f"limit must be between 1 and {max_limit}",
                         fields={"limit": f"must be between 1 and {max_limit}"})
    total = query.count()
    page = query
    if cursor:
        anchor = (
            query.clone().select(model.created_at, model.id).where(model.id == cursor).first()
        )
        if anchor is None:
            raise BadRequest("cursor is not an item of this list", fields={"cursor": "unknown"})
        page = page.where(
            (model.created_at > anchor.created_at)
            | ((model.created_at == anchor.created_at) & (model.id > anchor.id))
        )
    items = list(page.order_by(model.created_at, model.id).limit(limit))
    last = items[-1].id if items else None
    return items, {"total": total, "last": last}

"""Cursor pagination (docs/chatport-api.md, "Pagination").

``limit`` 1..``PAGE_MAX`` (default ``PAGE_DEFAULT``), both read from the app's
configuration on each call; ``cursor`` is the ``last`` id of the previous
page. Order is (created_at, id), so rows inserted between pages neither
shift nor repeat items. Returns items plus ``{"total", "last"}``.
"""
from flask import current_app

from app.errors import BadRequest


def page_size(value, field="limit"):
    """The page size a client asked for (None: ``PAGE_DEFAULT``), checked against ``PAGE_MAX``.

    Every list of every dialect sizes its pages with this. Raises BadRequest naming ``field``.
    """
    config = current_app.config
    if value is None:
        return int(config["PAGE_DEFAULT"])
    top = int(config["PAGE_MAX"])
    if isinstance(value, bool):
        value = None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{field} must be an integer", fields={field: "not an integer"})
    if not 1 <= value <= top:
        raise BadRequest(f"{field} must be between 1 and {top}", fields={field: f"must be between 1 and {top}"})
    return value


def paginate(query, model, *, limit=None, cursor=None):
    """Return ``(items, {"total": n, "last": id_or_None})`` for one page.

    Raises BadRequest for a limit out of range (see ``page_size``) or a cursor
    that is not an id of ``query``'s rows.
    """
    limit = page_size(limit)
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

"""Conversations: every bot's conversations filtered by bot, end user, date, rating and status;
a transcript with citations, ratings and error statuses."""
from flask import current_app, request

from app import clock
from app.console import bp
from app.console.views.common import key, page
from app.console.views.playground import source_names
from app.errors import ApiError, BadRequest
from app.services import bots, chat, transcripts

PAGE_SIZE = 20
FILTERS = ("bot_id", "end_user", "start", "end", "rating", "status")


def _filters(values):
    """The service's filters from the query string's. Raises BadRequest naming the field."""
    try:
        page_no = int(values.get("page") or 1)
    except ValueError:
        raise BadRequest("page must be a number", fields={"page": "a number"}) from None
    if page_no < 1:
        raise BadRequest("page must be at least 1", fields={"page": "at least 1"})
    start = clock.parse_time(values.get("start"), "start")
    end = clock.parse_time(values.get("end"), "end", end_of_day=True)
    if start and end and end < start:
        raise BadRequest("the end is before the start", fields={"end": "before the start"})
    return {"bot_id": values.get("bot_id") or None, "end_user": values.get("end_user", "").strip() or None,
            "start": start, "end": end, "rating": values.get("rating") or None,
            "status": values.get("status") or None, "page": page_no, "size": PAGE_SIZE}


@bp.get("/conversations")
def conversations():
    values = {name: request.args.get(name, "") for name in FILTERS}
    all_bots = bots.all_bots(key())
    context = {"bot_options": [(b.id, b.name) for b in all_bots], "bot_names": {b.id: b.name for b in all_bots},
               "rating_options": [("like", "a liked answer"), ("dislike", "a disliked answer"),
                                  ("any", "any rated answer"), ("none", "no rated answer")],
               "status_options": [("error", "an answer that failed"), ("incomplete", "an answer cut short")]}
    try:
        filters = _filters(request.args)
        items, total = transcripts.find(**filters)
    except ApiError as exc:
        return page("console/conversations.html", status=400, values=values, errors=exc.fields,
                    form_error=exc.message, items=[], total=0, page_no=1, pages=1, **context)
    pages = max(1, -(-total // PAGE_SIZE))
    return page("console/conversations.html", values=values, items=items, total=total, page_no=filters["page"],
                pages=pages, **context)


@bp.get("/conversations/<conversation_id>")
def conversation(conversation_id):
    conv = chat.get_conversation(conversation_id)
    messages, pagination = chat.list_messages(conv, limit=current_app.config["PAGE_MAX"])
    return page("console/conversation.html", conversation=conv, messages=messages, total=pagination["total"],
                names=source_names(m.citations for m in messages))

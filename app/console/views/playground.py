"""Playground: pick a bot, chat with it in a real conversation (surface ``console``).

``POST /console/api/conversations/<id>/messages`` sends a message: with ``stream`` (what
console.js asks for) it answers chatport's typed server-sent events (``start``, ``delta``,
``done`` with citations, ``error``); without it (a browser without JavaScript) it runs the
turn and returns to the page. Turns are metered like the API's, under the signed-in admin key
(dialect ``console``, category ``conversation``). Stop and like/dislike act on the answer.
"""
from flask import current_app, redirect, request, url_for

from app import metering
from app.api.sse import HEARTBEAT_FRAME, sse, stream_response
from app.console import bp, forms
from app.console.views.common import flash, key, page
from app.errors import ApiError, BadRequest
from app.metering import policy
from app.providers.llm import registry
from app.services import bots, chat, databases, knowledge
from app.services.events import Delta, Done, Error, Heartbeat, Start


def source_names(citation_lists):
    """``{source or table id: name}`` of the sources and tables cited in ``citation_lists``
    (deleted since: absent)."""
    citation_lists = [list(cited or []) for cited in citation_lists]
    ids = {c.get("source_id") for cited in citation_lists for c in (cited or []) if c.get("source_id")}
    names = {}
    for source_id in ids:
        try:
            names[source_id] = knowledge.get_source(source_id).name
        except ApiError:
            pass
    # records of Database API tables are cited by table and record: named "table <name>"
    for table_id in {c.get("table_id") for cited in citation_lists for c in (cited or []) if c.get("table_id")}:
        try:
            names[table_id] = f"table {databases.get_table(table_id).name}"
        except ApiError:
            pass
    return names


def citation_json(passages, names):
    return [{"source_id": p.get("source_id") or p.get("table_id"),
             "source": names.get(p.get("source_id") or p.get("table_id"), "deleted source"),
             "row_id": p.get("row_id") or p.get("record_id"), "row": p.get("name") or "",
             "content": p.get("content", "")[:300]}
            for p in passages]


@bp.get("/playground")
def playground():
    all_bots = bots.enabled_bots(key())
    conversation, messages = None, []
    if request.args.get("conversation_id"):
        conversation = chat.get_conversation(request.args["conversation_id"])
        messages, _ = chat.list_messages(conversation, limit=current_app.config["PAGE_MAX"])
    bot_id = conversation.bot_id if conversation else request.args.get("bot_id")
    return page("console/playground.html", bots=all_bots, bot_options=[(b.id, b.name) for b in all_bots],
                conversation=conversation, messages=messages, names=source_names(m.citations for m in messages), values={"bot_id": bot_id})


@bp.post("/playground")
def playground_start():
    """Start a conversation with the chosen bot."""
    try:
        bot = bots.get_bot(forms.text("bot_id"), key())
        conversation = chat.start_conversation(bot, surface="console", api_key=key())
    except ApiError as exc:
        flash(f"Could not start a conversation: {exc.message}", "error")
        return redirect(url_for("console.playground"))
    return redirect(url_for("console.playground", conversation_id=conversation.id))


def _back(conversation_id):
    return redirect(url_for("console.playground", conversation_id=conversation_id) + "#composer", 303)


def _meter_as_the_session_key():
    """Count this call (a ``/console/api/`` path) against the signed-in key, as the API counts
    its calls: its rate limit and quota apply. Raises RateLimited, QuotaExceeded."""
    k = key()
    policy.enforce(k.id, plan=k.plan, overrides=k.rate_limits, quota=k.credit_quota)


@bp.post("/api/conversations/<conversation_id>/messages")
def playground_send(conversation_id):
    streamed = forms.checked("stream")
    try:
        conv, bot = chat.conversation_for_turn(conversation_id)
        _meter_as_the_session_key()
        meter = metering.for_bot(bot)
        turn = chat.prepare_turn(registry=registry(), config=current_app.config, bot=bot,
                                 content=forms.text("content"), conversation=conv, options={"stream": streamed})
        metering.start_turn(turn)
    except ApiError as exc:
        if streamed:
            raise
        flash(f"Not sent: {exc.message}", "error")
        return _back(conversation_id)
    if streamed:
        return stream_response(_events(turn, meter, current_app.config["SSE_HEARTBEAT"]))
    try:
        done = turn.run()
        meter.add_tokens(done.usage, turn.model.name)
    except ApiError as exc:
        meter.add_tokens(getattr(turn, "usage", None), turn.model.name)
        meter.status = exc.status
        flash(f"The model failed: {exc.message}", "error")
    return _back(conversation_id)


def _events(turn, meter, heartbeat):
    """chatport's SSE (start, delta, done | error), the done event's citations with their names."""
    try:
        for event in turn.events(heartbeat=heartbeat):
            if isinstance(event, Start):
                yield sse({"conversation_id": event.conversation_id, "message_id": event.assistant_message_id,
                           "model": event.model}, "start")
            elif isinstance(event, Delta):
                if event.text:
                    yield sse({"text": event.text}, "delta")
            elif isinstance(event, Heartbeat):
                yield HEARTBEAT_FRAME
            elif isinstance(event, Done):
                names = source_names([event.citations])
                yield sse({"message_id": event.message_id, "status": event.status,
                           "finish_reason": event.finish_reason, "citations": citation_json(event.citations, names),
                           "usage": {"prompt_tokens": event.usage.prompt_tokens,
                                     "completion_tokens": event.usage.completion_tokens}}, "done")
            elif isinstance(event, Error):
                meter.status = event.error.status
                yield sse({"message_id": event.message_id, "error": {"code": event.error.code,
                                                                     "message": event.error.message}}, "error")
    finally:
        meter.add_tokens(getattr(turn, "usage", None), turn.model.name)


@bp.post("/api/conversations/<conversation_id>/messages/<message_id>/stop")
def playground_stop(conversation_id, message_id):
    conv = chat.get_conversation(conversation_id)
    _meter_as_the_session_key()
    running = chat.request_stop(conv, message_id, max_age=float(current_app.config["STREAM_TIMEOUT"]))
    return {"message_id": message_id, "stop_requested": running}, 202


@bp.post("/conversations/<conversation_id>/messages/<message_id>/rating")
def message_rate(conversation_id, message_id):
    """Like, dislike or clear (an empty rating) an answer; back to the page it came from."""
    conv = chat.get_conversation(conversation_id)
    rating = forms.text("rating") or None
    try:
        if rating not in (None, "like", "dislike"):
            raise BadRequest("rating must be like or dislike")
        chat.rate_message(conv, message_id, rating)
    except ApiError as exc:
        flash(f"Not rated: {exc.message}", "error")
    target = forms.text("next")
    if target == "conversation" and "console.conversation" in current_app.view_functions:
        return redirect(url_for("console.conversation", conversation_id=conv.id) + f"#m-{message_id}", 303)
    return redirect(url_for("console.playground", conversation_id=conv.id) + f"#m-{message_id}", 303)

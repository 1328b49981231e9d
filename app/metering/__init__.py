"""The usage meter of the current request (one usage row per API call).

Views and streaming generators describe the call on the meter; the request
hook in ``policy.py`` turns it into a ``Usage`` row when the response is
closed (after the last byte of a stream). Capture ``meter = current()``
before returning a streaming generator and update that object from it.

What the dialects call for a chat turn: ``for_bot(bot)`` (the request's meter),
``start_turn(turn)`` once the turn is prepared (its prompt's credits are
reserved, a stream takes a slot of the key's concurrent streams) and, for
OpenAI-chunk streams, ``stream_finish(turn, events)`` as ``on_finish``.
"""
from dataclasses import dataclass, field

from flask import current_app, g

from app.errors import ApiError


@dataclass
class UsageMeter:
    dialect: str = "chatport"
    category: str = "account"
    key_id: str = None
    bot_id: str = None
    automation_id: str = None
    model: str = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    extra_credits: int = 0
    # Set when a call used several models (automations): token credits already priced per model.
    token_credits: int = None
    status: int = 0
    details: dict = field(default_factory=dict)
    # The subject's monthly credit quota (None: unlimited), the month its credits count in and
    # what this call reserved of it: the usage row settles the real cost against the reservation.
    quota: int = None
    month: int = None
    reserved: int = 0
    # Refused for the quota: the call costs nothing (it would otherwise count past the quota).
    free: bool = False
    # The concurrent-stream lease this call holds until its response closes.
    stream_lease: str = None

    def add_tokens(self, usage, model=None):
        """Add an ``app.providers.llm.Usage`` (or None) for a model call."""
        if model:
            self.model = model
        if usage is None:
            return
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.tokens_estimated = self.tokens_estimated or usage.estimated


def current():
    """This request's meter (created on first use)."""
    if "usage_meter" not in g:
        g.usage_meter = UsageMeter()
    return g.usage_meter


def meter_for(automation):
    """Set the request's meter for a run; return the ``on_finish`` callback for ``execute``."""
    meter = current()
    meter.automation_id = automation.id

    def on_finish(totals, token_credits):
        meter.prompt_tokens += totals.prompt_tokens
        meter.completion_tokens += totals.completion_tokens
        meter.tokens_estimated = meter.tokens_estimated or totals.estimated
        meter.token_credits = (meter.token_credits or 0) + token_credits

    return on_finish


def for_bot(bot=None):
    """The request's meter, naming ``bot`` when one is given."""
    meter = current()
    if bot is not None:
        meter.bot_id = bot.id
    return meter


def _stream_cap(config):
    """The concurrent-stream cap of this request's key (None: unlimited). Admin keys have none."""
    cap = config.get("MAX_CONCURRENT_STREAMS_PER_KEY")
    from app.services.keys import is_admin

    if cap is None or is_admin(g.get("api_key")):
        return None
    return int(cap)


def start_turn(turn):
    """Meter a prepared chat turn before its model is called.

    With a credit quota the prompt's estimated token credits are reserved on top of the call
    credit; a streamed turn of a client key or channel takes one of its concurrent streams
    (``MAX_CONCURRENT_STREAMS_PER_KEY``), released when the response closes. Raises
    QuotaExceeded or RateLimited (429); a refused turn's user message is removed again.
    """
    from app.metering import limits
    from app.metering.credits import token_credits
    from app.providers.llm import message_tokens

    meter, config = current(), current_app.config
    if turn.request.stream:
        _open_stream(turn, meter)
    if meter.key_id is None:
        return meter
    try:
        if meter.quota is not None:
            prompt = sum(message_tokens(m) for m in turn.request.messages)
            extra = token_credits(config["MODEL_PRICES"], turn.model.name, prompt, 0)
            if extra:
                try:
                    limits.reserve(meter.key_id, extra, meter.quota, month=meter.month)
                except ApiError:
                    meter.free = True
                    raise
                meter.reserved += extra
        cap = _stream_cap(config) if turn.request.stream else None
        if cap is not None:
            ttl = float(config.get("STREAM_TIMEOUT") or 600) + 60
            meter.stream_lease = limits.acquire_stream(meter.key_id, cap, ttl)
    except ApiError:
        _discard(turn)
        raise
    return meter


def _open_stream(turn, meter):
    """A streamed turn of a metered request: its time to first token counts from the request's
    arrival, and it is an open stream (``chatport_open_streams``) until its response closes."""
    started = g.get("request_started")
    if started is None:  # not metered: nothing would close the stream's count
        return
    turn.ttft_start = started
    if not meter.details.get("stream"):
        meter.details["stream"] = True
        from app.observe import metrics

        metrics.OPEN_STREAMS.inc()


def _discard(turn):
    """Remove the user message a refused turn saved (the refusal leaves the conversation as it was)."""
    if getattr(turn, "user_message_id", None):
        from app.storage.models import Message

        Message.delete().where(Message.id == turn.user_message_id).execute()


def stream_finish(turn, events):
    """The ``on_finish(usage, error)`` of an OpenAI-chunk stream of ``turn.events()``.

    Charges the turn's tokens. When the client left before the end, ``events`` is closed first:
    the turn then counts the prompt it sent (the provider's count when it gave one, else the
    estimate) and the text streamed so far.
    """
    meter = current()

    def finish(usage, error):
        if usage is None:
            events.close()
            usage = getattr(turn, "usage", None)
        meter.add_tokens(usage, turn.model.name)
        if error is not None:
            meter.status = error.status

    return finish

"""The Responses API's state: a stored response is a turn of a chatport conversation.

``begin(...)`` prepares the turn of one ``POST /v1/responses``:
- ``store`` (the default) keeps it: without ``previous_response_id`` in a new conversation
  (with the bot of a ``bot/...`` model, else with the provider model itself:
  ``conversation.model``); with one, in the conversation of that response. The request's
  input becomes the turn's new messages (a tool result must answer a call of the answer it
  follows: the engine checks), the answer is the turn's assistant message, and a
  ``StoredResponse`` row keeps what the request set (for ``GET``) and which messages it added.
  Continuing a response that is not the last answer of its conversation (a second try, a
  branch) continues a copy of the conversation up to that answer (the last
  ``HISTORY_MAX_MESSAGES`` messages), so every conversation stays one line of turns.
- ``store=false`` saves nothing; with ``previous_response_id`` the history up to that response
  is read and sent along.

A response's id is its answer's message id (``resp_`` + its 32 hex digits). A response is seen
by admin keys and by the key that created it (within that key's bots); any other id, an
unknown one and one of an unstored response are all 404.
"""
import re
import uuid
from dataclasses import dataclass, field
from typing import Optional

from app import clock
from app.errors import BadRequest, Conflict, NotFound
from app.ids import new_id
from app.services import chat, keys, users
from app.services import messages as canonical
from app.storage.db import db
from app.storage.models import Conversation, GenerationStop, Message, StoredResponse

SURFACE = "responses"
_RESPONSE_ID = re.compile(r"resp_([0-9a-f]{32})")


def response_id(message_id):
    """The Responses API id of the response whose answer is ``message_id``."""
    return "resp_" + message_id.replace("-", "")


def message_id_of(value):
    """The answer's message id of a response id, or None when ``value`` is not one."""
    match = _RESPONSE_ID.fullmatch(value) if isinstance(value, str) else None
    return str(uuid.UUID(match.group(1))) if match else None


@dataclass
class Answer:
    """A stored response's answer: the assistant message, canonical, with its row's state."""

    message: dict
    status: str  # complete | incomplete | error
    error: Optional[str]
    model: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    created_at: object


@dataclass
class Stored:
    """A stored response as ``GET`` shows it: ``answer`` is None while it is in progress;
    ``inputs`` are ``(message id, canonical message)`` of the messages the request added."""

    message_id: str
    conversation_id: str
    created_at: object
    params: dict
    previous: Optional[str]
    answer: Optional[Answer]
    inputs: list = field(default_factory=list)


# ---------------------------------------------------------------- finding responses


def _may_see(conversation, key):
    """Admin keys see every response; a client key those it created, within its bots."""
    if keys.is_admin(key):
        return True
    if key is None or conversation.api_key_id != key.id:
        return False
    scope = keys.bot_scope(key)
    return scope is None or conversation.bot_id in scope


def _row(value, key, field_name=None):
    """The StoredResponse (with its conversation) of response id ``value`` that ``key`` may see.
    Raises NotFound (naming ``field_name`` when given)."""
    message_id = message_id_of(value)
    row = None
    if message_id is not None:
        row = (StoredResponse.select(StoredResponse, Conversation).join(Conversation)
               .where(StoredResponse.id == message_id).first())
    if row is None or not _may_see(row.conversation, key):
        raise NotFound(f"Response with id {value!r} not found.",
                       fields={field_name: "not found"} if field_name else None)
    return row


def _answer_row(message_id):
    return Message.get_or_none(Message.id == message_id)


def get(value, key):
    """The stored response ``value`` (a ``resp_`` id). Raises NotFound."""
    row = _row(value, key)
    msg = _answer_row(row.id)
    answer = None
    if msg is not None:
        answer = Answer(canonical.from_row(msg.role, msg.content, msg.structure), msg.status, msg.error, msg.model,
                        msg.prompt_tokens, msg.completion_tokens, msg.created_at)
    inputs = []
    if row.input_ids:
        found = {m.id: m for m in Message.select().where(Message.id.in_(row.input_ids))}
        inputs = [(i, canonical.from_row(found[i].role, found[i].content, found[i].structure))
                  for i in row.input_ids if i in found]
    return Stored(row.id, row.conversation_id, row.created_at, row.params or {}, row.previous, answer, inputs)


def messages_by_id(message_ids, key):
    """``{message id: canonical message}`` of those of ``message_ids`` that ``key`` may see
    (the messages a request's item references name)."""
    if not message_ids:
        return {}
    rows = (Message.select(Message, Conversation).join(Conversation)
            .where(Message.id.in_(list(message_ids))))
    return {m.id: canonical.from_row(m.role, m.content, m.structure) for m in rows if _may_see(m.conversation, key)}


def delete(value, key):
    """Delete a stored response: its answer and the messages its request added (and the
    conversation when nothing is left in it). Raises NotFound; Conflict while it runs."""
    row = _row(value, key)
    if _answer_row(row.id) is None:
        raise Conflict(f"Response {value} is still in progress")
    with db.atomic():
        Message.delete().where(Message.id.in_([*row.input_ids, row.id])).execute()
        row.delete_instance()
        if not Message.select().where(Message.conversation == row.conversation_id).exists():
            Conversation.delete().where(Conversation.id == row.conversation_id).execute()


# ---------------------------------------------------------------- continuing one


@dataclass
class _Previous:
    conversation: Conversation
    message: Message
    latest: bool


def _after(message):
    """Messages of ``message``'s conversation listed after it."""
    return Message.select(Message.id).where(
        (Message.conversation == message.conversation_id)
        & ((Message.created_at > message.created_at)
           | ((Message.created_at == message.created_at) & (Message.id > message.id))))


def _up_to(message, limit):
    """The last ``limit`` messages of ``message``'s conversation up to it, newest first."""
    return (Message.select().where(
        (Message.conversation == message.conversation_id)
        & ((Message.created_at < message.created_at)
           | ((Message.created_at == message.created_at) & (Message.id <= message.id))))
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(limit))


def _previous(value, key, bot):
    """The response ``previous_response_id`` names, to continue. Raises NotFound, BadRequest."""
    row = _row(value, key, "previous_response_id")
    conv = row.conversation
    if conv.bot_id != (bot.id if bot is not None else None):
        with_what = f"bot/{conv.bot_id}" if conv.bot_id else "a provider model, not a bot"
        raise BadRequest(f"Response {value} was made with {with_what}: continue it with the same kind of model",
                         fields={"previous_response_id": "made with another bot"})
    msg = _answer_row(row.id)
    if msg is None:
        raise BadRequest(f"Response {value} is still in progress", fields={"previous_response_id": "in progress"})
    return _Previous(conv, msg, not _after(msg).exists())


def _history_until(message, config):
    """The history a turn continuing ``message`` sends, as ``chat`` reads a conversation's:
    the newest messages up to it, bounded by ``HISTORY_MAX_MESSAGES`` and
    ``HISTORY_MAX_TOKENS``, failed answers left out, no tool result without its call."""
    rows = ((m.role, m.content, m.status, m.structure)
            for m in _up_to(message, int(config.get("HISTORY_MAX_MESSAGES", 20))))
    return chat.history_window(rows, config.get("HISTORY_MAX_TOKENS", 4000))


def _new_conversation(bot, model, key, end_user):
    now = clock.now()
    return Conversation.create(id=new_id(), bot=bot.id if bot is not None else None,
                               model=None if bot is not None else model, surface=SURFACE, title="",
                               api_key=key.id if key is not None else None, end_user=end_user,
                               created_at=now, updated_at=now)


def _fork(previous, key, end_user, config):
    """A new conversation holding a copy of ``previous``'s conversation up to its answer."""
    source = previous.conversation
    rows = list(_up_to(previous.message, int(config.get("HISTORY_MAX_MESSAGES", 20))))
    rows.reverse()
    with db.atomic():
        conv = _new_conversation(source.bot, source.model, key, end_user)
        if rows:
            names = [f.name for f in Message._meta.sorted_fields if f.name not in ("id", "conversation")]
            Message.insert_many([{"id": new_id(), "conversation": conv.id, **{n: getattr(m, n) for n in names}}
                                 for m in rows]).execute()
    return conv


def _shifted(exc, offset):
    """``exc`` (a BadRequest about ``messages.N``) about ``messages.(N - offset)``: the index
    in the caller's list when ``offset`` history messages came first."""
    def shift(text):
        text = re.sub(r"messages\.(\d+)", lambda m: f"messages.{int(m.group(1)) - offset}", text)
        return re.sub(r"messages\[(\d+)\]", lambda m: f"messages[{int(m.group(1)) - offset}]", text)

    if not offset or not isinstance(exc, BadRequest):
        return exc
    return BadRequest(shift(exc.message), code=exc.code, fields={shift(k): v for k, v in exc.fields.items()})


# ---------------------------------------------------------------- a new response


def begin(*, registry, config, key, bot, model, messages, system=None, options=None, store=True,
          previous_response_id=None, params=None, user=None, start=None):
    """Prepare the turn of a new response and return it (``chat.Turn``; its ``message_id`` is
    the response's).

    ``messages`` are the request's input as canonical messages, ``system`` its instructions
    (this turn only), ``options`` the engine's; ``params`` (wire-shaped) and ``user`` are kept
    with a stored response. ``start(turn)`` (metering) runs once the turn is prepared: when it
    refuses, what was saved is removed again. Raises NotFound (``previous_response_id``),
    BadRequest (about ``messages.N``: the index in ``messages``), and what ``start`` raises.
    """
    previous = _previous(previous_response_id, key, bot) if previous_response_id else None
    common = dict(registry=registry, config=config, bot=bot, model=model, options=options, system=system)
    if not store:
        history = _history_until(previous.message, config) if previous is not None else []
        try:
            turn = chat.prepare_turn(messages=history + list(messages), persist=False, **common)
        except BadRequest as exc:
            raise _shifted(exc, len(history)) from None
        if start is not None:
            start(turn)
        return turn
    end_user = users.touch(user) if user else None
    if previous is None:
        conv = created = _new_conversation(bot, model, key, end_user)
    elif previous.latest:
        conv, created = previous.conversation, None
    else:
        conv = created = _fork(previous, key, end_user, config)
    try:
        turn = chat.prepare_turn(new_messages=list(messages), conversation=conv, **common)
    except BaseException:
        if created is not None:
            created.delete_instance()
        raise
    try:
        if start is not None:
            start(turn)
    except BaseException:
        _discard(turn, created)
        raise
    StoredResponse.insert(id=turn.message_id, conversation=conv.id,
                          previous=previous.message.id if previous is not None else None,
                          input_ids=turn.saved_message_ids, params=params or {},
                          created_at=clock.now()).execute()
    return turn


def _discard(turn, created):
    """Remove what a refused turn saved: the conversation it created (its messages go with
    it), else its messages; and the stop switch of its answer."""
    with db.atomic():
        if created is not None:
            created.delete_instance()
        elif turn.saved_message_ids:
            Message.delete().where(Message.id.in_(turn.saved_message_ids)).execute()
        GenerationStop.delete().where(GenerationStop.id == turn.message_id).execute()

"""Chat turns: the engine every dialect renders.

``prepare_turn(...)`` validates and does every database read and the
user-message write up front (raising ``ApiError`` before anything is
streamed); ``Turn.events()`` then calls the provider and yields
``app.services.events`` objects. The assistant message is written once,
at the end, in ``finally``: ``complete``, ``incomplete`` (client gone,
stopped, time limit) or ``error`` (with the error kept). No transaction or
connection is held across the provider call.
"""
import logging
import time
from datetime import timedelta

from peewee import SQL, fn

from app import clock
from app.errors import ApiError, BadRequest, NotFound
from app.ids import new_id
from app.providers.llm import ChatRequest, Usage, estimate_tokens
from app.providers.streaming import HEARTBEAT, with_heartbeats
from app.services import retrieval
from app.services.events import Delta, Done, Error, Heartbeat, Start
from app.services.sampling import check_temperature
from app.storage import prepared
from app.storage.db import db
from app.storage.models import Bot, BotSource, Conversation, GenerationStop, Message
from app.storage.pagination import paginate

log = logging.getLogger("chatport.chat")

ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------- conversations


def start_conversation(bot, *, surface="api", channel=None, end_user=None, api_key=None,
                       conversation_id=None, title=""):
    """Create a conversation with ``bot``; the greeting (if any) is its first message.

    Raises NotFound when the bot is disabled.
    """
    if not bot.enabled:
        raise NotFound(f"Bot {bot.id} is disabled")
    with db.atomic():
        conv = Conversation.create(id=conversation_id or new_id(), bot=bot, surface=surface, title=title or "",
                                   channel=channel, end_user=end_user, api_key=api_key)
        if bot.greeting:
            Message.create(conversation=conv, role="assistant", content=bot.greeting,
                           model=None, status="complete")
    return conv


def get_conversation(conversation_id, *, bot_ids=None, channel=None):
    """A conversation, limited to ``bot_ids`` (a list, None = any) or a channel's bot.

    Raises NotFound outside that scope.
    """
    conv = prepared.first(Conversation, "conversation_by_id",  # runs on every turn: SQL built once
                         lambda: Conversation.select().where(Conversation.id == "?"), conversation_id)
    return _in_scope(conv, conversation_id, bot_ids, channel)


def _in_scope(conv, conversation_id, bot_ids=None, channel=None):
    """``conv`` if it exists within ``bot_ids`` (None = any) and ``channel``'s bot, else NotFound."""
    if (conv is None or (bot_ids is not None and conv.bot_id not in bot_ids)
            or (channel is not None and conv.bot_id != channel.bot_id)):
        raise NotFound(f"Conversation {conversation_id} not found")
    return conv


def conversation_for_turn(conversation_id, *, bot_ids=None):
    """The conversation (as ``get_conversation``, limited to ``bot_ids``) and its bot, in one
    query, for a turn. Raises NotFound.

    The bot also carries ``has_knowledge``: whether any knowledge source is attached, so the
    turn of a bot without knowledge asks the database nothing more before the provider call."""
    found = prepared.joined("conversation_for_turn", lambda: (
        Conversation.select(*prepared.columns(Conversation), *prepared.columns(Bot),
                            fn.EXISTS(BotSource.select(SQL("1")).where(BotSource.bot == Bot.id)))
        .join(Bot, on=(Conversation.bot == Bot.id))
        .where(Conversation.id == "?")), (Conversation, Bot), conversation_id)
    conv, bot, has_knowledge = found[0] if found else (None, None, None)
    _in_scope(conv, conversation_id, bot_ids)
    bot.has_knowledge = bool(has_knowledge)
    conv.bot = bot
    return conv, bot


def conversations_query(*, bot_ids=None, bot_id=None, end_user=None, channel=None):
    query = Conversation.select()
    if bot_ids is not None:
        query = query.where(Conversation.bot.in_(bot_ids))
    if bot_id:
        query = query.where(Conversation.bot == bot_id)
    if end_user is not None:
        query = query.where(Conversation.end_user == end_user)
    if channel is not None:
        query = query.where(Conversation.bot == channel.bot_id)
    return query


def messages_query(conversation):
    return Message.select().where(Message.conversation == conversation)


def list_conversations(*, bot_ids=None, bot_id=None, end_user=None, channel=None, limit=None, cursor=None):
    """One page of conversations, oldest first, filtered as ``conversations_query``:
    ``(items, {"total", "last"})``."""
    query = conversations_query(bot_ids=bot_ids, bot_id=bot_id, end_user=end_user, channel=channel)
    return paginate(query, Conversation, limit=limit, cursor=cursor)


def list_messages(conversation, *, limit=None, cursor=None):
    """One page of a conversation's messages, oldest first: ``(items, {"total", "last"})``."""
    return paginate(messages_query(conversation), Message, limit=limit, cursor=cursor)


def get_message(message_id):
    """A saved message by id, or None."""
    return Message.get_or_none(Message.id == message_id)


def conversations_with_messages(bot, *, start=None, end=None, page=1, size=10):
    """One page of ``bot``'s conversations created between ``start`` and ``end`` (naive UTC,
    either None), newest first, each with ``.messages_in_order`` (its messages, oldest first);
    and how many conversations match. Three queries whatever the page size: count, page,
    the page's messages."""
    query = conversations_query(bot_id=bot.id)
    if start:
        query = query.where(Conversation.created_at >= start)
    if end:
        query = query.where(Conversation.created_at <= end)
    total = query.count()
    rows = list(query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).paginate(page, size))
    by_conv = {conv.id: [] for conv in rows}
    if rows:
        msgs = (Message.select(Message.conversation, Message.role, Message.content)
                .where(Message.conversation.in_(list(by_conv)))
                .order_by(Message.conversation, Message.created_at, Message.id))
        for m in msgs:
            by_conv[m.conversation_id].append(m)
    for conv in rows:
        conv.messages_in_order = by_conv[conv.id]
    return rows, total


def first_user_messages(conversation_ids):
    """``{conversation id: content of its first user message}`` for those that have one."""
    first = {}
    if conversation_ids:
        rows = (Message.select(Message.conversation, Message.content, Message.created_at, Message.id)
                .where(Message.conversation.in_(list(conversation_ids)) & (Message.role == "user"))
                .order_by(Message.created_at.desc(), Message.id.desc()))
        for m in rows:  # newest first, so the oldest user message wins
            first[m.conversation_id] = m.content
    return first


def delete_conversation(conversation):
    conversation.delete_instance()


def rate_message(conversation, message_id, rating, comment=None):
    """Like or dislike an assistant message. Raises NotFound, BadRequest."""
    if rating not in ("like", "dislike", None):
        raise BadRequest("rating must be like, dislike or null", fields={"rating": "invalid"})
    msg = Message.get_or_none((Message.id == message_id) & (Message.conversation == conversation))
    if msg is None:
        raise NotFound(f"Message {message_id} not found")
    if msg.role != "assistant":
        raise BadRequest("only assistant messages can be rated", fields={"message_id": "not an answer"})
    msg.rating, msg.rating_comment = rating, comment
    msg.save()
    return msg


def request_stop(conversation, generation_id, *, max_age=600.0):
    """Ask the turn generating ``generation_id`` (the assistant message id of its start event)
    in ``conversation`` to stop; the running turn, in whichever worker, polls for it.

    Returns True when a running generation was asked to stop, False when it has already
    finished (its message is saved: nothing to stop). Raises NotFound for an id that is neither
    a generation of this conversation nor one of its answers: nothing is stored then.
    Stop switches older than ``max_age`` seconds (``STREAM_TIMEOUT``: no turn runs that long)
    are purged on the way.
    """
    purge_stale_stops(max_age)
    asked = prepared.execute("request_stop", lambda: GenerationStop.update(stop_requested=True).where(
        (GenerationStop.id == "?") & (GenerationStop.conversation_id == "?")), True, generation_id, conversation.id)
    if asked:
        return True
    saved = Message.select(Message.id).where(
        (Message.id == generation_id) & (Message.conversation == conversation.id) & (Message.role == "assistant"))
    if saved.exists():  # the turn saves its answer and deletes its switch in one transaction
        return False
    raise NotFound(f"Generation {generation_id} not found in conversation {conversation.id}")


_next_purge = 0.0  # time.monotonic() after which a turn's start purges stale stop switches


def purge_stale_stops(max_age):
    """Delete stop switches older than ``max_age`` seconds: left by a worker that died mid-turn
    or a turn prepared and never run (a finished turn deletes its own)."""
    global _next_purge
    _next_purge = time.monotonic() + max_age
    cutoff = clock.now() - timedelta(seconds=max_age)
    return prepared.execute("purge_stops", lambda: GenerationStop.delete().where(
        GenerationStop.created_at < "?"), GenerationStop.created_at.db_value(cutoff))


# ---------------------------------------------------------------- turns


def _message_row(**values):
    """A message's column values for ``prepared.insert_values`` (the turn's writes build no model
    instance): the model's defaults, then ``values``."""
    return {"status": "complete", "error": None, "model": None, "prompt_tokens": 0, "completion_tokens": 0,
            "tokens_estimated": False, "citations": [], "rating": None, "rating_comment": None,
            "created_at": clock.now(), **values}


def _check_messages(messages, config):
    max_len, max_count = config["MAX_MESSAGE_LENGTH"], config["MAX_MESSAGES"]
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", fields={"messages": "empty"})
    if len(messages) > max_count:
        raise BadRequest(f"at most {max_count} messages", fields={"messages": "too many"})
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadRequest(f"messages[{i}] needs a role ({', '.join(ROLES)}) and string content",
                             fields={f"messages.{i}": "invalid"})
        if len(m["content"]) > max_len:
            raise BadRequest(f"messages[{i}] is longer than {max_len} characters",
                             fields={f"messages.{i}.content": "too long"})
        clean.append({"role": m["role"], "content": m["content"]})
    if clean[-1]["role"] != "user" or not clean[-1]["content"].strip():
        raise BadRequest("the last message must be a non-empty user message",
                         fields={"messages": "last message is not a user message"})
    return clean


def _check_content(content, config, field="message"):
    if not isinstance(content, str) or not content.strip():
        raise BadRequest(f"{field} must be a non-empty string", fields={field: "empty"})
    if len(content) > config["MAX_MESSAGE_LENGTH"]:
        raise BadRequest(f"{field} is longer than {config['MAX_MESSAGE_LENGTH']} characters",
                         fields={field: "too long"})
    return content


def _check_options(options):
    options = dict(options or {})
    check_temperature(options.get("temperature"))
    mt = options.get("max_tokens")
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        raise BadRequest("max_tokens must be a positive integer", fields={"max_tokens": "invalid"})
    stop = options.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif stop is not None and (not isinstance(stop, list) or len(stop) > 4
                               or not all(isinstance(s, str) for s in stop)):
        raise BadRequest("stop must be a string or a list of up to 4 strings", fields={"stop": "invalid"})
    return options


def _history(conversation, config):
    """Recent messages, newest last, bounded by count and approximate tokens."""
    max_msgs = config.get("HISTORY_MAX_MESSAGES", 20)
    max_tokens = config.get("HISTORY_MAX_TOKENS", 4000)
    rows = prepared.rows("history_rows", lambda: (
        Message.select(Message.role, Message.content, Message.status)
        .where(Message.conversation == "?")
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)), conversation.id, int(max_msgs))
    out, budget = [], max_tokens
    for role, content, status in rows:
        if status == "error" or not content:
            continue
        cost = estimate_tokens(content)
        if cost > budget:
            break
        budget -= cost
        out.append({"role": role, "content": content})
    out.reverse()
    return out


def _trim_to_budget(messages, max_tokens):
    """Drop the oldest non-system messages until the prompt fits (the last one always stays)."""
    if sum(len(m["content"]) for m in messages) // 4 + 2 * len(messages) <= max_tokens:
        return messages  # fits for sure: a message is estimated at most len/4 + 1 tokens
    total = sum(estimate_tokens(m["content"]) for m in messages)
    out = list(messages)
    while total > max_tokens and len(out) > 1:
        idx = next((i for i, m in enumerate(out[:-1]) if m["role"] != "system"), None)
        if idx is None:
            break
        total -= estimate_tokens(out[idx]["content"])
        out.pop(idx)
    return out


def system_prompt(bot, passages):
    """The bot's instructions, then the knowledge passages with their ids."""
    parts = [bot.instructions.strip()] if bot is not None and bot.instructions.strip() else []
    if passages:
        lines = ["Use the following knowledge when it is relevant. Cite it by its ids."]
        for p in passages:
            lines.append(f"[source {p['source_id']} row {p['row_id']}] {p.get('name') or ''}\n{p['content']}")
        parts.append("\n\n".join(lines))
    return "\n\n".join(parts)


def prepare_turn(*, registry, config, bot=None, model=None, content=None, messages=None,
                 conversation=None, options=None, persist=True):
    """Validate and set up a turn; return a ``Turn`` whose ``events()`` streams it.

    - ``content``: a new user message appended to ``conversation``'s history.
    - ``messages``: the whole history from the client (last one is the user's);
      when ``conversation`` is also given, its last message and the reply are
      saved there.
    - ``bot`` supplies instructions, knowledge and the default model; without a
      bot, ``model`` names a provider model directly.
    Raises BadRequest (bad messages/options/unknown model), NotFound (disabled bot).
    """
    if bot is not None and not bot.enabled:
        raise NotFound(f"Bot {bot.id} is disabled")
    options = _check_options(options)
    model_name = model or (bot.model if bot is not None else None)
    if not model_name:
        raise BadRequest("model is required", fields={"model": "missing"})
    provider_model = registry.get(model_name)
    if messages is not None:
        prompt_msgs = _check_messages(messages, config)
        if bot is not None:
            prompt_msgs = [m for m in prompt_msgs if m["role"] != "system"] or prompt_msgs
        new_user = prompt_msgs[-1]["content"]
    else:
        new_user = _check_content(content, config)
        prompt_msgs = (_history(conversation, config) if conversation is not None else [])
        prompt_msgs.append({"role": "user", "content": new_user})
    passages = []
    if bot is not None:
        recent = [m["content"] for m in prompt_msgs[-3:-1]]
        passages = retrieval.passages_for_turn(bot, new_user, recent) or []
        system = system_prompt(bot, passages)
        if system:
            prompt_msgs = [{"role": "system", "content": system}] + prompt_msgs
    prompt_msgs = _trim_to_budget(prompt_msgs, config.get("PROMPT_MAX_TOKENS", 16000))
    if bot is not None and options.get("temperature") is None and bot.temperature is not None:
        options["temperature"] = bot.temperature
    if bot is not None and options.get("max_tokens") is None and bot.max_tokens:
        options["max_tokens"] = bot.max_tokens
    user_message_id, message_id = None, new_id()
    stream_timeout = float(config.get("STREAM_TIMEOUT", 600))
    if persist and conversation is not None:
        user_message_id, now = new_id(), clock.now()
        with prepared.atomic():  # one commit for all
            prepared.insert_values(Message, _message_row(
                id=user_message_id, conversation=conversation.id, role="user", content=new_user, created_at=now))
            prepared.execute("touch_conversation", lambda: Conversation.update(updated_at=now).where(
                Conversation.id == "?"), now, conversation.id)
            # the answer's stop switch: a stop request must name a generation that is running
            prepared.insert_values(GenerationStop, {"id": message_id, "conversation_id": conversation.id,
                                                    "stop_requested": False, "created_at": now})
            if time.monotonic() >= _next_purge:  # at most once per STREAM_TIMEOUT per process
                purge_stale_stops(stream_timeout)
    request = ChatRequest(
        messages=prompt_msgs,
        temperature=options.get("temperature"),
        max_tokens=options.get("max_tokens"),
        stop=options.get("stop"),
        user=options.get("user"),
        extra={"passages": passages},
        stream=bool(options.get("stream", True)),
    )
    return Turn(model=provider_model, request=request,
                conversation_id=conversation.id if (persist and conversation is not None) else None,
                user_message_id=user_message_id, message_id=message_id, passages=passages,
                stream_timeout=stream_timeout,
                stop_poll=float(config.get("STOP_POLL_INTERVAL", 0.5)))


class Turn:
    """One prepared turn. Iterate ``events()`` once."""

    def __init__(self, *, model, request, conversation_id, user_message_id, passages, message_id=None,
                 stream_timeout=600.0, stop_poll=0.5):
        self.model = model
        self.request = request
        self.conversation_id = conversation_id
        self.user_message_id = user_message_id
        self.passages = passages
        self.message_id = message_id or new_id()
        self.stream_timeout = stream_timeout
        self.stop_poll = stop_poll
        self.created = time.time()
        self.saved = None  # the assistant message's column values once saved

    def _stop_requested(self):
        with prepared.session():
            return bool(prepared.rows("stop_requested", lambda: GenerationStop.select(GenerationStop.id).where(
                (GenerationStop.id == "?") & (GenerationStop.stop_requested == True)),  # noqa: E712
                self.message_id, True))

    def events(self, heartbeat=None):
        """Yield Start, Delta*, (Heartbeat*), then Done or Error. Persists in ``finally``."""
        if not db.is_closed() and not db.in_transaction():
            db.close()  # never hold a connection across the provider call
        yield Start(self.conversation_id, self.user_message_id, self.message_id,
                    self.model.name, self.created)
        parts, usage, status, error, finish = [], None, "incomplete", None, "stop"
        deadline = time.monotonic() + self.stream_timeout
        next_stop_check = time.monotonic() + self.stop_poll
        source = self.model.stream(self.request)
        stream = with_heartbeats(source, heartbeat)
        try:
            try:
                for item in stream:
                    now = time.monotonic()
                    if item is HEARTBEAT:
                        yield Heartbeat()
                    elif isinstance(item, Usage):
                        usage = item
                    elif item:
                        parts.append(item)
                        yield Delta(item)
                    if now >= deadline:
                        finish = "stopped"
                        break
                    if self.conversation_id and now >= next_stop_check:
                        next_stop_check = now + self.stop_poll
                        if self._stop_requested():
                            finish = "stopped"
                            break
                else:
                    status = "complete"
            finally:
                stream.close()  # stops a heartbeat producer first, which closes the source
                close = getattr(source, "close", None)
                if close:
                    try:
                        close()
                    except ValueError:  # still executing in a killed producer: already closing
                        pass
        except ApiError as exc:
            status, error = "error", exc
        except GeneratorExit:
            status = "incomplete"
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not kill the worker
            log.exception("provider %s failed", self.model.name)
            status, error = "error", ApiError(f"Provider {self.model.name} failed: {type(exc).__name__}",
                                              status=502, code="provider_error")
        finally:
            content = "".join(parts)
            if usage is None:
                prompt = sum(estimate_tokens(m["content"]) for m in self.request.messages)
                usage = Usage(prompt, estimate_tokens(content), estimated=True)
            self.usage, self.status, self.content, self.error = usage, status, content, error
            self._save(content, usage, status, error)
        if error is not None:
            yield Error(error, self.message_id, content)
            return
        if finish == "stop" and self.request.max_tokens and usage.completion_tokens >= self.request.max_tokens:
            finish = "length"
        yield Done(self.message_id, content, usage, finish,
                   "complete" if status == "complete" else "incomplete", self.passages)

    def _save(self, content, usage, status, error):
        if not self.conversation_id:
            return
        try:
            row = _message_row(
                id=self.message_id, conversation=self.conversation_id, role="assistant", content=content,
                status=status, error=(error.message if error else None), model=self.model.name,
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                tokens_estimated=usage.estimated, citations=self.passages)
            with prepared.session(), prepared.atomic():  # the answer and the end of its stop switch
                prepared.insert_values(Message, row)
                prepared.execute("clear_stop", lambda: GenerationStop.delete().where(
                    GenerationStop.id == "?"), self.message_id)
            self.saved = row
        except Exception:  # noqa: BLE001 - log; the client already has what it has
            log.exception("could not save assistant message %s", self.message_id)

    def run(self):
        """Drain the turn (non-streaming callers): return the final Done or raise the error."""
        done = None
        for event in self.events():
            if isinstance(event, Error):
                raise event.error
            if isinstance(event, Done):
                done = event
        return done

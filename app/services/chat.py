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

from peewee import JOIN, SQL, fn

from app import clock
from app.errors import ApiError, BadRequest, NotFound, ProviderError
from app.ids import new_id, tool_call_id
from app.observe import metrics
from app.providers.llm import (
    ChatRequest,
    Chunk,
    Usage,
    add_tool_fragment,
    content_text,
    estimate_tokens,
    joined_tool_calls,
    message_tokens,
)
from app.providers.streaming import HEARTBEAT, with_heartbeats
from app.services import lookup_tool, retrieval
from app.services import messages as canonical
from app.services.events import Choice, Delta, Done, Error, Heartbeat, Start
from app.services.sampling import check_temperature
from app.storage import prepared
from app.storage.db import db
from app.storage.models import Bot, BotSource, BotTable, Conversation, GenerationStop, Message
from app.storage.pagination import paginate

log = logging.getLogger("chatport.chat")


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

    The bot also carries ``has_knowledge``: whether any knowledge source or table is attached, so the
    turn of a bot without knowledge asks the database nothing more before the provider call.
    A conversation with a provider model (``conversation.model``, no bot) comes with None."""
    found = prepared.joined("conversation_for_turn", lambda: (
        Conversation.select(*prepared.columns(Conversation), *prepared.columns(Bot),
                            fn.EXISTS(BotSource.select(SQL("1")).where(BotSource.bot == Bot.id))
                            | fn.EXISTS(BotTable.select(SQL("1")).where(BotTable.bot == Bot.id)))
        .join(Bot, JOIN.LEFT_OUTER, on=(Conversation.bot == Bot.id))
        .where(Conversation.id == "?")), (Conversation, Bot), conversation_id)
    conv, bot, has_knowledge = found[0] if found else (None, None, None)
    _in_scope(conv, conversation_id, bot_ids)
    if conv.bot_id is None:
        return conv, None
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
            "structure": None, "created_at": clock.now(), **values}


def _check_content(content, config, field="message"):
    if not isinstance(content, str) or not content.strip():
        raise BadRequest(f"{field} must be a non-empty string", fields={field: "empty"})
    if len(content) > config["MAX_MESSAGE_LENGTH"]:
        raise BadRequest(f"{field} is longer than {config['MAX_MESSAGE_LENGTH']} characters",
                         fields={field: "too long"})
    return content


PLAIN_OPTIONS = frozenset(("temperature", "max_tokens", "stop", "user", "stream"))
# The options that become ChatRequest fields of the same name.
REQUEST_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "seed", "top_logprobs",
                   "top_p", "presence_penalty", "frequency_penalty", "logit_bias", "metadata", "reasoning_effort")


def _number(options, name, low, high, kind=float):
    value = options.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not (
            low <= value <= high):
        raise BadRequest(f"{name} must be {'a number' if kind is float else 'an integer'} from {low} to {high}",
                         fields={name: "invalid"})


def _check_options(options, config):
    """The turn's options, checked: sampling, limits and the fields beyond text (tools,
    response_format, n, logprobs...). Raises BadRequest naming the field."""
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
    if not options.keys() - PLAIN_OPTIONS:  # a text turn: nothing more to check
        return options
    options["tools"], options["tool_choice"] = canonical.check_tools(options.get("tools"), options.get("tool_choice"),
                                                                     config)
    options["response_format"] = canonical.check_response_format(options.get("response_format"))
    _number(options, "n", 1, config["MAX_CHOICES"], int)
    _number(options, "top_logprobs", 0, 20, int)
    _number(options, "seed", -2**63, 2**63 - 1, int)
    _number(options, "top_p", 0, 1)
    _number(options, "presence_penalty", -2, 2)
    _number(options, "frequency_penalty", -2, 2)
    for name in ("logprobs", "parallel_tool_calls"):
        if options.get(name) is not None and not isinstance(options[name], bool):
            raise BadRequest(f"{name} must be a boolean", fields={name: "invalid"})
    if options.get("top_logprobs") is not None and not options.get("logprobs"):
        raise BadRequest("top_logprobs needs logprobs: true", fields={"top_logprobs": "needs logprobs"})
    bias = options.get("logit_bias")
    if bias is not None and (not isinstance(bias, dict) or len(bias) > 300 or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and -100 <= v <= 100
            for k, v in bias.items())):
        raise BadRequest("logit_bias must map up to 300 token ids to numbers from -100 to 100",
                         fields={"logit_bias": "invalid"})
    metadata = options.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in metadata.items())):
        raise BadRequest("metadata must map up to 16 keys (64 characters) to strings (512 characters)",
                         fields={"metadata": "invalid"})
    effort = options.get("reasoning_effort")
    if effort is not None and effort not in canonical.REASONING_EFFORTS:
        raise BadRequest(f"reasoning_effort must be one of {', '.join(canonical.REASONING_EFFORTS)}",
                         fields={"reasoning_effort": "invalid"})
    passthrough = options.get("passthrough")
    if passthrough is not None and not isinstance(passthrough, dict):
        raise BadRequest("passthrough must be an object", fields={"passthrough": "invalid"})
    return options


def _history(conversation, config):
    """Recent messages, newest last, bounded by count and approximate tokens; a tool result
    whose call fell outside the window is left out with it."""
    max_msgs = config.get("HISTORY_MAX_MESSAGES", 20)
    max_tokens = config.get("HISTORY_MAX_TOKENS", 4000)
    rows = prepared.rows("history_rows", lambda: (
        Message.select(Message.role, Message.content, Message.status, Message.structure)
        .where(Message.conversation == "?")
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)), conversation.id, int(max_msgs))
    return history_window(((role, content, status, structure and Message.structure.python_value(structure))
                           for role, content, status, structure in rows), max_tokens)


def history_window(rows, max_tokens):
    """The messages of ``rows`` (newest first: ``(role, content, status, structure)``) that fit
    in ``max_tokens``, oldest first; failed answers are left out, and so is a tool result whose
    call fell outside the window."""
    out, budget = [], max_tokens
    for role, content, status, structure in rows:
        if status == "error" or not (content or structure):
            continue
        if structure is None:
            message = {"role": role, "content": content}
            cost = estimate_tokens(content)
        else:
            message = canonical.from_row(role, content, structure)
            cost = message_tokens(message)
        if cost > budget:
            break
        budget -= cost
        out.append(message)
    out.reverse()
    while out and out[0]["role"] == "tool":
        out.pop(0)
    return out


def _trim_to_budget(messages, max_tokens):
    """Drop the oldest non-system messages until the prompt fits (the last one always stays);
    an assistant message's tool calls go with the results that answer them."""
    if all(isinstance(m["content"], str) and len(m) == 2 for m in messages) and (
            sum(len(m["content"]) for m in messages) // 4 + 2 * len(messages) <= max_tokens):
        return messages  # fits for sure: a message is estimated at most len/4 + 1 tokens
    costs = [message_tokens(m) for m in messages]
    total = sum(costs)
    out = list(zip(messages, costs))
    while total > max_tokens and len(out) > 1:
        idx = next((i for i, (m, _) in enumerate(out[:-1]) if m["role"] not in ("system", "developer")), None)
        if idx is None:
            break
        total -= out.pop(idx)[1]
        while idx < len(out) - 1 and out[idx][0]["role"] == "tool":  # the results of dropped calls
            total -= out.pop(idx)[1]
    return [m for m, _ in out]


def system_prompt(bot, passages):
    """The bot's instructions, then the knowledge passages with their ids."""
    parts = [bot.instructions.strip()] if bot is not None and bot.instructions.strip() else []
    if passages:
        lines = ["Use the following knowledge when it is relevant. Cite it by its ids."]
        for p in passages:
            cited = (f"table {p['table_id']} record {p['record_id']}" if "table_id" in p
                     else f"source {p['source_id']} row {p['row_id']}")
            lines.append(f"[{cited}] {p.get('name') or ''}\n{p['content']}")
        parts.append("\n\n".join(lines))
    return "\n\n".join(parts)


def prepare_turn(*, registry, config, bot=None, model=None, content=None, messages=None,
                 new_messages=None, conversation=None, options=None, persist=True, system=None):
    """Validate and set up a turn; return a ``Turn`` whose ``events()`` streams it.

    - ``content``: a new user message appended to ``conversation``'s history.
    - ``new_messages``: new canonical messages (``app.services.messages``: a user message, or
      the results of the tool calls the last answer made) appended to ``conversation``'s
      history; all are saved.
    - ``messages``: the whole history from the client (the last one is the user's or a tool
      result); when ``conversation`` is also given, its last message and the reply are saved
      there.
    - ``bot`` supplies instructions, knowledge and the default model; without a bot, ``model``
      names a provider model directly.
    - ``options``: sampling and limits, and the fields beyond text (``tools``, ``tool_choice``,
      ``response_format``, ``n``, ``logprobs``...; ``passthrough`` for fields chatport does not
      model). A field the model cannot honour is a BadRequest naming it and the model.
    - ``system``: instructions for this turn only (the Responses API's ``instructions``): a
      system message first in the prompt (after the bot's), never saved.
    Raises BadRequest (bad messages/options/unknown model), NotFound (disabled bot).
    """
    if bot is not None and not bot.enabled:
        raise NotFound(f"Bot {bot.id} is disabled")
    options = _check_options(options, config)
    model_name = model or (bot.model if bot is not None else None)
    if not model_name:
        raise BadRequest("model is required", fields={"model": "missing"})
    provider_model = registry.get(model_name)
    if messages is not None:
        prompt_msgs = canonical.check_messages(messages, config)
        if bot is not None:
            prompt_msgs = [m for m in prompt_msgs if m["role"] not in ("system", "developer")] or prompt_msgs
        to_save = prompt_msgs[-1:]
    else:
        if new_messages is None:
            new_messages = [{"role": "user", "content": _check_content(content, config)}]
        history = _history(conversation, config) if conversation is not None else []
        to_save = canonical.check_messages(new_messages, config, earlier=history)
        prompt_msgs = history + to_save
    question = next((m for m in reversed(prompt_msgs) if m["role"] == "user"), None)
    question = content_text(question["content"]) if question is not None else ""
    passages = []
    if bot is not None:
        recent = [content_text(m["content"]) for m in prompt_msgs[-3:-1]]
        passages = retrieval.passages_for_turn(bot, question, recent) or []
    if system:
        prompt_msgs = [{"role": "system", "content": _check_content(system, config, "instructions")}] + prompt_msgs
    if bot is not None:
        bot_system = system_prompt(bot, passages)
        if bot_system:
            prompt_msgs = [{"role": "system", "content": bot_system}] + prompt_msgs
    prompt_msgs = _trim_to_budget(prompt_msgs, config.get("PROMPT_MAX_TOKENS", 16000))
    if bot is not None and options.get("temperature") is None and bot.temperature is not None:
        options["temperature"] = bot.temperature
    if bot is not None and options.get("max_tokens") is None and bot.max_tokens:
        options["max_tokens"] = bot.max_tokens
    request = ChatRequest(
        messages=_flattened(prompt_msgs),
        temperature=options.get("temperature"),
        max_tokens=options.get("max_tokens"),
        stop=options.get("stop"),
        user=options.get("user"),
        extra={"passages": passages},
        stream=bool(options.get("stream", True)),
    )
    if options.keys() - PLAIN_OPTIONS:
        for name in REQUEST_OPTIONS:
            if options.get(name) is not None:
                setattr(request, name, options[name])
        request.n = options.get("n") or 1
        request.logprobs = bool(options.get("logprobs"))
        request.passthrough = dict(options.get("passthrough") or {})
    provider_model.check(request)  # before anything is saved
    # a bot's tables as a tool the model may call (chatport answers the calls), when offered
    turn_model = lookup_tool.tool_for(bot, provider_model, request, config) or provider_model
    user_message_id, message_id, saved_ids = None, new_id(), []
    stream_timeout = float(config.get("STREAM_TIMEOUT", 600))
    if persist and conversation is not None:
        now = clock.now()
        with prepared.atomic():  # one commit for all
            for i, m in enumerate(to_save):  # a microsecond apart: listed in the order sent
                user_message_id = new_id()
                saved_ids.append(user_message_id)
                text, structure = canonical.stored(m)
                prepared.insert_values(Message, _message_row(
                    id=user_message_id, conversation=conversation.id, role=m["role"], content=text,
                    structure=structure, created_at=now + timedelta(microseconds=i)))
            prepared.execute("touch_conversation", lambda: Conversation.update(updated_at=now).where(
                Conversation.id == "?"), now, conversation.id)
            # the answer's stop switch: a stop request must name a generation that is running
            prepared.insert_values(GenerationStop, {"id": message_id, "conversation_id": conversation.id,
                                                    "stop_requested": False, "created_at": now})
            if time.monotonic() >= _next_purge:  # at most once per STREAM_TIMEOUT per process
                purge_stale_stops(stream_timeout)
    return Turn(model=turn_model, request=request,
                conversation_id=conversation.id if (persist and conversation is not None) else None,
                user_message_id=user_message_id, message_id=message_id, passages=passages,
                stream_timeout=stream_timeout, saved_message_ids=saved_ids,
                stop_poll=float(config.get("STOP_POLL_INTERVAL", 0.5)))


def _flattened(messages):
    """``messages`` with each content made of text parts only given as one string: every
    provider takes that, and a plugin that reads ``content`` as text keeps working."""
    if all(isinstance(m["content"], str) for m in messages):
        return messages
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list) and all(p["type"] == "text" for p in content):
            m = dict(m, content=content_text(content))
        out.append(m)
    return out


class Turn:
    """One prepared turn. Iterate ``events()`` once."""

    def __init__(self, *, model, request, conversation_id, user_message_id, passages, message_id=None,
                 stream_timeout=600.0, stop_poll=0.5, saved_message_ids=()):
        self.model = model
        self.request = request
        self.conversation_id = conversation_id
        self.user_message_id = user_message_id
        self.saved_message_ids = list(saved_message_ids)  # the messages prepare_turn saved, in order
        self.passages = passages
        self.message_id = message_id or new_id()
        self.stream_timeout = stream_timeout
        self.stop_poll = stop_poll
        self.created = time.time()
        self.saved = None  # the assistant message's column values once saved
        # perf_counter() of the request of a streamed, metered turn (app.metering): the model's
        # first token is then timed from it (the time-to-first-token metric).
        self.ttft_start = None

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
        parts, usage, status, error, stopped = [], None, "incomplete", None, False
        choices = None  # {index: _Answer} once a Chunk came: tool calls, logprobs, more choices
        deadline = time.monotonic() + self.stream_timeout
        next_stop_check = time.monotonic() + self.stop_poll
        source = self.model.stream(self.request)
        stream = with_heartbeats(source, heartbeat)
        first = self.ttft_start is not None  # a first token still to time: one test per item
        try:
            try:
                for item in stream:
                    now = time.monotonic()
                    if type(item) is str:  # the first choice's text: nearly every item
                        if item:
                            if first:
                                first = self._first_token()
                            parts.append(item)
                            yield Delta(item)
                    elif item is HEARTBEAT:
                        yield Heartbeat()
                    elif isinstance(item, Usage):
                        usage = item
                    elif isinstance(item, Chunk):
                        if choices is None:
                            if first:
                                first = self._first_token()
                            choices = {0: _Answer(parts)}
                        answer = choices.get(item.index)
                        if answer is None:
                            answer = choices[item.index] = _Answer([])
                        answer.add(item)
                        yield Delta(item.text, item.index, item.tool_calls, item.logprobs, item.finish_reason)
                    elif item:  # a str subclass
                        parts.append(item)
                        yield Delta(item)
                    if now >= deadline:
                        stopped = True
                        break
                    if self.conversation_id and now >= next_stop_check:
                        next_stop_check = now + self.stop_poll
                        if self._stop_requested():
                            stopped = True
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
            if isinstance(exc, ProviderError):
                metrics.provider_error(exc)
        except GeneratorExit:
            status = "incomplete"
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not kill the worker
            log.exception("provider %s failed", self.model.name)
            status, error = "error", ApiError(f"Provider {self.model.name} failed: {type(exc).__name__}",
                                              status=502, code="provider_error")
            metrics.provider_error(error)
        finally:
            content = "".join(parts)
            tool_calls = choices[0].calls() if choices else None
            if usage is None:
                prompt = sum(message_tokens(m) for m in self.request.messages)
                completion = sum(estimate_tokens("".join(a.parts)) for a in choices.values()) if choices else 0
                usage = Usage(prompt, completion or estimate_tokens(content), estimated=True)
            self.usage, self.status, self.content, self.error = usage, status, content, error
            self._save(content, tool_calls, usage, status, error)
        if error is not None:
            yield Error(error, self.message_id, content)
            return
        if choices is None:
            finish = self._finish(None, stopped, usage, None)
            answers = [Choice(0, content, None, None, finish)]
        else:
            answers = [Choice(i, "".join(a.parts), a.calls(), a.logprobs,
                              self._finish(a.finish, stopped, usage, a.tool_calls))
                       for i, a in sorted(choices.items())]
        yield Done(self.message_id, content, usage, answers[0].finish_reason,
                   "complete" if status == "complete" else "incomplete", self.passages,
                   tool_calls, answers)

    def _first_token(self):
        """Time the model's first token (once; returns False for the caller's flag)."""
        metrics.first_token(self.model.name, time.perf_counter() - self.ttft_start)
        return False

    def _finish(self, reported, stopped, usage, tool_calls):
        """Why a choice ended: stopped (by request or time limit), else what the provider said,
        else tool_calls when it called tools, length when it used all its tokens, stop."""
        if stopped:
            return "stopped"
        if reported:
            return reported
        if tool_calls:
            return "tool_calls"
        if self.request.max_tokens and usage.completion_tokens >= self.request.max_tokens * max(1, self.request.n):
            return "length"
        return "stop"

    def _save(self, content, tool_calls, usage, status, error):
        if not self.conversation_id:
            return
        try:
            row = _message_row(
                id=self.message_id, conversation=self.conversation_id, role="assistant", content=content,
                status=status, error=(error.message if error else None), model=self.model.name,
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                tokens_estimated=usage.estimated, citations=self.passages,
                structure={"tool_calls": tool_calls} if tool_calls else None)
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


class _Answer:
    """One choice being received: its text pieces, tool calls by index (fragments joined),
    logprobs and the provider's finish reason."""

    __slots__ = ("parts", "tool_calls", "logprobs", "finish")

    def __init__(self, parts):
        self.parts, self.tool_calls, self.logprobs, self.finish = parts, {}, None, None

    def add(self, chunk):
        if chunk.text:
            self.parts.append(chunk.text)
        for fragment in chunk.tool_calls or ():
            # a call's first fragment gets an id if the provider gave none, so the client's
            # stream and the saved answer name the call alike
            if fragment.get("index", len(self.tool_calls)) not in self.tool_calls and not fragment.get("id"):
                fragment["id"] = tool_call_id()
            add_tool_fragment(self.tool_calls, fragment)
        if chunk.logprobs:
            self.logprobs = (self.logprobs or []) + list(chunk.logprobs)
        if chunk.finish_reason:
            self.finish = chunk.finish_reason

    def calls(self):
        """The tool calls in the canonical shape, or None."""
        return joined_tool_calls(self.tool_calls)

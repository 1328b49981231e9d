"""The chat engine (app/services/chat.py), on SQLite and PostgreSQL."""
import pytest

from app.errors import BadRequest, NotFound, ProviderUnavailable
from app.providers.llm import Usage, registry
from app.services import chat, retrieval
from app.services.events import Delta, Done, Error, Start
from app.storage.db import db
from app.storage.models import Bot, GenerationStop, Message

from .scripted import scripted


@pytest.fixture
def ctx(app):
    with app.app_context(), db.connection_context():
        yield app


def _bot(**kw):
    return Bot.create(**{"name": "b", "model": "echo/echo", "instructions": "Be nice.", "greeting": "Hi", **kw})


def _turn(app, bot, conv, content, **kw):
    return chat.prepare_turn(registry=registry(), config=app.config, bot=bot, conversation=conv,
                             content=content, **kw)


def test_turn_persists_user_then_assistant(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)
    seen_during_stream = []

    def script(request):
        seen_during_stream.append([m.content for m in Message.select().order_by(Message.created_at)])
        yield "Hel"
        yield "lo"
        yield Usage(11, 2)

    with scripted(ctx, script) as model:
        events = list(_turn(ctx, bot, conv, "hi there", model="scripted/test").events())
    assert isinstance(events[0], Start) and events[0].conversation_id == conv.id
    assert [e.text for e in events if isinstance(e, Delta)] == ["Hel", "lo"]
    done = events[-1]
    assert isinstance(done, Done) and done.content == "Hello" and done.status == "complete"
    assert seen_during_stream == [["Hi", "hi there"]]  # user message saved before the provider ran
    rows = list(Message.select().where(Message.conversation == conv).order_by(Message.created_at))
    assert [(r.role, r.content, r.status) for r in rows] == [
        ("assistant", "Hi", "complete"), ("user", "hi there", "complete"), ("assistant", "Hello", "complete")]
    assert rows[-1].prompt_tokens == 11 and rows[-1].completion_tokens == 2 and not rows[-1].tokens_estimated
    assert rows[-1].id == done.message_id and rows[-1].model == "scripted/test"
    prompt = model.requests[0].messages
    assert prompt[0] == {"role": "system", "content": "Be nice."}
    assert prompt[-1] == {"role": "user", "content": "hi there"}


def test_usage_estimated_when_provider_reports_none(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)
    with scripted(ctx, lambda r: iter(["a reply of some length"])):
        done = _turn(ctx, bot, conv, "question?", model="scripted/test").run()
    msg = Message.get_by_id(done.message_id)
    assert msg.tokens_estimated and msg.completion_tokens > 0 and msg.prompt_tokens > 0
    assert done.usage.estimated


def test_client_gone_saves_partial_incomplete(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)

    def script(request):
        for word in ["one", " two", " three", " four"]:
            yield word

    with scripted(ctx, script) as model:
        events = _turn(ctx, bot, conv, "count", model="scripted/test").events()
        next(events)  # start
        assert next(events).text == "one"
        assert next(events).text == " two"
        events.close()  # the client went away
    assert model.closed
    msg = Message.select().where(Message.role == "assistant").order_by(Message.created_at.desc()).first()
    assert (msg.content, msg.status) == ("one two", "incomplete")


def test_provider_error_mid_stream(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)

    def script(request):
        yield "partial"
        raise ProviderUnavailable("upstream hung up")

    with scripted(ctx, script):
        events = list(_turn(ctx, bot, conv, "go", model="scripted/test").events())
    assert isinstance(events[-1], Error) and events[-1].error.status == 502
    msg = Message.get_by_id(events[-1].message_id)
    assert (msg.status, msg.content, msg.error) == ("error", "partial", "upstream hung up")


def test_plugin_bug_becomes_error_event(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)

    def script(request):
        raise KeyError("oops")
        yield  # pragma: no cover

    with scripted(ctx, script):
        events = list(_turn(ctx, bot, conv, "go", model="scripted/test").events())
    assert isinstance(events[-1], Error) and events[-1].error.status == 502
    assert Message.get_by_id(events[-1].message_id).status == "error"


def test_history_window(ctx):
    ctx.config["HISTORY_MAX_MESSAGES"] = 4
    bot = _bot(greeting="")
    conv = chat.start_conversation(bot)
    for i in range(6):
        _turn(ctx, bot, conv, f"message {i}").run()
    with scripted(ctx, lambda r: iter(["ok"])) as model:
        _turn(ctx, bot, conv, "latest", model="scripted/test").run()
    msgs = model.requests[0].messages
    assert msgs[0]["role"] == "system"
    assert [m["content"] for m in msgs[1:]] == ["message 4", "Echo: message 4", "message 5",
                                                "Echo: message 5", "latest"]


def test_stop_request_ends_turn_incomplete(ctx):
    ctx.config["STOP_POLL_INTERVAL"] = 0
    bot = _bot()
    conv = chat.start_conversation(bot)

    def script(request):
        for i in range(1000):
            yield f"w{i} "

    with scripted(ctx, script):
        turn = _turn(ctx, bot, conv, "talk", model="scripted/test")
        events = turn.events()
        start = next(events)
        next(events)
        assert chat.request_stop(conv, start.assistant_message_id) is True
        rest = list(events)
    assert isinstance(rest[-1], Done) and rest[-1].status == "incomplete"
    assert rest[-1].finish_reason == "stopped"
    msg = Message.get_by_id(start.assistant_message_id)
    assert msg.status == "incomplete" and 0 < len(msg.content) < 5000
    assert not GenerationStop.select().exists()
    assert chat.request_stop(conv, start.assistant_message_id) is False  # finished: nothing to stop


def test_a_stop_switch_lives_exactly_as_long_as_its_generation(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)
    seen = []

    def script(request):
        seen.append([(s.id, s.conversation_id, s.stop_requested) for s in GenerationStop.select()])
        yield "fine"

    for outcome in ("complete", "error", "client gone"):
        def run(request, outcome=outcome):
            yield from script(request)
            if outcome == "error":
                raise RuntimeError("provider bug")
            yield " and more"

        with scripted(ctx, run):
            turn = _turn(ctx, bot, conv, "talk", model="scripted/test")
            events = turn.events()
            if outcome == "client gone":
                next(events), next(events)
                events.close()
            else:
                list(events)
        assert seen[-1] == [(turn.message_id, conv.id, False)]  # there while it ran
        assert Message.get_by_id(turn.message_id).role == "assistant"
        assert not GenerationStop.select().exists(), outcome  # gone with the saved answer
        with pytest.raises(NotFound):
            chat.request_stop(chat.start_conversation(bot), turn.message_id)  # not that conversation's


def test_a_stop_for_an_unknown_generation_is_not_found_and_stores_nothing(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)
    _turn(ctx, bot, conv, "hi").run()
    user_message = Message.get((Message.conversation == conv) & (Message.role == "user"))
    for bogus in ("some-generation", "00000000-0000-7000-8000-000000000000", user_message.id):
        with pytest.raises(NotFound):
            chat.request_stop(conv, bogus)
    assert not GenerationStop.select().exists()


def test_stale_stop_switches_are_purged(ctx):
    from datetime import datetime, timedelta

    from app import clock

    bot = _bot()
    conv = chat.start_conversation(bot)
    long_ago = datetime(2030, 1, 1)
    clock.freeze(long_ago)
    try:
        abandoned = _turn(ctx, bot, conv, "never run")  # its worker died before the provider call
        clock.freeze(long_ago + timedelta(seconds=ctx.config["STREAM_TIMEOUT"] - 1))
        running = _turn(ctx, bot, conv, "running")
        clock.freeze(long_ago + timedelta(seconds=ctx.config["STREAM_TIMEOUT"] + 1))
        assert chat.request_stop(conv, running.message_id) is True
        with pytest.raises(NotFound):
            chat.request_stop(conv, abandoned.message_id)
    finally:
        clock.freeze(None)
    assert [s.id for s in GenerationStop.select()] == [running.message_id]


def test_passages_reach_prompt_and_citations(ctx, monkeypatch):
    passage = {"source_id": "s1", "row_id": "r1", "chunk_id": "c1", "name": "Moon",
               "content": "The moon is 384,400 km away.", "score": 1.0}
    monkeypatch.setattr(retrieval, "passages_for_turn", lambda bot, q, recent=(): [passage])
    bot = _bot()
    conv = chat.start_conversation(bot)
    with scripted(ctx, lambda r: iter(["far"])) as model:
        done = _turn(ctx, bot, conv, "how far is the moon", model="scripted/test").run()
    request = model.requests[0]
    assert request.extra["passages"] == [passage]
    assert "384,400 km" in request.messages[0]["content"] and "row r1" in request.messages[0]["content"]
    assert Message.get_by_id(done.message_id).citations == [passage]


def test_bad_input_raises_before_streaming(ctx):
    bot = _bot()
    conv = chat.start_conversation(bot)
    before = Message.select().count()
    for content in ["", "   ", None, "x" * (ctx.config["MAX_MESSAGE_LENGTH"] + 1)]:
        with pytest.raises(BadRequest):
            _turn(ctx, bot, conv, content)
    with pytest.raises(BadRequest, match="echo/echo"):
        _turn(ctx, bot, conv, "hi", model="nope/nope")
    for temp in [-1, 2.5, "hot", True]:
        with pytest.raises(BadRequest):
            _turn(ctx, bot, conv, "hi", options={"temperature": temp})
    with pytest.raises(BadRequest):
        chat.prepare_turn(registry=registry(), config=ctx.config, bot=bot,
                          messages=[{"role": "user", "content": "x"}] * (ctx.config["MAX_MESSAGES"] + 1))
    with pytest.raises(BadRequest):
        chat.prepare_turn(registry=registry(), config=ctx.config, bot=bot,
                          messages=[{"role": "assistant", "content": "last is not user"}])
    bot.enabled = False
    bot.save()
    with pytest.raises(NotFound):
        _turn(ctx, bot, conv, "hi")
    assert Message.select().count() == before

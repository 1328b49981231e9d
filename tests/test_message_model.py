"""The generalised message model: canonical checks (app/services/messages.py), the engine's
handling of tool calls, parts, choices and logprobs, and messages stored with their structure
(schema 13), on SQLite and PostgreSQL."""
import base64
import json

import pytest
from peewee import PostgresqlDatabase  # noqa: F401 - the migrator below needs the backend module
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from app.config import DEFAULTS
from app.errors import BadRequest
from app.providers.llm import Chunk, Usage, registry
from app.services import chat
from app.services import messages as canonical
from app.services.events import Delta, Done
from app.storage import migrations
from app.storage.db import db, is_sqlite
from app.storage.models import Bot, Message, SchemaVersion

from .conftest import make_app
from .scripted import scripted

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Find a thing",
                                           "parameters": {"type": "object",
                                                          "properties": {"q": {"type": "string"}}}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode()


def _fields(exc):
    return exc.value.fields


# ---------------------------------------------------------------- canonical checks


def test_plain_messages_come_back_as_they_are():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    assert canonical.check_messages(msgs, DEFAULTS) == msgs


def test_a_tool_round_trip_is_canonical_and_keeps_only_known_keys():
    msgs = [{"role": "user", "content": "find x"},
            {"role": "assistant", "content": None, "tool_calls": [dict(CALL, extra="dropped")]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42", "junk": 1}]
    clean = canonical.check_messages(msgs, DEFAULTS)
    assert clean[1] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert clean[2] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}


@pytest.mark.parametrize("messages, field", [
    ([{"role": "tool", "tool_call_id": "nope", "content": "42"}], "messages.0.tool_call_id"),
    ([{"role": "user", "content": "q"},
      {"role": "assistant", "content": None, "tool_calls": [dict(CALL, function={"name": "lookup",
                                                                                 "arguments": "{oops"})]},
      {"role": "user", "content": "again"}], "messages.1.tool_calls.0.function.arguments"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]}],
     "messages.0.content.0.image_url.url"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}],
     "messages.0.content.0.image_url.url"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG, "detail": "huge"}}]}],
     "messages.0.content.0.image_url.detail"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
      {"role": "user", "content": "q"}], "messages.0.content.0"),
    ([{"role": "assistant", "content": None}, {"role": "user", "content": "q"}], "messages.0.content"),
    ([{"role": "user", "content": "q", "tool_calls": [CALL]}], "messages.0.tool_calls"),
    ([{"role": "wizard", "content": "q"}], "messages.0.role"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "messages"),
])
def test_bad_messages_are_refused_naming_the_field(messages, field):
    with pytest.raises(BadRequest) as exc:
        canonical.check_messages(messages, DEFAULTS)
    assert field in _fields(exc), _fields(exc)


def test_bounds_on_parts_and_image_bytes_come_from_the_configuration():
    config = dict(DEFAULTS, MAX_CONTENT_PARTS=2, MAX_IMAGE_BYTES=10)
    parts = [{"type": "text", "text": "a"}] * 3
    with pytest.raises(BadRequest, match="more than 2 content parts"):
        canonical.check_messages([{"role": "user", "content": parts}], config)
    image = [{"type": "image_url", "image_url": {"url": PNG}}]
    with pytest.raises(BadRequest, match="larger than 10 bytes"):
        canonical.check_messages([{"role": "user", "content": image}], config)
    assert canonical.check_messages([{"role": "user", "content": image}], DEFAULTS)[0]["content"] == image


def test_a_tool_result_may_answer_a_call_of_the_history():
    earlier = [{"role": "assistant", "content": None, "tool_calls": [CALL]}]
    clean = canonical.check_messages([{"role": "tool", "tool_call_id": "call_1", "content": "42"}], DEFAULTS,
                                     earlier=earlier)
    assert clean[0]["tool_call_id"] == "call_1"


def test_tools_and_tool_choice():
    assert canonical.check_tools(None, "none", DEFAULTS) == (None, None)  # what no choice means
    tools, choice = canonical.check_tools(TOOLS, {"type": "function", "function": {"name": "lookup"}}, DEFAULTS)
    assert tools[0]["function"]["name"] == "lookup" and choice["function"]["name"] == "lookup"
    for bad, field in [
        ((TOOLS * 2, None), "tools"),  # duplicate names
        ((TOOLS, {"type": "function", "function": {"name": "other"}}), "tool_choice"),
        ((None, "required"), "tool_choice"),
        ((TOOLS, "sometimes"), "tool_choice"),
        (([{"type": "web_search"}], None), "tools.0"),
        (([{"type": "function", "function": {"name": "has space"}}], None), "tools.0.function.name"),
    ]:
        with pytest.raises(BadRequest) as exc:
            canonical.check_tools(*bad, DEFAULTS)
        assert field in _fields(exc)
    many = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(3)]
    with pytest.raises(BadRequest, match="at most 2 tools"):
        canonical.check_tools(many, None, dict(DEFAULTS, MAX_TOOLS=2))
    with pytest.raises(BadRequest, match="larger than 20 bytes"):
        canonical.check_tools(many, None, dict(DEFAULTS, MAX_TOOLS_BYTES=20))


def test_response_formats():
    assert canonical.check_response_format({"type": "text"}) is None
    assert canonical.check_response_format({"type": "json_object"}) == {"type": "json_object"}
    spec = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True}}
    assert canonical.check_response_format(spec) == spec
    for bad in [{"type": "yaml"}, {"type": "json_schema", "json_schema": {"schema": {}}},
                {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}]:
        with pytest.raises(BadRequest):
            canonical.check_response_format(bad)


def test_stored_and_from_row_are_inverse():
    for message in [{"role": "user", "content": "plain"},
                    {"role": "assistant", "content": None, "tool_calls": [CALL]},
                    {"role": "assistant", "content": "let me look", "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                    {"role": "user", "content": [{"type": "text", "text": "see "},
                                                 {"type": "image_url", "image_url": {"url": PNG}}]}]:
        text, structure = canonical.stored(message)
        assert (structure is None) == (isinstance(message["content"], str) and len(message) == 2)
        assert canonical.from_row(message["role"], text, structure) == message


# ---------------------------------------------------------------- the engine


@pytest.fixture
def ctx(app):
    with app.app_context(), db.connection_context():
        yield app


def _turn(app, **kw):
    return chat.prepare_turn(registry=registry(), config=app.config, **kw)


def test_a_tool_round_trip_through_a_conversation_is_stored_and_listed_as_sent(ctx, admin):
    bot = Bot.create(name="tools", model="echo/echo")
    conv = chat.start_conversation(bot)
    turn = _turn(ctx, bot=bot, conversation=conv, content='find [echo call=lookup {"q": "x"}]',
                 options={"tools": TOOLS})
    done = turn.run()
    assert done.finish_reason == "tool_calls" and done.content == ""
    (call,) = done.tool_calls
    assert call["function"] == {"name": "lookup", "arguments": '{"q":"x"}'} and call["id"].startswith("call_")
    saved = Message.get_by_id(done.message_id)
    assert saved.structure == {"tool_calls": done.tool_calls}

    second = _turn(ctx, bot=bot, conversation=conv, options={"tools": TOOLS},
                   new_messages=[{"role": "tool", "tool_call_id": call["id"], "content": "42"}])
    answer = second.run()
    assert answer.content == "Echo: lookup returned 42" and answer.finish_reason == "stop"
    sent = second.request.messages
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "tool"]
    assert sent[-2]["tool_calls"] == done.tool_calls

    listed = admin.get(f"/api/v1/conversations/{conv.id}/messages").get_json()["data"]
    assert [m["role"] for m in listed] == ["user", "assistant", "tool", "assistant"]
    assert listed[1]["tool_calls"] == done.tool_calls and listed[1]["content"] == ""
    assert listed[2]["tool_call_id"] == call["id"] and listed[2]["content"] == "42"
    assert "tool_calls" not in listed[0] and "parts" not in listed[3]


def test_a_refused_turn_saves_nothing(ctx):
    bot = Bot.create(name="tools", model="echo/echo")
    conv = chat.start_conversation(bot)
    before = Message.select().count()
    with pytest.raises(BadRequest) as exc:
        _turn(ctx, bot=bot, conversation=conv, new_messages=[{"role": "tool", "tool_call_id": "x", "content": "1"}])
    assert "messages.0.tool_call_id" in exc.value.fields
    with pytest.raises(BadRequest) as exc:  # echo cannot take fields chatport does not model
        _turn(ctx, bot=bot, conversation=conv, content="hi", options={"passthrough": {"top_k": 5}})
    assert exc.value.fields == {"top_k": "not supported by echo/echo"}
    assert "echo/echo" in exc.value.message
    with pytest.raises(BadRequest) as exc:
        _turn(ctx, bot=bot, conversation=conv, content="hi", options={"n": 99})
    assert "n" in exc.value.fields
    assert Message.select().count() == before


def test_parts_reach_the_model_and_are_stored(ctx):
    bot = Bot.create(name="eyes", model="echo/echo")
    conv = chat.start_conversation(bot)
    parts = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}]
    done = _turn(ctx, bot=bot, conversation=conv, new_messages=[{"role": "user", "content": parts}]).run()
    assert done.content == "Echo: what is this? [image image/png, 28 bytes detail=low]"
    user = Message.select().where((Message.conversation == conv.id) & (Message.role == "user")).get()
    assert user.content == "what is this?" and user.structure == {"content": parts}


def test_a_model_without_images_refuses_them_naming_the_model(ctx):
    def script(request):
        yield "never"
        yield Usage(1, 1)

    with scripted(ctx, script) as model:
        with pytest.raises(BadRequest) as exc:
            _turn(ctx, model="scripted/test", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": PNG}}]}], persist=False)
        assert exc.value.fields == {"messages": "not supported by scripted/test"}
        assert "image" in exc.value.message
        with pytest.raises(BadRequest) as exc:
            _turn(ctx, model="scripted/test", messages=[{"role": "user", "content": "q"}],
                  options={"tools": TOOLS}, persist=False)
        assert exc.value.fields == {"tools": "not supported by scripted/test"}
        assert not model.requests


def test_text_parts_reach_a_model_as_text_and_a_tool_history_needs_tools(ctx):
    def script(request):
        yield "ok"
        yield Usage(1, 1)

    with scripted(ctx, script) as model:
        parts = [{"type": "text", "text": "one "}, {"type": "text", "text": "two"}]
        _turn(ctx, model="scripted/test", messages=[{"role": "user", "content": parts}], persist=False).run()
        assert model.requests[-1].messages == [{"role": "user", "content": "one two"}]
        history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "r"}]
        with pytest.raises(BadRequest) as exc:
            _turn(ctx, model="scripted/test", messages=history, persist=False)
        assert exc.value.fields == {"tools": "not supported by scripted/test"}


def test_choices_tool_fragments_and_logprobs_are_gathered(ctx):
    def script(request):
        yield "Hel"
        yield Chunk("Bon", index=1, logprobs=[{"token": "Bon", "logprob": -0.5}])
        yield "lo"
        yield Chunk(index=1, tool_calls=[{"index": 0, "id": "c9", "name": "lookup", "arguments": '{"q"'}])
        yield Chunk(index=1, tool_calls=[{"index": 0, "arguments": ': "y"}'}], finish_reason="tool_calls")
        yield Chunk(index=0, finish_reason="length")
        yield Usage(5, 7, cached_tokens=2, reasoning_tokens=3)

    with scripted(ctx, script) as model:
        model.supports = frozenset({"n", "tools"})
        turn = _turn(ctx, model="scripted/test", messages=[{"role": "user", "content": "q"}],
                     options={"n": 2, "tools": TOOLS}, persist=False)
        events = list(turn.events())
    deltas = [e for e in events if isinstance(e, Delta)]
    assert [d.index for d in deltas] == [0, 1, 0, 1, 1, 0]
    done = events[-1]
    assert isinstance(done, Done) and done.content == "Hello" and done.finish_reason == "length"
    first, second = done.choices
    assert (first.content, first.tool_calls, first.finish_reason) == ("Hello", None, "length")
    assert second.content == "Bon" and second.logprobs == [{"token": "Bon", "logprob": -0.5}]
    assert second.tool_calls == [{"id": "c9", "type": "function",
                                  "function": {"name": "lookup", "arguments": '{"q": "y"}'}}]
    assert second.finish_reason == "tool_calls"
    assert (done.usage.cached_tokens, done.usage.reasoning_tokens) == (2, 3)


def test_echo_honours_n_logprobs_stop_and_json_schema(ctx):
    done = _turn(ctx, model="echo/echo", messages=[{"role": "user", "content": "a b c"}], persist=False,
                 options={"n": 3, "logprobs": True, "top_logprobs": 2}).run()
    assert [c.content for c in done.choices] == ["Echo: a b c"] * 3
    tokens = done.choices[2].logprobs
    assert [t["token"] for t in tokens] == ["Echo:", " a", " b", " c"]
    assert [t["logprob"] for t in tokens] == [0.0, -0.01, -0.02, -0.03]
    assert [len(t["top_logprobs"]) for t in tokens] == [2] * 4
    stopped = _turn(ctx, model="echo/echo", messages=[{"role": "user", "content": "one two three"}],
                    persist=False, options={"stop": ["three"]}).run()
    assert stopped.content == "Echo: one two "
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number"},
                                               "ok": {"type": "boolean"}}, "required": ["answer"]}
    shaped = _turn(ctx, model="echo/echo", messages=[{"role": "user", "content": "hi"}], persist=False,
                   options={"response_format": {"type": "json_schema",
                                                "json_schema": {"name": "out", "schema": schema}}}).run()
    assert json.loads(shaped.content) == {"answer": "Echo: hi", "score": 0, "ok": False}


def test_history_leaves_out_a_tool_result_whose_call_fell_outside_the_window(ctx):
    bot = Bot.create(name="short", model="echo/echo")
    conv = chat.start_conversation(bot)
    first = _turn(ctx, bot=bot, conversation=conv, content="[echo call=lookup {}]", options={"tools": TOOLS}).run()
    _turn(ctx, bot=bot, conversation=conv, options={"tools": TOOLS},
          new_messages=[{"role": "tool", "tool_call_id": first.tool_calls[0]["id"], "content": "r"}]).run()
    ctx.config["HISTORY_MAX_MESSAGES"] = 2  # the tool result and its answer: the call is outside
    history = chat._history(conv, ctx.config)
    assert [m["role"] for m in history] == ["assistant"]


def test_trimming_drops_a_call_with_its_results():
    msgs = [{"role": "system", "content": "s"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "x" * 400},
            {"role": "user", "content": "q"}]
    assert [m["role"] for m in chat._trim_to_budget(msgs, 50)] == ["system", "user"]


# ---------------------------------------------------------------- schema 13


def test_v13_gives_messages_their_structure(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        migrator = SqliteMigrator(db) if is_sqlite() else PostgresqlMigrator(db)
        migrate(migrator.drop_column("message", "structure"))
        SchemaVersion.update(version=12).execute()
    app2 = make_app(database_url, tmp_path)  # AUTO_UPGRADE at start-up
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        bot = Bot.create(name="after", model="echo/echo")
        conv = chat.start_conversation(bot)
        done = _turn(app2, bot=bot, conversation=conv, content="[echo call=lookup {}]",
                     options={"tools": TOOLS}).run()
        assert Message.get_by_id(done.message_id).structure["tool_calls"][0]["function"]["name"] == "lookup"


def test_extractive_honours_stop_and_refuses_what_it_cannot_do(ctx):
    from app.providers.llm import ChatRequest
    from plugins.extractive import ExtractiveModel

    model = ExtractiveModel({})
    request = ChatRequest(messages=[{"role": "user", "content": "when are you open?"}], stop=[" to"],
                          extra={"passages": [{"content": "We are open from 9 to 5. Closed on Sunday."}]})
    assert "".join(d for d in model.stream(request) if isinstance(d, str)) == "We are open from 9"
    for options, field in [({"tools": TOOLS}, "tools"), ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"),
                           ({"response_format": {"type": "json_object"}}, "response_format")]:
        with pytest.raises(BadRequest) as exc:
            _turn(ctx, model="extractive/extractive", messages=[{"role": "user", "content": "q"}],
                  options=options, persist=False)
        assert exc.value.fields == {field: "not supported by extractive/extractive"}


def test_model_faces_take_bodies_up_to_their_own_limit(configured):
    """An inline image larger than MAX_CONTENT_LENGTH reaches /v1 (MODEL_MAX_CONTENT_LENGTH);
    the other APIs keep the smaller limit, and past either it is a 413 in the dialect's shape."""
    app, api = configured(MAX_CONTENT_LENGTH=64 * 1024, MODEL_MAX_CONTENT_LENGTH=512 * 1024)
    image = "data:image/png;base64," + base64.b64encode(b"\0" * 150_000).decode()
    parts = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": image}}]
    body = {"model": "echo/echo", "messages": [{"role": "user", "content": parts}]}
    resp = api.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.get_data()
    assert "150000 bytes" in resp.get_json()["choices"][0]["message"]["content"]
    resp = api.post("/v1/messages", json={"model": "echo/echo", "max_tokens": 50, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": image.split(",", 1)[1]}}]}]})
    assert resp.status_code == 200, resp.get_data()
    too_big = dict(body, messages=[{"role": "user", "content": "x" * 600_000}])
    resp = api.post("/v1/chat/completions", json=too_big)
    assert resp.status_code == 413 and "524288 bytes" in resp.get_json()["error"]["message"]
    resp = api.post("/api/v1/bots", json={"name": "big", "instructions": "x" * 100_000})
    assert resp.status_code == 413 and "65536 bytes" in resp.get_json()["message"]


def test_a_call_without_an_id_gets_one_that_the_stream_and_the_answer_share(ctx):
    def script(request):
        yield Chunk(tool_calls=[{"index": 0, "name": "lookup", "arguments": "{}"}])
        yield Usage(1, 1)

    with scripted(ctx, script) as model:
        model.supports = frozenset({"tools"})
        events = list(_turn(ctx, model="scripted/test", messages=[{"role": "user", "content": "q"}],
                            options={"tools": TOOLS}, persist=False).events())
    streamed = next(e for e in events if isinstance(e, Delta)).tool_calls[0]["id"]
    assert streamed.startswith("call_") and events[-1].tool_calls[0]["id"] == streamed

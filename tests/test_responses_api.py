"""OpenAI's Responses API (``/v1/responses``) through the Flask client, on SQLite and PostgreSQL:
every request field, the stored state (``store``, ``previous_response_id``) and the errors.

The echo model answers; ``seen`` records the ``ChatRequest`` each call gave it."""
import base64
import json

import pytest
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from app.errors import ProviderUnavailable
from app.providers.llm import registry
from app.storage import migrations
from app.storage.db import db, is_sqlite
from app.storage.models import Bot, Conversation, Message, SchemaVersion, StoredResponse, Usage

from .conftest import Api, create_key, make_app

TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
          "strict": True}]
CALL = '[echo call=get_weather {"city": "Paris"}]'


@pytest.fixture
def seen(app, monkeypatch):
    """The ChatRequests the echo model was given, in order."""
    requests = []
    with app.app_context():
        model = registry(app).models["echo/echo"]
    original = model.stream

    def recording(request):
        requests.append(request)
        return original(request)

    monkeypatch.setattr(model, "stream", recording)
    return requests


def _post(api, **body):
    body.setdefault("model", "echo/echo")
    return api.post("/v1/responses", json=body)


def _ok(api, **body):
    resp = _post(api, **body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _error(resp, status, param=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    error = resp.get_json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    if param is not None:
        assert error["param"] == param, error
    return error


def _text(body):
    return "".join(part["text"] for item in body["output"] if item["type"] == "message" for part in item["content"])


def _counts(app):
    with app.app_context(), db.connection_context():
        return Conversation.select().count(), Message.select().count(), StoredResponse.select().count()


def _events(resp):
    """``[(event, data)]`` of a streamed response; each event line names its data's type."""
    out, event = [], None
    for line in resp.get_data(as_text=True).splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["type"] == event
            out.append((event, data))
    assert [d["sequence_number"] for _, d in out] == list(range(len(out)))
    return out


# ---------------------------------------------------------------- text


def test_a_text_response_and_its_stored_copy(app, admin, seen):
    body = _ok(admin, input="hi there")
    assert body["object"] == "response" and body["id"].startswith("resp_") and len(body["id"]) == 37
    assert body["status"] == "completed" and body["model"] == "echo/echo" and body["store"] is True
    assert body["error"] is None and body["incomplete_details"] is None and body["previous_response_id"] is None
    [item] = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["id"] == "msg_" + body["id"][5:]
    assert item["content"] == [{"type": "output_text", "text": "Echo: hi there", "annotations": []}]
    usage = body["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] == 3
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == 0 and usage["output_tokens_details"] == {
        "reasoning_tokens": 0}
    assert seen[-1].messages == [{"role": "user", "content": "hi there"}]
    got = admin.get(f"/v1/responses/{body['id']}").get_json()
    for name in ("id", "object", "status", "model", "output", "usage", "store", "tools", "text", "metadata"):
        assert got[name] == body[name], name
    with app.app_context(), db.connection_context():  # a conversation with the model itself
        conv = Conversation.get()
        assert conv.bot_id is None and conv.model == "echo/echo" and conv.surface == "responses"
        assert [(m.role, m.content) for m in Message.select().order_by(Message.created_at)] == [
            ("user", "hi there"), ("assistant", "Echo: hi there")]


def test_input_items_of_every_role_and_part(app, admin, seen):
    png = base64.b64encode(b"\x89PNG" + b"0" * 20).decode()
    body = _ok(admin, input=[
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Echo: first", "annotations": []}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{png}", "detail": "low"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"}]}])
    assert _text(body) == "Echo: look [image image/png, 24 bytes detail=low] [image https://example.com/a.png detail=auto]"
    assert seen[-1].messages == [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "first"},  # text parts only: the model gets the text
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}",
                                                                         "detail": "low"}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                                         "detail": "auto"}}]}]
    items = admin.get(f"/v1/responses/{body['id']}/input_items?order=asc").get_json()
    assert items["object"] == "list" and items["has_more"] is False
    assert [(i["type"], i["role"]) for i in items["data"]] == [
        ("message", "developer"), ("message", "user"), ("message", "assistant"), ("message", "user")]
    assert items["data"][3]["content"][1] == {"type": "input_image", "image_url": f"data:image/png;base64,{png}",
                                              "detail": "low", "file_id": None}
    newest = admin.get(f"/v1/responses/{body['id']}/input_items?limit=2").get_json()  # desc by default
    assert [i["id"] for i in newest["data"]] == [i["id"] for i in reversed(items["data"])][:2]
    assert newest["has_more"] is True and newest["first_id"] == items["data"][3]["id"]
    rest = admin.get(f"/v1/responses/{body['id']}/input_items?limit=5&after={newest['last_id']}").get_json()
    assert [i["id"] for i in rest["data"]] == [i["id"] for i in reversed(items["data"])][2:]
    _error(admin.get(f"/v1/responses/{body['id']}/input_items?after=msg_nothing"), 400, "after")


def test_instructions_reach_the_model_and_are_not_kept(app, admin, seen):
    first = _ok(admin, input="hello", instructions="Answer in French.")
    assert first["instructions"] == "Answer in French."
    assert seen[-1].messages == [{"role": "system", "content": "Answer in French."},
                                 {"role": "user", "content": "hello"}]
    second = _ok(admin, input="again", previous_response_id=first["id"], instructions="Answer in German.")
    assert second["previous_response_id"] == first["id"] and second["instructions"] == "Answer in German."
    assert seen[-1].messages == [{"role": "system", "content": "Answer in German."},
                                 {"role": "user", "content": "hello"},
                                 {"role": "assistant", "content": "Echo: hello"},
                                 {"role": "user", "content": "again"}]
    with app.app_context(), db.connection_context():
        assert Conversation.select().count() == 1
        assert Message.select().where(Message.role == "system").count() == 0


def test_sampling_and_limits_reach_the_model(admin, seen):
    body = _ok(admin, input="one two three four five", temperature=0.3, top_p=0.5, max_output_tokens=2,
               user="alice", reasoning={"effort": "low", "summary": "auto"}, metadata={"purpose": "test"},
               parallel_tool_calls=False, truncation="auto", service_tier="auto", prompt_cache_key="k",
               stream_options={"include_obfuscation": False})
    request = seen[-1]
    assert (request.temperature, request.top_p, request.max_tokens, request.user, request.reasoning_effort) == (
        0.3, 0.5, 2, "alice", "low")
    assert request.metadata is None  # the response's metadata is the client's, not the model's
    assert request.parallel_tool_calls is None  # no tools: nothing to say
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert _text(body) == "Echo: one" and body["output"][0]["status"] == "incomplete"
    assert (body["temperature"], body["top_p"], body["max_output_tokens"], body["user"]) == (0.3, 0.5, 2, "alice")
    assert body["reasoning"] == {"effort": "low", "summary": "auto"} and body["metadata"] == {"purpose": "test"}
    assert body["truncation"] == "auto" and body["parallel_tool_calls"] is False
    got = admin.get(f"/v1/responses/{body['id']}").get_json()
    assert got["status"] == "incomplete" and got["incomplete_details"] == {"reason": "max_output_tokens"}
    assert got["metadata"] == {"purpose": "test"} and got["reasoning"] == body["reasoning"]


def test_logprobs_when_included(admin, seen):
    body = _ok(admin, input="a b", include=["message.output_text.logprobs"], top_logprobs=2)
    assert seen[-1].logprobs is True and seen[-1].top_logprobs == 2
    logprobs = body["output"][0]["content"][0]["logprobs"]
    assert [lp["token"] for lp in logprobs] == ["Echo:", " a", " b"]
    assert logprobs[1]["logprob"] == -0.01 and len(logprobs[1]["top_logprobs"]) == 2
    plain = _ok(admin, input="a b", top_logprobs=2)  # without the include: no logprobs asked
    assert seen[-1].logprobs is False and "logprobs" not in plain["output"][0]["content"][0]


def test_structured_output_by_text_format(admin, seen):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["answer", "n"], "additionalProperties": False}
    body = _ok(admin, input="hi", text={"format": {"type": "json_schema", "name": "reply", "schema": schema,
                                                   "strict": True}})
    assert json.loads(_text(body)) == {"answer": "Echo: hi", "n": 0}
    assert seen[-1].response_format == {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema,
                                                                             "strict": True}}
    assert body["text"]["format"] == {"type": "json_schema", "name": "reply", "schema": schema, "strict": True}
    body = _ok(admin, input="hi", text={"format": {"type": "json_object"}})
    assert json.loads(_text(body)) == {"echo": "Echo: hi"}
    body = _ok(admin, input="hi", text={"format": {"type": "text"}})
    assert _text(body) == "Echo: hi" and seen[-1].response_format is None
    _error(_post(admin, input="hi", text={"format": {"type": "xml"}}), 400, "text.format.type")
    _error(_post(admin, input="hi", text={"format": {"type": "json_schema", "schema": schema}}), 400,
           "text.format.name")
    _error(_post(admin, input="hi", text={"verbosity": "high"}), 400, "text.verbosity")


# ---------------------------------------------------------------- tools


def test_tools_round_trip_with_previous_response_id(app, admin, seen):
    first = _ok(admin, input=f"weather? {CALL}", tools=TOOLS)
    assert seen[-1].tools == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city", "parameters": TOOLS[0]["parameters"],
        "strict": True}}]
    [call] = first["output"]
    assert call["type"] == "function_call" and call["status"] == "completed" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["id"].startswith("fc_")
    assert first["tools"] == TOOLS
    second = _ok(admin, input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}],
                 previous_response_id=first["id"], tools=TOOLS)
    assert _text(second) == "Echo: get_weather returned sunny"
    assert seen[-1].messages[-2:] == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": call["call_id"], "type": "function", "function": {
            "name": "get_weather", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"}]
    assert admin.get(f"/v1/responses/{first['id']}").get_json()["output"] == first["output"]
    items = admin.get(f"/v1/responses/{second['id']}/input_items").get_json()["data"]
    assert items == [{"id": items[0]["id"], "type": "function_call_output", "call_id": call["call_id"],
                      "output": "sunny", "status": "completed"}]
    with app.app_context(), db.connection_context():
        assert Conversation.select().count() == 1 and Message.select().count() == 4


def test_tool_choice_and_parallel_calls(admin, seen):
    two = TOOLS + [{"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}},
                    "strict": None}]
    forced = _ok(admin, input="anything", tools=two, tool_choice={"type": "function", "name": "get_time"})
    assert seen[-1].tool_choice == {"type": "function", "function": {"name": "get_time"}}
    assert [i["name"] for i in forced["output"]] == ["get_time"]
    assert forced["tool_choice"] == {"type": "function", "name": "get_time"}
    required = _ok(admin, input="anything", tools=two, tool_choice="required")
    assert [i["name"] for i in required["output"]] == ["get_weather"]
    both = f"{CALL} [echo call=get_time {{}}]"
    assert [i["name"] for i in _ok(admin, input=both, tools=two)["output"]] == ["get_weather", "get_time"]
    assert [i["name"] for i in _ok(admin, input=both, tools=two, parallel_tool_calls=False)["output"]] == [
        "get_weather"]
    assert seen[-1].parallel_tool_calls is False
    assert _ok(admin, input=both, tools=two, tool_choice="none")["output"][0]["type"] == "message"
    _error(_post(admin, input="x", tools=two, tool_choice={"type": "function", "name": "nope"}), 400, "tool_choice")
    _error(_post(admin, input="x", tool_choice="required"), 400, "tool_choice")
    _error(_post(admin, input="x", tools=two, tool_choice={"type": "web_search_preview"}), 400, "tool_choice")
    assert _ok(admin, input="x", tool_choice="auto")["tool_choice"] == "auto"  # no tools: nothing to choose


def test_stateless_tool_round_trip_with_store_false(app, admin):
    first = _ok(admin, input=f"weather? {CALL}", tools=TOOLS, store=False)
    assert first["store"] is False
    call = first["output"][0]
    again = _ok(admin, store=False, tools=TOOLS, input=[
        {"role": "user", "content": f"weather? {CALL}"},
        {k: call[k] for k in ("type", "call_id", "name", "arguments", "id", "status")},
        {"type": "function_call_output", "call_id": call["call_id"],
         "output": [{"type": "input_text", "text": "rain"}]}])
    assert _text(again) == "Echo: get_weather returned rain"
    _error(admin.get(f"/v1/responses/{first['id']}"), 404)
    _error(_post(admin, input="more", previous_response_id=first["id"]), 404, "previous_response_id")
    assert _counts(app) == (0, 0, 0)


def test_store_false_continues_a_stored_response_and_saves_nothing(app, admin, seen):
    first = _ok(admin, input="hello")
    before = _counts(app)
    body = _ok(admin, input="again", previous_response_id=first["id"], store=False)
    assert _text(body) == "Echo: again" and body["previous_response_id"] == first["id"]
    assert seen[-1].messages == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Echo: hello"},
                                 {"role": "user", "content": "again"}]
    assert _counts(app) == before
    _error(admin.get(f"/v1/responses/{body['id']}"), 404)


def test_a_call_id_that_matches_nothing_is_refused_and_saves_nothing(app, admin):
    first = _ok(admin, input=f"weather? {CALL}", tools=TOOLS)
    before = _counts(app)
    error = _error(_post(admin, input=[{"type": "function_call_output", "call_id": "call_nothing", "output": "x"}],
                         previous_response_id=first["id"], tools=TOOLS), 400, "input.0.call_id")
    assert "call_nothing" in error["message"] and "input[0]" in error["message"]
    error = _error(_post(admin, input=[{"role": "user", "content": "hi"},
                                       {"type": "function_call_output", "call_id": "call_x", "output": "x"}]),
                   400, "input.1.call_id")
    assert _counts(app) == before


def test_function_call_items_are_checked(app, admin):
    bad_args = [{"role": "user", "content": "q"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{not json"},
                {"type": "function_call_output", "call_id": "c1", "output": "x"}]
    _error(_post(admin, input=bad_args, tools=TOOLS), 400, "input.1.arguments")
    bad_name = [dict(item) for item in bad_args]
    bad_name[1].update(arguments="{}", name="no spaces allowed")
    _error(_post(admin, input=bad_name, tools=TOOLS), 400, "input.1.name")
    image_out = [dict(item) for item in bad_args]
    image_out[1]["arguments"] = "{}"
    image_out[2]["output"] = [{"type": "input_image", "image_url": "https://example.com/a.png"}]
    _error(_post(admin, input=image_out, tools=TOOLS), 400, "input.2.output.0")
    assert _counts(app) == (0, 0, 0)


def test_tools_other_than_functions_are_refused(app, admin):
    for tool in ({"type": "web_search"}, {"type": "web_search_preview"}, {"type": "file_search",
                                                                          "vector_store_ids": ["vs"]}):
        error = _error(_post(admin, input="hi", tools=[tool]), 400, "tools")
        assert tool["type"] in error["message"] and error["code"] == "unsupported_parameter"
    _error(_post(admin, input="hi", tools=[{"type": "function", "name": "bad name"}]), 400, "tools.0.name")
    _error(_post(admin, input="hi", tools=[TOOLS[0], TOOLS[0]]), 400, "tools")
    assert _counts(app) == (0, 0, 0)


# ---------------------------------------------------------------- errors


def test_bad_requests_in_openais_shape_and_nothing_saved(app, admin):
    _error(_post(admin, input="hi", previous_response_id="resp_" + "0" * 32), 404, "previous_response_id")
    _error(_post(admin, input="hi", previous_response_id="not-a-response-id"), 404, "previous_response_id")
    _error(admin.get("/v1/responses/resp_nothing"), 404)
    _error(admin.delete("/v1/responses/resp_" + "0" * 32), 404)
    _error(_post(admin, input="hi", model="echo/none"), 400, "model")
    _error(admin.post("/v1/responses", json={"input": "hi"}), 400, "model")
    _error(_post(admin), 400, "input")
    _error(_post(admin, input=[]), 400, "input")
    _error(_post(admin, input=""), 400)
    _error(_post(admin, input=[{"type": "web_search_call", "id": "ws"}]), 400, "input.0.type")
    _error(_post(admin, input=[{"role": "tool", "content": "x"}]), 400, "input.0.role")
    _error(_post(admin, input=[{"role": "user", "content": [{"type": "input_audio"}]}]), 400, "input.0.content.0.type")
    _error(_post(admin, input=[{"role": "user", "content": [{"type": "input_image", "file_id": "f1"}]}]), 400,
           "input.0.content.0.image_url")
    _error(_post(admin, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x/a.png"}]}]),
           400, "input.0.content.0.image_url.url")
    _error(_post(admin, input=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]), 400, "input")
    _error(_post(admin, input="hi", temperature=3), 400, "temperature")
    _error(_post(admin, input="hi", top_p=2), 400, "top_p")
    _error(_post(admin, input="hi", max_output_tokens=0), 400, "max_output_tokens")
    _error(_post(admin, input="hi", reasoning={"effort": "extreme"}), 400, "reasoning.effort")
    _error(_post(admin, input="hi", metadata={f"k{i}": "v" for i in range(17)}), 400, "metadata")
    _error(_post(admin, input="hi", metadata={"k": 1}), 400)
    for name, value in (("conversation", "conv_1"), ("prompt", {"id": "p"}), ("background", True),
                        ("frequency_penalty", 1), ("seed", 1)):
        error = _error(_post(admin, input="hi", **{name: value}), 400, name)
        assert error["code"] == "unsupported_parameter"
    assert _counts(app) == (0, 0, 0)
    with app.app_context(), db.connection_context():
        assert Usage.select().where(Usage.status == 400).count() > 10  # refused calls are metered too


def test_a_field_the_model_cannot_honour_is_refused(app, admin, monkeypatch):
    with app.app_context():
        model = registry(app).models["echo/echo"]
    monkeypatch.setattr(model, "supports", model.supports - {"tools", "images", "response_format"})
    error = _error(_post(admin, input="hi", tools=TOOLS), 400, "tools")
    assert "echo/echo" in error["message"]
    _error(_post(admin, input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"}]}]), 400, "input")
    _error(_post(admin, input="hi", text={"format": {"type": "json_object"}}), 400, "text.format")
    assert _counts(app) == (0, 0, 0)


# ---------------------------------------------------------------- streams


def test_stream_of_a_text_response(app, admin):
    resp = _post(admin, input="hi there", stream=True)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    events = _events(resp)
    assert [e for e, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    created = events[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    deltas = [d["delta"] for e, d in events if e == "response.output_text.delta"]
    assert "".join(deltas) == "Echo: hi there"
    added = events[2][1]
    assert added["output_index"] == 0 and added["item"]["status"] == "in_progress"
    assert all(d["item_id"] == added["item"]["id"] for e, d in events[3:9])
    assert events[7][1]["text"] == "Echo: hi there"
    done = events[-1][1]["response"]
    assert done["id"] == created["id"] and done["status"] == "completed" and done["usage"]["output_tokens"] == 3
    assert done["output"] == [events[9][1]["item"]]
    got = admin.get(f"/v1/responses/{done['id']}").get_json()
    assert got["output"] == done["output"] and got["usage"] == done["usage"]


def test_stream_of_tool_calls_and_their_answer(app, admin):
    events = _events(_post(admin, input=f"{CALL} [echo call=get_time {{}}]", stream=True,
                           tools=TOOLS + [{"type": "function", "name": "get_time", "parameters": {}}]))
    call_events = ["response.output_item.added", "response.function_call_arguments.delta",
                   "response.function_call_arguments.delta", "response.function_call_arguments.done",
                   "response.output_item.done"]
    assert [e for e, _ in events] == ["response.created", "response.in_progress", *call_events, *call_events,
                                      "response.completed"]
    first = events[2][1]["item"]
    assert first["type"] == "function_call" and first["name"] == "get_weather" and first["arguments"] == ""
    args = "".join(d["delta"] for e, d in events if e == "response.function_call_arguments.delta"
                   and d["item_id"] == first["id"])
    assert json.loads(args) == {"city": "Paris"}
    done = events[-1][1]["response"]
    assert [(i["name"], i["output_index"] if "output_index" in i else n) for n, i in enumerate(done["output"])] == [
        ("get_weather", 0), ("get_time", 1)]
    assert done["output"][0]["arguments"] == args and done["output"][0]["call_id"] == first["call_id"]
    answer = _events(_post(admin, stream=True, previous_response_id=done["id"], tools=TOOLS, input=[
        {"type": "function_call_output", "call_id": done["output"][0]["call_id"], "output": "sunny"},
        {"type": "function_call_output", "call_id": done["output"][1]["call_id"], "output": "noon"}]))
    assert "".join(d["delta"] for e, d in answer if e == "response.output_text.delta") == (
        "Echo: get_time returned noon")
    assert answer[-1][1]["response"]["previous_response_id"] == done["id"]


def test_stream_with_logprobs(admin):
    events = _events(_post(admin, input="a b", stream=True, include=["message.output_text.logprobs"]))
    deltas = [d for e, d in events if e == "response.output_text.delta"]
    assert [d["logprobs"][0]["token"] for d in deltas] == ["Echo:", " a", " b"]
    final = events[-1][1]["response"]["output"][0]["content"][0]
    assert [lp["token"] for lp in final["logprobs"]] == ["Echo:", " a", " b"]


def test_a_provider_failure_mid_stream_is_response_failed(app, admin, monkeypatch):
    with app.app_context():
        model = registry(app).models["echo/echo"]
    original = model.stream

    def failing(request):
        stream = original(request)
        yield next(stream)
        raise ProviderUnavailable("upstream went away")

    monkeypatch.setattr(model, "stream", failing)
    events = _events(_post(admin, input="hi there", stream=True))
    assert [e for e, _ in events][-5:] == ["response.output_text.delta", "response.output_text.done",
                                           "response.content_part.done", "response.output_item.done",
                                           "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error",
                                                                "message": "upstream went away"}
    assert failed["output"][0]["status"] == "incomplete"
    got = admin.get(f"/v1/responses/{failed['id']}").get_json()
    assert got["status"] == "failed" and got["error"]["message"] == "upstream went away"
    _error(_post(admin, input="hi"), 502)  # not streamed: the error itself


# ---------------------------------------------------------------- state and scope


def test_continuing_an_older_response_branches_off(app, admin, seen):
    first = _ok(admin, input="one")
    second = _ok(admin, input="two", previous_response_id=first["id"])
    branch = _ok(admin, input="deux", previous_response_id=first["id"])
    assert seen[-1].messages == [{"role": "user", "content": "one"}, {"role": "assistant", "content": "Echo: one"},
                                 {"role": "user", "content": "deux"}]
    after = _ok(admin, input="three", previous_response_id=second["id"])  # the first line goes on
    assert [m["content"] for m in seen[-1].messages] == ["one", "Echo: one", "two", "Echo: two", "three"]
    on_branch = _ok(admin, input="trois", previous_response_id=branch["id"])
    assert [m["content"] for m in seen[-1].messages] == ["one", "Echo: one", "deux", "Echo: deux", "trois"]
    with app.app_context(), db.connection_context():
        rows = {r.id: r.conversation_id for r in StoredResponse.select()}
        ids = {b["id"]: b["id"][5:] for b in (first, second, branch, after, on_branch)}
        by_conv = {}
        for name, hexed in ids.items():
            conv = next(c for m, c in rows.items() if m.replace("-", "") == hexed)
            by_conv.setdefault(conv, []).append(name)
        assert sorted(map(len, by_conv.values())) == [2, 3]  # first, second, after | branch, on_branch
        assert Conversation.select().count() == 2 and Message.select().count() == 5 * 2 + 2  # the branch's copy


def test_a_response_in_progress_cannot_be_continued_or_deleted(app, admin):
    resp = admin.client.post("/v1/responses", headers=admin._headers(None), json={  # read by hand below
        "model": "echo/echo", "input": "[echo tokens=3 delay=0.01]", "stream": True})
    frames = iter(resp.response)
    created = json.loads(next(frames).decode().split("data: ", 1)[1].split("\n")[0])["response"]
    got = admin.get(f"/v1/responses/{created['id']}").get_json()
    assert got["status"] == "in_progress" and got["output"] == []
    _error(_post(admin, input="next", previous_response_id=created["id"]), 400, "previous_response_id")
    _error(admin.delete(f"/v1/responses/{created['id']}"), 409)
    assert b"response.completed" in b"".join(frames)
    resp.close()
    assert admin.get(f"/v1/responses/{created['id']}").get_json()["status"] == "completed"


def test_keys_reach_only_their_responses(app, client, admin):
    alice, bob = Api(client, create_key(app, kind="client")), Api(client, create_key(app, kind="client"))
    mine = _ok(alice, input="secret")
    assert alice.get(f"/v1/responses/{mine['id']}").status_code == 200
    assert admin.get(f"/v1/responses/{mine['id']}").status_code == 200
    _error(bob.get(f"/v1/responses/{mine['id']}"), 404)
    _error(bob.get(f"/v1/responses/{mine['id']}/input_items"), 404)
    _error(bob.delete(f"/v1/responses/{mine['id']}"), 404)
    _error(_post(bob, input="x", previous_response_id=mine["id"]), 404, "previous_response_id")
    bot = admin.post("/api/v1/bots", json={"name": "Helper", "instructions": "Be kind."}).get_json()
    other = admin.post("/api/v1/bots", json={"name": "Other"}).get_json()
    scoped = Api(client, create_key(app, kind="client", bot_ids=[bot["id"]]))
    _error(_post(scoped, input="x"), 403)
    _error(_post(scoped, input="x", model=f"bot/{other['id']}"), 404)
    with_bot = _ok(scoped, input="x", model="bot/Helper")
    assert with_bot["model"] == "bot/Helper" and scoped.get(f"/v1/responses/{with_bot['id']}").status_code == 200
    _error(scoped.get(f"/v1/responses/{mine['id']}"), 404)


def test_bot_models_use_the_bots_instructions(app, admin, seen):
    bot = admin.post("/api/v1/bots", json={"name": "Pirate", "instructions": "Talk like a pirate."}).get_json()
    body = _ok(admin, model=f"bot/{bot['id']}", instructions="Talk like a lawyer.",
               input=[{"role": "system", "content": "Be a robot."}, {"role": "user", "content": "ahoy"}])
    assert _text(body) == "Echo: ahoy" and body["model"] == f"bot/{bot['id']}"
    assert seen[-1].messages == [{"role": "system", "content": "Talk like a pirate."},
                                 {"role": "user", "content": "ahoy"}]
    again = _ok(admin, model="bot/Pirate", input="more", previous_response_id=body["id"])
    assert [m["content"] for m in seen[-1].messages] == ["Talk like a pirate.", "ahoy", "Echo: ahoy", "more"]
    _error(_post(admin, input="x", previous_response_id=again["id"]), 400, "previous_response_id")
    plain = _ok(admin, input="x")
    _error(_post(admin, model="bot/Pirate", input="x", previous_response_id=plain["id"]), 400,
           "previous_response_id")
    with app.app_context(), db.connection_context():
        conv = Conversation.get(Conversation.bot == bot["id"])
        assert conv.model is None and conv.surface == "responses"


def test_delete_removes_the_turn(app, admin):
    first = _ok(admin, input="one")
    second = _ok(admin, input="two", previous_response_id=first["id"])
    deleted = admin.delete(f"/v1/responses/{second['id']}")
    assert deleted.status_code == 200 and deleted.get_json() == {"id": second["id"], "object": "response.deleted",
                                                               "deleted": True}
    _error(admin.get(f"/v1/responses/{second['id']}"), 404)
    assert _counts(app) == (1, 2, 1)
    assert admin.delete(f"/v1/responses/{first['id']}").status_code == 200
    assert _counts(app) == (0, 0, 0)  # nothing left: the conversation went too


def test_a_stored_conversation_is_a_chatport_conversation(app, admin):
    body = _ok(admin, input="hello", user="carol")
    with app.app_context(), db.connection_context():
        conv = Conversation.get()
    listed = admin.get(f"/api/v1/conversations/{conv.id}").get_json()
    assert listed["bot_id"] is None and listed["model"] == "echo/echo" and listed["end_user_id"] == "carol"
    turn = admin.post(f"/api/v1/conversations/{conv.id}/messages", json={"content": "from chatport"})
    assert turn.status_code == 200 and turn.get_json()["message"]["content"] == "Echo: from chatport"
    messages = admin.get(f"/api/v1/conversations/{conv.id}/messages").get_json()["data"]
    assert [m["content"] for m in messages] == ["hello", "Echo: hello", "from chatport", "Echo: from chatport"]
    bot = admin.post("/api/v1/bots", json={"name": "b"}).get_json()
    assert admin.get(f"/api/v1/conversations?bot_id={bot['id']}").get_json()["data"] == []
    assert _ok(admin, input="x", previous_response_id=body["id"])["status"] == "completed"  # a branch now


def test_metered_like_every_v1_call(app, client):
    app.config["MODEL_PRICES"] = {"*": {"prompt": 1000, "completion": 1000}}  # a credit per token
    api = Api(client, create_key(app, kind="client", credit_quota=100))
    body = _ok(api, input="hello there")
    streamed = _events(_post(api, input="hello there", stream=True))[-1][1]["response"]
    with app.app_context(), db.connection_context():
        rows = list(Usage.select().where(Usage.dialect == "openai").order_by(Usage.created_at))
    assert [(r.category, r.endpoint, r.status) for r in rows] == [("conversation", "POST /v1/responses", 200)] * 2
    for row, got in zip(rows, (body, streamed)):
        assert (row.prompt_tokens, row.completion_tokens) == (got["usage"]["input_tokens"],
                                                              got["usage"]["output_tokens"])
        assert row.model == "echo/echo" and row.credits == 1 + got["usage"]["total_tokens"]
    poor = Api(client, create_key(app, kind="client", credit_quota=3))
    app.config["MODEL_PRICES"] = {"*": {"prompt": 1000, "completion": 0}}
    before = _counts(app)
    _error(_post(poor, input="x" * 400), 429)  # ~100 prompt tokens: more than the quota
    _error(_post(poor, input="x" * 400, previous_response_id=body["id"]), 404)
    assert _counts(app) == before


def test_a_refused_continuation_leaves_its_conversation_as_it_was(app, client):
    key = create_key(app, kind="client", credit_quota=8)
    api = Api(client, key)
    first = _ok(api, input="hi", tools=TOOLS)
    before = _counts(app)
    app.config["MODEL_PRICES"] = {"*": {"prompt": 1000, "completion": 0}}
    _error(_post(api, input=[{"role": "user", "content": "x" * 400}, {"role": "user", "content": "y"}],
                 previous_response_id=first["id"]), 429)
    assert _counts(app) == before


# ---------------------------------------------------------------- schema 14


def _back_to_v13():
    """This database as schema 13 had it: conversations always with a bot, no response table."""
    migrator = SqliteMigrator(db) if is_sqlite() else PostgresqlMigrator(db)
    if is_sqlite():
        db.execute_sql("PRAGMA foreign_keys=OFF")
    migrate(migrator.drop_column("conversation", "model"), migrator.add_not_null("conversation", "bot_id"))
    if is_sqlite():
        db.execute_sql("PRAGMA foreign_keys=ON")
    db.drop_tables([StoredResponse])
    SchemaVersion.update(version=13).execute()


def test_v14_lets_conversations_go_without_a_bot_and_keeps_messages(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        bot = Bot.create(name="old", model="echo/echo")
        conv = Conversation.create(bot=bot)
        Message.create(conversation=conv, role="user", content="kept")
        _back_to_v13()
        with pytest.raises(Exception):
            with db.atomic():
                Conversation.insert(id="c-none", bot=None).execute()
    app = make_app(database_url, tmp_path)  # AUTO_UPGRADE
    with app.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        assert [m.content for m in Message.select()] == ["kept"]
        Conversation.create(id="c-model", bot=None, model="echo/echo")
        assert StoredResponse.select().count() == 0
        Bot.delete().where(Bot.id == bot.id).execute()  # the cascade still holds
        assert [c.id for c in Conversation.select()] == ["c-model"] and Message.select().count() == 0


def test_stream_renders_text_after_a_call_as_its_own_message():
    """A provider may say something after calling a tool: each item is closed before the next."""
    from app.api import responses_format as wire
    from app.providers.llm import Usage
    from app.services.events import Delta, Done, Start

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    events = [Start(None, None, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "echo/echo", 1.0),
              Delta("", tool_calls=[{"index": 0, "id": "call_1", "name": "f", "arguments": "{}"}]),
              Delta("and then"), Done("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "and then", Usage(1, 2), "tool_calls",
                                      "complete", tool_calls=[call])]
    finished = []
    shown = wire.Shown("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 1.0, {"model": "echo/echo"})
    frames = "".join(wire.response_events(iter(events), shown, on_finish=lambda u, e: finished.append((u, e))))
    kinds = [line[7:] for line in frames.splitlines() if line.startswith("event: ")]
    assert kinds[2:] == ["response.output_item.added", "response.function_call_arguments.delta",
                         "response.function_call_arguments.done", "response.output_item.done",
                         "response.output_item.added", "response.content_part.added", "response.output_text.delta",
                         "response.output_text.done", "response.content_part.done", "response.output_item.done",
                         "response.completed"]
    final = json.loads(frames.rsplit("data: ", 1)[1])["response"]
    assert [i["type"] for i in final["output"]] == ["function_call", "message"]
    assert final["output"][1]["content"][0]["text"] == "and then" and finished == [(Usage(1, 2), None)]


def test_item_references_name_the_items_of_stored_responses(app, client, admin, seen):
    """The Vercel AI SDK sends earlier answers as ``item_reference`` items when ``store`` is on."""
    first = _ok(admin, input=f"weather? {CALL}", tools=TOOLS)
    call = first["output"][0]
    second = _ok(admin, tools=TOOLS, previous_response_id=first["id"], input=[
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}])
    inputs = admin.get(f"/v1/responses/{first['id']}/input_items").get_json()["data"]
    output_item = admin.get(f"/v1/responses/{second['id']}/input_items").get_json()["data"][0]
    _ok(admin, tools=TOOLS, input=[{"type": "item_reference", "id": inputs[0]["id"]},
                                   {"type": "item_reference", "id": call["id"]},
                                   {"type": "item_reference", "id": output_item["id"]},
                                   {"type": "item_reference", "id": second["output"][0]["id"]},
                                   {"role": "user", "content": "thanks"}])
    assert seen[-1].messages == [
        {"role": "user", "content": f"weather? {CALL}"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": call["call_id"], "type": "function", "function": {
            "name": "get_weather", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"},
        {"role": "assistant", "content": "Echo: get_weather returned sunny"},
        {"role": "user", "content": "thanks"}]
    before = _counts(app)
    for ref in ("msg_" + "0" * 32, "fc_" + call["id"][3:-2] + "_5", "nothing", call["id"].replace("fc_", "fco_")[:-2]):
        _error(_post(admin, input=[{"type": "item_reference", "id": ref}, {"role": "user", "content": "x"}]), 400,
               "input.0.id")
    other = Api(client, create_key(app, kind="client"))
    _error(_post(other, input=[{"type": "item_reference", "id": second["output"][0]["id"]},
                               {"role": "user", "content": "x"}]), 400, "input.0.id")
    assert _counts(app) == before

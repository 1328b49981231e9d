"""The anthropic plugin's translation of the whole request/reply model (tools, tool results,
images, response_format, finish reasons, cached usage, refusals), checked on the wire: what
the fake Messages server (tests/fakes/anthropic_server.py) received, and the deltas it
became. The fake refuses what the real API refuses (roles not alternating, a tool_result
without its tool_use, ...), so a wrong translation fails here as it would upstream."""
import json

import anthropic
import pytest

from app import errors
from app.providers import sse_batches
from app.providers.llm import ChatRequest, Chunk, ModelRegistry, Usage, collect
from plugins import anthropic_messages
from tests.fakes import FakeAnthropic

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"]}}}


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


def claude(fake, **config):
    settings = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "sk-ant-test",
                "ANTHROPIC_MODELS": ["claude-test"], "ANTHROPIC_MAX_RETRIES": 0,
                "ANTHROPIC_READ_TIMEOUT": 5, "ANTHROPIC_CONNECT_TIMEOUT": 2, **config}
    return ModelRegistry(settings).get("anthropic/claude-test")


def request(**kw):
    return ChatRequest(messages=kw.pop("messages", MESSAGES), **kw)


def items(fake, stream=True, **kw):
    """The deltas of one call (checked first, as the core does)."""
    model = claude(fake)
    req = request(stream=stream, **kw)
    model.check(req)
    return list(model.stream(req))


def reassemble(deltas):
    """``(text, {index: {"id", "name", "arguments"}}, finish reasons)`` from deltas."""
    text, calls, finish = [], {}, []
    for delta in deltas:
        if isinstance(delta, str):
            text.append(delta)
        elif isinstance(delta, Chunk):
            assert delta.index == 0
            text.append(delta.text)
            for fragment in delta.tool_calls or ():
                call = calls.setdefault(fragment["index"], {"id": None, "name": None, "arguments": ""})
                for key in ("id", "name"):
                    if fragment.get(key):
                        assert call[key] is None, "id and name come once, with the first fragment"
                        call[key] = fragment[key]
                call["arguments"] += fragment.get("arguments") or ""
            if delta.finish_reason:
                finish.append(delta.finish_reason)
    return "".join(text), calls, finish


both = pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])


# -- requests


def test_plain_text_body_is_unchanged(fake):
    collect(claude(fake).stream(request(stream=False)))
    assert fake.last.body == {"model": "claude-test", "max_tokens": 1024, "system": "Be brief.",
                              "messages": [{"role": "user", "content": "Hi there"}]}
    collect(claude(fake).stream(request()))
    assert fake.last.body == {"model": "claude-test", "max_tokens": 1024, "system": "Be brief.",
                              "messages": [{"role": "user", "content": "Hi there"}], "stream": True}


def test_system_and_developer_messages_become_the_system_parameter(fake):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Thanks"}]
    collect(claude(fake).stream(request(messages=messages)))
    assert fake.last.body["system"] == "Be brief.\n\nAnswer in French."
    assert fake.last.body["messages"] == [{"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello."},
                                          {"role": "user", "content": "Thanks"}]


def test_top_p_and_user(fake):
    collect(claude(fake).stream(request(top_p=0.5, user="user-9")))
    assert (fake.last.body["top_p"], fake.last.body["metadata"]) == (0.5, {"user_id": "user-9"})


def test_tools_get_an_input_schema_and_description(fake):
    collect(claude(fake).stream(request(tools=[WEATHER, CLOCK])))
    assert fake.last.body["tools"] == [
        {"name": "get_weather", "description": "The weather in a city.",
         "input_schema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in fake.last.body  # the API's default is auto


@pytest.mark.parametrize("choice, parallel, expected", [
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "get_time"}}, None, {"type": "tool", "name": "get_time"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ({"type": "function", "function": {"name": "get_time"}}, False,
     {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}),
    ("none", False, {"type": "none"}),  # nothing to run in parallel; the API refuses the flag there
], ids=["auto", "none", "required", "named", "parallel-off", "auto-parallel-off", "required-parallel-off",
        "named-parallel-off", "none-parallel-off"])
def test_tool_choice(fake, choice, parallel, expected):
    fake.script(text="Fine.")
    items(fake, tools=[WEATHER, CLOCK], tool_choice=choice, parallel_tool_calls=parallel)
    assert fake.last.body["tool_choice"] == expected
    assert [t["name"] for t in fake.last.body["tools"]] == ["get_weather", "get_time"]


def test_tool_choice_that_needs_tools_without_any_is_a_bad_request(fake):
    with pytest.raises(errors.ProviderBadRequest):
        items(fake, tool_choice="required")
    assert fake.requests == []


@both
def test_tool_round_trip_becomes_tool_use_and_tool_result_blocks_in_alternating_messages(fake, stream):
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                "arguments": '{"city": "Paris"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather and time in Paris?"},
                {"role": "user", "content": [{"type": "text", "text": "Please."}]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:05"}]},
                {"role": "user", "content": "And tomorrow?"}]
    fake.script(text="Rain tomorrow.")
    text, _, _ = reassemble(items(fake, stream=stream, messages=messages, tools=[WEATHER, CLOCK]))
    assert text == "Rain tomorrow."
    assert fake.last.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"},
                                     {"type": "text", "text": "Please."}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny, 21 C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "14:05"}]},
            {"type": "text", "text": "And tomorrow?"}]}]


def test_assistant_tool_calls_without_content_have_only_tool_use_blocks(fake):
    messages = [{"role": "user", "content": "Time?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_9", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_9", "content": "09:00"}]
    collect(claude(fake).stream(request(messages=messages, tools=[CLOCK])))
    assert fake.last.body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_9", "name": "get_time", "input": {}}]}
    assert fake.last.body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_9", "content": "09:00"}]}


@both
def test_a_history_of_tool_calls_without_tools_declares_them_and_calls_none(fake, stream):
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
             {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
             {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
    messages = [{"role": "user", "content": "Weather and time?"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                *({"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls),
                {"role": "user", "content": "Thanks."}]
    fake.script(text="You are welcome.")
    text, called, _ = reassemble(items(fake, stream=stream, messages=messages))
    assert (text, called) == ("You are welcome.", {})
    assert [t["name"] for t in fake.last.body["tools"]] == ["get_weather", "get_time"]
    assert all(t["input_schema"] == {"type": "object", "properties": {}} for t in fake.last.body["tools"])
    assert fake.last.body["tool_choice"] == {"type": "none"}
    collect(claude(fake).stream(request(messages=MESSAGES)))  # no tool calls: no tools
    assert "tools" not in fake.last.body and "tool_choice" not in fake.last.body


def test_tool_call_arguments_that_are_not_an_object_are_a_bad_request(fake):
    messages = [{"role": "user", "content": "Time?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_9", "type": "function", "function": {"name": "get_time", "arguments": "[1]"}}]},
                {"role": "tool", "tool_call_id": "call_9", "content": "09:00"}]
    with pytest.raises(errors.ProviderBadRequest) as info:
        collect(claude(fake).stream(request(messages=messages, tools=[CLOCK])))
    assert "call_9" in info.value.message
    assert fake.requests == []


def test_a_message_with_nothing_in_it_is_left_out(fake):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None},
                {"role": "user", "content": "Still there?"}]
    collect(claude(fake).stream(request(messages=messages)))
    assert fake.last.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Hi"}, {"type": "text", "text": "Still there?"}]}]


@both
def test_image_parts_become_base64_and_url_image_blocks(fake, stream):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What are these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]
    items(fake, stream=stream, messages=messages)
    assert fake.blocks() == [
        {"type": "text", "text": "What are these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]


def test_an_image_in_a_tool_result_is_an_image_block(fake):
    messages = [{"role": "user", "content": "Screenshot?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}]
    collect(claude(fake).stream(request(messages=messages, tools=[CLOCK])))
    [result] = fake.blocks("tool_result")
    assert result["content"] == [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                "data": PIXEL}}]


@pytest.mark.parametrize("url", ["data:image/png,notbase64", "ftp://example.com/a.png"])
def test_an_image_url_the_api_cannot_take_is_a_bad_request(fake, url):
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(errors.ProviderBadRequest):
        collect(claude(fake).stream(request(messages=messages)))
    assert fake.requests == []


# -- response_format


@both
def test_json_schema_is_a_forced_tool_whose_input_is_the_reply_text(fake, stream):
    fake.script(tool_calls=[{"name": "person", "arguments": {"name": "Ada", "age": 36}}], completion_tokens=7)
    deltas = items(fake, stream=stream, response_format=PERSON)
    text, calls, finish = reassemble(deltas)
    assert json.loads(text) == {"name": "Ada", "age": 36}
    assert (calls, finish) == ({}, [])  # finish_reason stop: no Chunk for it
    assert all(isinstance(d, (str, Usage)) for d in deltas)
    assert deltas[-1].completion_tokens == 7
    body = fake.last.body
    assert body["tools"] == [{"name": "person", "description": body["tools"][0]["description"],
                              "input_schema": PERSON["json_schema"]["schema"]}]
    assert body["tool_choice"] == {"type": "tool", "name": "person"}


@both
def test_json_object_is_a_forced_tool_with_a_permissive_schema(fake, stream):
    fake.script(text='{"answer": 42}')  # the fake answers a forced tool with the text as input
    text, calls, finish = reassemble(items(fake, stream=stream, response_format={"type": "json_object"}))
    assert json.loads(text) == {"answer": 42}
    assert (calls, finish) == ({}, [])
    [tool] = fake.last.body["tools"]
    assert (tool["name"], tool["input_schema"]) == ("json_response", {"type": "object"})
    assert fake.last.body["tool_choice"] == {"type": "tool", "name": "json_response"}


def test_streamed_response_tool_input_is_text_deltas(fake):
    fake.script(tool_calls=[{"name": "person", "arguments": {"name": "Ada", "age": 36},
                             "fragments": ['{"name": ', '"Ada", "age"', ': 36}']}], chunk_delay=0.02)
    deltas = items(fake, response_format=PERSON)
    assert deltas[:-1] == ['{"name": ', '"Ada", "age"', ': 36}']
    assert isinstance(deltas[-1], Usage)


@both
def test_response_format_with_tools_lets_the_model_call_a_tool_or_answer(fake, stream):
    fake.script(tool_calls=[{"id": "toolu_1", "name": "get_weather", "arguments": {"city": "Oslo"}}])
    text, calls, finish = reassemble(items(fake, stream=stream, tools=[WEATHER], response_format=PERSON))
    assert [t["name"] for t in fake.last.body["tools"]] == ["get_weather", "person"]
    assert fake.last.body["tool_choice"] == {"type": "any"}
    assert text == ""
    assert calls == {0: {"id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    assert finish == ["tool_calls"]


def test_response_tool_is_not_named_after_a_tool_of_the_caller(fake):
    person_tool = {"type": "function", "function": {"name": "person", "parameters": {"type": "object"}}}
    collect(claude(fake).stream(request(tools=[person_tool], tool_choice="none", response_format=PERSON)))
    assert [t["name"] for t in fake.last.body["tools"]] == ["person", "person_"]
    assert fake.last.body["tool_choice"] == {"type": "tool", "name": "person_"}


# -- replies


@both
def test_tool_calls_in_a_reply_are_fragments_with_index_id_and_name(fake, stream):
    fake.script(chunks=["Checking."], tool_calls=[
        {"id": "toolu_a", "name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2, 3]}},
        {"id": "toolu_b", "name": "get_time", "arguments": {}}], chunk_delay=0.01)
    deltas = items(fake, stream=stream, tools=[WEATHER, CLOCK])
    text, calls, finish = reassemble(deltas)
    assert text == "Checking."
    assert {i: (c["id"], c["name"], json.loads(c["arguments"])) for i, c in calls.items()} == {
        0: ("toolu_a", "get_weather", {"city": "Paris", "days": [1, 2, 3]}), 1: ("toolu_b", "get_time", {})}
    assert finish == ["tool_calls"]
    assert isinstance(deltas[0], str)  # the text is a plain str delta
    assert isinstance(deltas[-1], Usage)
    if not stream:
        assert deltas[1:-1] == [
            Chunk(tool_calls=[{"index": 0, "id": "toolu_a", "name": "get_weather",
                               "arguments": '{"city": "Paris", "days": [1, 2, 3]}'},
                              {"index": 1, "id": "toolu_b", "name": "get_time", "arguments": "{}"}]),
            Chunk(finish_reason="tool_calls")]


def test_streamed_tool_arguments_come_in_fragments(fake):
    arguments = {"city": "Paris", "note": "a longer argument string, in many pieces"}
    fake.script(tool_calls=[{"id": "toolu_a", "name": "get_weather", "arguments": arguments}],
                chunk_delay=0.01)
    deltas = items(fake, tools=[WEATHER])
    fragments = [f for d in deltas if isinstance(d, Chunk) for f in d.tool_calls or ()]
    assert len(fragments) > 2
    assert fragments[0] == {"index": 0, "id": "toolu_a", "name": "get_weather", "arguments": ""}
    assert all(set(f) == {"index", "arguments"} for f in fragments[1:])
    assert json.loads("".join(f["arguments"] for f in fragments)) == arguments


def test_streamed_tool_call_with_no_input_has_empty_object_arguments(fake):
    fake.script(tool_calls=[{"id": "toolu_t", "name": "get_time", "arguments": "", "fragments": []}])
    _, calls, finish = reassemble(items(fake, tools=[CLOCK]))
    assert calls == {0: {"id": "toolu_t", "name": "get_time", "arguments": "{}"}}
    assert finish == ["tool_calls"]


def test_fragments_arriving_together_are_one_chunk():
    events = [{"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " you"}},
              {"type": "content_block_stop", "index": 0},
              {"type": "content_block_start", "index": 1, "content_block": {
                  "type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}},
              *({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                                       "partial_json": p}}
                for p in ["", '{"city"', ': "Paris"', "}"]),
              {"type": "content_block_stop", "index": 1},
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
              {"type": "message_stop"}]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    state = anthropic_messages.StreamState()
    deltas = list(anthropic_messages.batched(sse_batches([body]), state.on_event))  # one read
    assert deltas == ["Hi you", Chunk(tool_calls=[{"index": 0, "id": "toolu_a", "name": "get_weather",
                                                   "arguments": '{"city": "Paris"}'}])]
    assert state.finished
    assert list(state.end(request(), "Hi you")) == [Chunk(finish_reason="tool_calls"), Usage(5, 4)]


def test_text_only_reply_to_a_request_with_tools_is_plain_str_deltas(fake):
    fake.script(chunks=["No ", "tools ", "needed."])
    deltas = items(fake, tools=[WEATHER])
    assert "".join(deltas[:-1]) == "No tools needed."
    assert all(isinstance(d, str) for d in deltas[:-1])


def test_error_event_in_a_stream_with_tools_comes_after_what_arrived(fake):
    fake.script(chunks=["a", "b", "c"], error_event={"type": "overloaded_error", "message": "busy"},
                error_event_after=2, chunk_delay=0.02)
    received = []
    with pytest.raises(errors.ProviderUnavailable):
        for delta in claude(fake).stream(request(tools=[WEATHER])):
            received.append(delta)
    assert received == ["a", "b"]


def test_stream_with_tools_cut_midway_is_unavailable(fake):
    fake.script(chunks=["a", "b", "c"], break_after=2)
    with pytest.raises(errors.ProviderUnavailable):
        collect(claude(fake).stream(request(tools=[WEATHER])))


@both
@pytest.mark.parametrize("stop_reason, finish", [
    ("end_turn", None), ("stop_sequence", None), ("max_tokens", "length"), ("refusal", "content_filter"),
    ("model_context_window_exceeded", "length")])
def test_stop_reason_becomes_finish_reason(fake, stream, stop_reason, finish):
    fake.script(text="Partial answer", finish_reason=stop_reason)
    deltas = items(fake, stream=stream)
    assert "".join(d for d in deltas if isinstance(d, str)) == "Partial answer"
    assert reassemble(deltas)[2] == ([finish] if finish else [])
    assert isinstance(deltas[-1], Usage)


def test_max_tokens_truncation_is_finish_reason_length(fake):
    fake.script(chunks=["a", "b", "c", "d"])
    deltas = items(fake, max_tokens=2)
    assert deltas[-2:] == [Chunk(finish_reason="length"), Usage(9, 2)]


@both
def test_cached_prompt_tokens_count_in_prompt_tokens(fake, stream):
    fake.script(text="Cached.", prompt_tokens=1000, cached_tokens=800, completion_tokens=2)
    usage = items(fake, stream=stream)[-1]
    assert usage == Usage(prompt_tokens=1000, completion_tokens=2, cached_tokens=800)


def test_cache_creation_tokens_count_in_prompt_tokens(fake):
    fake.script(raw=json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 200,
                  "output_tokens": 3, "output_tokens_details": {"thinking_tokens": 1}}}))
    assert items(fake, stream=False) == ["Hi", Usage(prompt_tokens=710, completion_tokens=3, cached_tokens=200,
                                                     reasoning_tokens=1)]


# -- refusals


@pytest.mark.parametrize("kw, field", [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"seed": 7}, "seed"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"passthrough": {"top_k": 5}}, "top_k"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                   "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages"),
])
def test_what_the_api_cannot_do_is_refused_naming_field_and_model(fake, kw, field):
    with pytest.raises(errors.BadRequest) as info:
        claude(fake).check(request(**kw))
    assert info.value.status == 400
    assert "anthropic/claude-test" in info.value.message
    assert field in info.value.fields and "anthropic/claude-test" in info.value.fields[field]
    if field not in ("messages",):
        assert field in info.value.message


def test_what_the_api_can_do_passes_the_check(fake):
    claude(fake).check(request(
        tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, response_format=PERSON,
        stop=["END"], top_p=0.9, temperature=0.2, max_tokens=50, user="u",
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}]}]))


# -- the fake refuses what the API refuses (so the tests above can fail)


@pytest.mark.parametrize("messages, tool_choice", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], None),
    ([{"role": "user", "content": [{"type": "text", "text": ""}]}], None),
    ([{"role": "user", "content": "a"},
      {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
      {"role": "user", "content": "no result"}], None),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nowhere", "content": "x"}]}], None),
    ([{"role": "user", "content": "a"}], {"type": "auto"}),
], ids=["same-role", "empty-text", "unanswered-tool-use", "orphan-tool-result", "tool-choice-without-tools"])
def test_fake_refuses_requests_the_api_refuses(fake, messages, tool_choice):
    client = anthropic.Anthropic(base_url=fake.url, api_key="k", max_retries=0, timeout=5)
    extra = {"tool_choice": tool_choice} if tool_choice else {}
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="c", max_tokens=10, messages=messages, **extra)

"""The OpenAI-compatible dialect through Flask's client: every field of chat completions reaches
the model (or is refused by it, naming the field and the model), replies render OpenAI's shapes
(choices, tool calls, logprobs, usage details; chunks streamed), legacy completions, embeddings
and models; bad input is a 400 naming its param, and a refused call saves nothing and costs no
tokens."""
import base64
import json
import math
import struct
from contextlib import contextmanager

import pytest

from app.providers import FEATURES, Chunk, EmbeddingModel, Embeddings, Usage
from app.providers.hookspecs import hookimpl
from app.providers.loading import get_plugin_manager
from app.storage.db import db
from app.storage.models import Conversation, Message
from app.storage.models import Usage as UsageRow

from .conftest import Api, create_key
from .scripted import scripted

CHAT = "/v1/chat/completions"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


def user(text):
    return [{"role": "user", "content": text}]


def chat(api, **body):
    body.setdefault("model", "echo/echo")
    return api.post(CHAT, json=body)


def chunks(resp):
    """The JSON of each ``data:`` line of a streamed reply, and whether it ended with [DONE]."""
    lines = [line[6:] for line in resp.get_data(as_text=True).split("\n") if line.startswith("data: ")]
    done = lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines if line != "[DONE]"], done


def last_usage_row(app):
    with app.app_context(), db.connection_context():
        return UsageRow.select().order_by(UsageRow.created_at.desc(), UsageRow.id.desc()).first()


def stored_counts(app):
    with app.app_context(), db.connection_context():
        return Message.select().count(), Conversation.select().count()


@contextmanager
def rich_model(app, script):
    """``scripted/test`` honouring every feature (pass-through fields too)."""
    with scripted(app, script) as model:
        model.supports = frozenset(FEATURES)
        yield model


# ---------------------------------------------------------------- chat: the request


def test_every_field_reaches_the_model(app, admin):
    """Roles are kept (developer is not made system), parts, tool calls and results, name; each
    option lands on its ChatRequest field; unknown fields are passed through, except the few
    that change nothing."""
    with rich_model(app, lambda r: iter(["ok"])) as model:
        resp = chat(admin, model="scripted/test", messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "sys"}]},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
            tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"},
                                                                    "strict": True}},
            seed=7, logprobs=True, top_logprobs=2, n=2, top_p=0.5, presence_penalty=0.1, frequency_penalty=-0.2,
            logit_bias={"50256": -100}, metadata={"team": "a"}, reasoning_effort="low",
            max_tokens=10, max_completion_tokens=20, stop="END", user="u-1", temperature=0.3,
            top_k=5, guided_json={"type": "object"}, store=True, service_tier="auto", prediction={"type": "content"},
            prompt_cache_key="k", modalities=["text"], vendor_flag=None)
    assert resp.status_code == 200, resp.get_json()
    request = model.requests[0]
    roles = [m["role"] for m in request.messages]
    assert roles == ["developer", "system", "user", "assistant", "tool"]
    assert request.messages[2]["name"] == "ann"
    assert request.messages[2]["content"][1] == {"type": "image_url", "image_url": {
        "url": "https://example.com/a.png", "detail": "low"}}
    assert request.messages[3] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert request.messages[4] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert request.tools == [TOOL] and request.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert request.parallel_tool_calls is False
    assert request.response_format["json_schema"]["strict"] is True
    assert (request.seed, request.logprobs, request.top_logprobs, request.n) == (7, True, 2, 2)
    assert (request.top_p, request.presence_penalty, request.frequency_penalty) == (0.5, 0.1, -0.2)
    assert request.logit_bias == {"50256": -100} and request.metadata == {"team": "a"}
    assert request.reasoning_effort == "low" and request.max_tokens == 20  # max_completion_tokens wins
    assert request.stop == ["END"] and request.user == "u-1" and request.temperature == 0.3
    assert request.passthrough == {"top_k": 5, "guided_json": {"type": "object"}}
    assert request.stream is False


def test_a_plain_request_stays_a_plain_turn(app, admin):
    """Defaults sent explicitly (n 1, logprobs false, nulls) and ignored fields add nothing."""
    with scripted(app, lambda r: iter(["ok"])) as model:  # supports only stop: anything more is a 400
        resp = chat(admin, model="scripted/test", messages=user("hi"), n=1, logprobs=False, top_logprobs=None,
                    tools=None, stop=None, seed=None, store=False, stream=False, stream_options=None)
    assert resp.status_code == 200, resp.get_json()
    assert model.requests[0].features() == set() and model.requests[0].passthrough == {}


def test_a_passthrough_field_the_model_cannot_take_is_a_400_naming_it_and_the_model(app, admin):
    before = stored_counts(app)
    resp = chat(admin, messages=user("hi"), top_k=40)
    error = resp.get_json()["error"]
    assert resp.status_code == 400 and error["param"] == "top_k"
    assert "top_k" in error["message"] and "echo/echo" in error["message"]
    assert error["code"] == "unsupported_parameter"
    row = last_usage_row(app)
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (400, 0, 0)
    assert stored_counts(app) == before


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [CALL]},
                   {"role": "tool", "tool_call_id": "call_other", "content": "x"}], "tools": [TOOL]},
     "messages.1.tool_call_id"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {**CALL, "function": {"name": "get_weather", "arguments": "{city: Oslo"}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
     "messages.1.tool_calls.0.function.arguments"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, {
        "type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]}]},
     "messages.0.content.1.image_url.url"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages.0.role"),
    ({"messages": "hello"}, "messages"),
    ({"messages": user("x"), "n": 9}, "n"),
    ({"messages": user("x"), "top_logprobs": 2}, "top_logprobs"),
    ({"messages": user("x"), "tool_choice": "required"}, "tool_choice"),
    ({"messages": user("x"), "tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools.0.function.name"),
    ({"messages": user("x"), "response_format": {"type": "xml"}}, "response_format.type"),
    ({"messages": user("x"), "reasoning_effort": "max"}, "reasoning_effort"),
    ({"messages": user("x"), "seed": "seven"}, "seed"),
    ({"messages": user("x"), "logit_bias": {"1": 500}}, "logit_bias"),
    ({"messages": user("x"), "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": user("x"), "functions": [{"name": "f"}]}, "functions"),
    ({"messages": user("x"), "modalities": ["text", "audio"]}, "modalities"),
])
def test_bad_chat_input_is_a_400_naming_the_param_and_saves_nothing(app, admin, body, param):
    before = stored_counts(app)
    resp = chat(admin, **body)
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    row = last_usage_row(app)
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (400, 0, 0)
    assert stored_counts(app) == before


def test_too_many_tools_is_a_400(configured):
    app, api = configured(MAX_TOOLS=2)
    tools = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(3)]
    resp = chat(api, messages=user("x"), tools=tools)
    assert resp.status_code == 400 and resp.get_json()["error"]["param"] == "tools"
    assert "at most 2 tools" in resp.get_json()["error"]["message"]
    assert chat(api, messages=user("x"), tools=tools[:2]).status_code == 200


def test_v1_is_stateless(app, admin):
    before = stored_counts(app)
    assert chat(admin, messages=user("hi"), n=2, logprobs=True).status_code == 200
    assert chat(admin, messages=user("hi"), stream=True).status_code == 200
    assert stored_counts(app) == before
    row = last_usage_row(app)
    assert row.status == 200 and row.completion_tokens > 0 and row.model == "echo/echo"


# ---------------------------------------------------------------- chat: the reply


def _rich_script(request):
    """Choice 0: text with logprobs; choice 1: text then a tool call in fragments (no finish
    reason: the engine says tool_calls); cached and reasoning tokens."""
    lp = [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}]
    yield Chunk("Hi", 0, logprobs=lp)
    yield Chunk(" there", 0, logprobs=[{**lp[0], "token": " there"}])
    yield Chunk("Let me look.", 1)
    yield Chunk(index=1, tool_calls=[{"index": 0, "id": "call_a", "name": "get_weather", "arguments": ""}])
    yield Chunk(index=1, tool_calls=[{"index": 0, "arguments": '{"city":'}])
    yield Chunk(index=1, tool_calls=[{"index": 0, "arguments": '"Oslo"}'}])
    yield Chunk(index=1, tool_calls=[{"index": 1, "name": "get_weather", "arguments": "{}"}])  # no id given
    yield Chunk(index=0, finish_reason="stop")
    yield Usage(prompt_tokens=10, completion_tokens=6, cached_tokens=4, reasoning_tokens=2)


def test_non_streamed_choices_tool_calls_logprobs_and_usage_details(app, admin):
    with rich_model(app, _rich_script):
        resp = chat(admin, model="scripted/test", messages=user("hi"), n=2, logprobs=True, tools=[TOOL])
    body = resp.get_json()
    first, second = body["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hi there", "refusal": None}
    assert [e["token"] for e in first["logprobs"]["content"]] == ["Hi", " there"]
    assert first["finish_reason"] == "stop"
    assert second["index"] == 1 and second["message"]["content"] == "Let me look."
    calls = second["message"]["tool_calls"]
    assert calls[0] == {"id": "call_a", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    assert calls[1]["id"].startswith("call_") and calls[1]["function"] == {"name": "get_weather", "arguments": "{}"}
    assert second["finish_reason"] == "tool_calls" and second["logprobs"] is None
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16,
                             "prompt_tokens_details": {"cached_tokens": 4},
                             "completion_tokens_details": {"reasoning_tokens": 2}}


def test_content_is_null_when_the_answer_only_calls_tools(admin):
    resp = chat(admin, messages=user('[echo call=get_weather {"city": "Oslo"}]'), tools=[TOOL])
    choice = resp.get_json()["choices"][0]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert "prompt_tokens_details" not in resp.get_json()["usage"]  # no cached tokens: no details


def test_streamed_chunks_in_openais_shape(app, admin):
    with rich_model(app, _rich_script):
        resp = chat(admin, model="scripted/test", messages=user("hi"), n=2, logprobs=True, tools=[TOOL],
                    stream=True, stream_options={"include_usage": True})
    got, done = chunks(resp)
    assert done and len({c["id"] for c in got}) == 1 and all(c["object"] == "chat.completion.chunk" for c in got)
    assert [c["choices"][0]["delta"] for c in got[:2]] == [{"role": "assistant", "content": ""}] * 2
    assert [c["choices"][0]["index"] for c in got[:2]] == [0, 1]
    body = [c["choices"][0] for c in got[2:-1]]
    assert all(len(c["choices"]) == 1 for c in got[:-1])
    texts = {i: "".join(c["delta"].get("content", "") for c in body if c["index"] == i) for i in (0, 1)}
    assert texts == {0: "Hi there", 1: "Let me look."}
    assert [c["logprobs"]["content"][0]["token"] for c in body if c.get("logprobs")] == ["Hi", " there"]
    fragments = [f for c in body for f in c["delta"].get("tool_calls", ())]
    assert fragments[0] == {"index": 0, "id": "call_a", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}
    assert fragments[1:3] == [{"index": 0, "function": {"arguments": '{"city":'}},
                              {"index": 0, "function": {"arguments": '"Oslo"}'}}]
    assert fragments[3]["index"] == 1 and fragments[3]["id"].startswith("call_") and fragments[3]["type"] == "function"
    finishes = {c["index"]: c["finish_reason"] for c in body if c["finish_reason"]}
    assert finishes == {0: "stop", 1: "tool_calls"}
    assert all(c["delta"] == {} for c in body if c["finish_reason"])
    assert got[-1]["choices"] == [] and got[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}


def test_streamed_n_and_logprobs_from_echo(admin):
    resp = chat(admin, messages=user("one two"), n=3, logprobs=True, top_logprobs=2, stream=True)
    got, done = chunks(resp)
    texts = {}
    for c in got:
        for choice in c["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (choice["delta"].get("content") or "")
            if choice["delta"].get("content"):
                assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == 2
    assert done and texts == {0: "Echo: one two", 1: "Echo: one two", 2: "Echo: one two"}


def test_the_engines_stopped_renders_as_stop():
    from app.api.openai_format import chunk_stream, completion_body
    from app.services.events import Choice, Done, Start

    done = Done("0193-ab", "part", Usage(1, 1), "stopped", "incomplete", choices=[Choice(0, "part", None, None,
                                                                                          "stopped")])
    assert completion_body(done, "m", 0)["choices"][0]["finish_reason"] == "stop"
    frames = list(chunk_stream(iter([Start(None, None, "0193-ab", "m", 0), done]), "m"))
    assert '"finish_reason":"stop"' in frames[-1] and "stopped" not in frames[-1]


def test_image_parts_and_json_schema_through_echo(admin):
    resp = chat(admin, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"png!").decode()}}]}])
    assert resp.get_json()["choices"][0]["message"]["content"] == "Echo: what is it [image image/png, 4 bytes detail=auto]"
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number"}}}
    resp = chat(admin, messages=user("hi"), response_format={
        "type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}})
    assert json.loads(resp.get_json()["choices"][0]["message"]["content"]) == {"answer": "Echo: hi", "score": 0}


def test_tool_round_trip_through_echo(admin):
    first = chat(admin, messages=user('[echo call=get_weather {"city": "Oslo"}]'), tools=[TOOL]).get_json()
    call = first["choices"][0]["message"]["tool_calls"][0]
    history = [*user('[echo call=get_weather {"city": "Oslo"}]'), first["choices"][0]["message"],
               {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    second = chat(admin, messages=history, tools=[TOOL]).get_json()
    assert second["choices"][0]["message"]["content"] == "Echo: get_weather returned sunny"
    assert second["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------- legacy completions


def test_completion_text_echo_and_legacy_logprobs(admin):
    resp = admin.post("/v1/completions", json={"model": "echo/echo", "prompt": "Say", "echo": True, "logprobs": 2,
                                                "n": 2})
    body = resp.get_json()
    assert resp.status_code == 200 and body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert [c["text"] for c in body["choices"]] == ["SayEcho: Say"] * 2 and body["choices"][1]["index"] == 1
    lp = body["choices"][0]["logprobs"]
    assert lp["tokens"] == ["Echo:", " Say"] and lp["token_logprobs"] == [0.0, -0.01]
    assert lp["top_logprobs"] == [{"Echo:": 0.0, "<alt1>": -1.0}, {" Say": -0.01, "<alt1>": -1.01}]
    assert lp["text_offset"] == [3, 8]  # after the echoed prompt
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["total_tokens"] > 0
    plain = admin.post("/v1/completions", json={"model": "echo/echo", "prompt": ["hi"], "max_tokens": 1}).get_json()
    assert plain["choices"] == [{"text": "Echo:", "index": 0, "logprobs": None, "finish_reason": "length"}]


def test_completion_streamed(admin):
    resp = admin.post("/v1/completions", json={"model": "echo/echo", "prompt": "[echo tokens=3]", "stream": True,
                                                "echo": True, "stream_options": {"include_usage": True}})
    got, done = chunks(resp)
    assert done and all(c["object"] == "text_completion" for c in got)
    assert "".join(c["choices"][0]["text"] for c in got[:-1]) == "[echo tokens=3]t1 t2 t3"
    assert got[-2]["choices"][0]["finish_reason"] == "stop" and got[-1]["choices"] == []
    assert got[-1]["usage"]["completion_tokens"] == 3


def test_completion_with_a_bot(admin):
    bot = admin.post("/api/v1/bots", json={"name": "Legacy", "instructions": "Be old."}).get_json()
    resp = admin.post("/v1/completions", json={"model": f"bot/{bot['id']}", "prompt": "hello"})
    assert resp.status_code == 200 and resp.get_json()["choices"][0]["text"] == "Echo: hello"


@pytest.mark.parametrize("body, param", [
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": "  "}, "prompt"),
    ({"prompt": "x" * 32001}, "prompt"),
    ({"prompt": "x", "suffix": "after"}, "suffix"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "top_k": 3}, "top_k"),
    ({"prompt": "x", "n": 0}, "n"),
])
def test_bad_completion_input_is_a_400_naming_the_param(app, admin, body, param):
    resp = admin.post("/v1/completions", json={"model": "echo/echo", **body})
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["param"] == param, resp.get_json()
    if param in ("suffix", "best_of", "top_k"):
        assert "echo/echo" in resp.get_json()["error"]["message"]
    row = last_usage_row(app)
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (400, 0, 0)


# ---------------------------------------------------------------- embeddings


def embed(api, **body):
    body.setdefault("model", "echo/embed")
    return api.post("/v1/embeddings", json=body)


def test_embeddings_of_each_input_shape(admin):
    one = embed(admin, input="hello").get_json()
    assert one["object"] == "list" and one["model"] == "echo/embed"
    assert one["data"][0]["object"] == "embedding" and one["data"][0]["index"] == 0
    vector = one["data"][0]["embedding"]
    assert len(vector) == 64 and math.isclose(sum(v * v for v in vector), 1.0)
    many = embed(admin, input=["hello", "world", "hello"]).get_json()
    vectors = [d["embedding"] for d in many["data"]]
    assert [d["index"] for d in many["data"]] == [0, 1, 2]
    assert vectors[0] == vectors[2] == vector and vectors[1] != vector
    assert many["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    tokens = embed(admin, input=[1, 2, 3]).get_json()
    assert len(tokens["data"]) == 1 and tokens["usage"]["prompt_tokens"] == 3
    arrays = embed(admin, input=[[1, 2, 3], [4]]).get_json()
    assert arrays["data"][0]["embedding"] == tokens["data"][0]["embedding"] and len(arrays["data"]) == 2


def test_embedding_dimensions_and_base64(admin):
    full = embed(admin, input="hello").get_json()["data"][0]["embedding"]
    short = embed(admin, input="hello", dimensions=8).get_json()["data"][0]["embedding"]
    norm = math.sqrt(sum(v * v for v in full[:8]))
    assert len(short) == 8 and all(math.isclose(s, f / norm) for s, f in zip(short, full))
    encoded = embed(admin, input="hello", encoding_format="base64").get_json()["data"][0]["embedding"]
    raw = base64.b64decode(encoded)
    assert len(raw) == 64 * 4
    decoded = struct.unpack("<64f", raw)
    assert all(math.isclose(d, f, rel_tol=1e-6, abs_tol=1e-7) for d, f in zip(decoded, full))


def test_embeddings_are_metered(app, admin):
    assert embed(admin, input=["a" * 40, "b" * 40]).status_code == 200
    row = last_usage_row(app)
    assert (row.model, row.prompt_tokens, row.completion_tokens) == ("echo/embed", 20, 0)
    assert (row.dialect, row.category, row.status) == ("openai", "conversation", 200)
    assert row.endpoint == "POST /v1/embeddings"


@pytest.mark.parametrize("body, param", [
    ({"input": ""}, "input.0"),
    ({"input": []}, "input"),
    ({"input": ["a", ""]}, "input.1"),
    ({"input": ["a"] * 2049}, "input"),
    ({"input": "x" * 32001}, "input.0"),
    ({"input": ["a", [1, 2]]}, "input.1"),
    ({"input": [[1, -2]]}, "input.0"),
    ({"input": [{"text": "a"}]}, "input.0"),
    ({"input": None}, "input"),
    ({"input": "a", "dimensions": 65}, "dimensions"),
    ({"input": "a", "dimensions": 0}, "dimensions"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "a", "truncate": True}, "truncate"),
    ({"input": "a", "model": "echo/echo"}, "model"),
    ({"input": "a", "model": "nope"}, "model"),
])
def test_bad_embedding_input_is_a_400(app, admin, body, param):
    resp = embed(admin, **body)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["param"] == param, resp.get_json()
    row = last_usage_row(app)
    assert (row.status, row.prompt_tokens) == (400, 0)


class TinyEmbedder(EmbeddingModel):
    provider, model_id, dimensions = "scripted", "embed", 2

    def __init__(self, answer=None):
        self.answer = answer

    def embed(self, request):
        if self.answer is not None:
            return self.answer(request)
        return Embeddings([[1.0, 0.0] for _ in request.inputs], Usage(0))


@contextmanager
def embedder(app, model):
    class Plugin:
        @hookimpl
        def register_embedding_models(self, register):
            register(model)

    pm = get_plugin_manager()
    pm.register(Plugin(), name="scripted-embedder")
    app.extensions.pop("chatport_models", None)
    try:
        yield model
    finally:
        pm.unregister(name="scripted-embedder")
        app.extensions.pop("chatport_models", None)


def test_what_an_embedding_model_does_not_support_is_a_400_naming_it(app, admin):
    with embedder(app, TinyEmbedder()):
        for body, param in (({"dimensions": 1}, "dimensions"), ({"input": [[1, 2]]}, "input.0")):
            resp = embed(admin, model="scripted/embed", **{"input": "a", **body})
            error = resp.get_json()["error"]
            assert resp.status_code == 400 and error["param"] == param and "scripted/embed" in error["message"]
        resp = embed(admin, model="scripted/embed", input="abcdefgh")  # no usage reported: estimated
        assert resp.status_code == 200 and resp.get_json()["usage"]["prompt_tokens"] == 2


def test_a_failing_embedding_model_is_a_502(app, admin):
    def broken(request):
        raise RuntimeError("bug")

    with embedder(app, TinyEmbedder(broken)):
        resp = embed(admin, model="scripted/embed", input="a")
        assert resp.status_code == 502 and resp.get_json()["error"]["type"] == "api_error"
    with embedder(app, TinyEmbedder(lambda r: Embeddings([[1.0]], Usage(1)))):
        resp = embed(admin, model="scripted/embed", input=["a", "b"])
        assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "provider_unavailable"


def test_a_bot_scoped_key_may_not_embed(app, admin, client):
    bot = admin.post("/api/v1/bots", json={"name": "Scoped"}).get_json()
    scoped = Api(client, create_key(app, kind="client", bot_ids=[bot["id"]]))
    assert embed(scoped, input="a").status_code == 403


# ---------------------------------------------------------------- models


def test_models_list_has_kinds_and_embedding_models(admin):
    data = {m["id"]: m for m in admin.get("/v1/models").get_json()["data"]}
    assert data["echo/echo"] == {"id": "echo/echo", "object": "model", "created": 0, "owned_by": "echo",
                                 "kind": "chat"}
    assert data["echo/embed"]["kind"] == "embedding" and data["echo/embed"]["dimensions"] == 64


def test_model_retrieve(configured, client):
    app, admin = configured(MODEL_ALIASES={"fast": "echo/echo"})
    assert admin.get("/v1/models/echo/echo").get_json() == {"id": "echo/echo", "object": "model", "created": 0,
                                                            "owned_by": "echo", "kind": "chat"}
    assert admin.get("/v1/models/fast").get_json()["owned_by"] == "echo"
    assert admin.get("/v1/models/echo/embed").get_json()["kind"] == "embedding"
    bot = admin.post("/api/v1/bots", json={"name": "Pirate"}).get_json()
    got = admin.get(f"/v1/models/bot/{bot['id']}").get_json()
    assert got["id"] == f"bot/{bot['id']}" and got["name"] == "Pirate" and got["owned_by"] == "chatport"
    assert admin.get("/v1/models/bot/Pirate").get_json()["name"] == "Pirate"
    for missing in ("echo/nope", "nope", "bot/nobody"):
        resp = admin.get(f"/v1/models/{missing}")
        assert resp.status_code == 404, missing
        assert resp.get_json()["error"]["code"] == "model_not_found" and missing in resp.get_json()["error"]["message"]
    other = admin.post("/api/v1/bots", json={"name": "Other"}).get_json()
    scoped = Api(app.test_client(), create_key(app, kind="client", bot_ids=[bot["id"]]))
    assert scoped.get(f"/v1/models/bot/{bot['id']}").status_code == 200
    assert scoped.get(f"/v1/models/bot/{other['id']}").status_code == 404
    assert scoped.get("/v1/models/echo/echo").status_code == 404
    assert [m["id"] for m in scoped.get("/v1/models").get_json()["data"]] == [f"bot/{bot['id']}"]
    admin.patch(f"/api/v1/bots/{other['id']}", json={"enabled": False})
    assert admin.get(f"/v1/models/bot/{other['id']}").status_code == 404

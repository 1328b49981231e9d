"""The openai plugin through the real openai SDK against a fake upstream
speaking the Chat Completions wire format (tests/fakes/openai_server.py)."""
import json
import time

import pytest

from app import errors
from app.providers.llm import (
    ChatRequest,
    Chunk,
    ModelRegistry,
    Usage,
    collect,
    estimate_tokens,
)
from tests.fakes import FakeOpenAI

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def openai_model(fake, name="openai/gpt-test", **config):
    settings = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test",
                "OPENAI_MODELS": ["gpt-test"], "OPENAI_MAX_RETRIES": 0,
                "OPENAI_READ_TIMEOUT": 5, "OPENAI_CONNECT_TIMEOUT": 2, **config}
    return ModelRegistry(settings).get(name)


def request(**kw):
    return ChatRequest(messages=kw.pop("messages", MESSAGES), **kw)


def test_json_reply_passes_options(fake):
    fake.script(text="Short answer.", prompt_tokens=12, completion_tokens=3)
    model = openai_model(fake)
    text, usage = collect(model.stream(request(stream=False, temperature=0.2, max_tokens=50,
                                               stop=["END"], user="user-1")))
    assert text == "Short answer."
    assert usage == Usage(prompt_tokens=12, completion_tokens=3, estimated=False)
    body = fake.last.body
    assert fake.last.path == "/v1/chat/completions"
    assert not body.get("stream")
    assert body["model"] == "gpt-test"
    assert body["messages"] == MESSAGES
    assert (body["temperature"], body["max_tokens"], body["stop"], body["user"]) == \
        (0.2, 50, ["END"], "user-1")
    assert fake.last.headers["authorization"] == "Bearer sk-test"


def test_sdk_telemetry_headers_are_not_sent_and_streams_ask_for_identity(fake):
    model = openai_model(fake)
    collect(model.stream(request(stream=False)))
    sent = fake.last.headers
    assert sent["authorization"] == "Bearer sk-test" and sent["content-type"] == "application/json"
    assert sent["user-agent"].startswith("OpenAI/Python")
    assert not [h for h in sent if h.startswith("x-stainless-") and h not in
                ("x-stainless-retry-count", "x-stainless-read-timeout")], sent
    assert "gzip" in sent.get("accept-encoding", "")
    fake.script(chunks=["a", "b"])
    assert collect(model.stream(request()))[0] == "ab"
    assert fake.last.headers["accept-encoding"] == "identity"
    assert "x-stainless-os" not in fake.last.headers and "x-stainless-async" not in fake.last.headers


def test_request_options_come_from_templates_that_calls_do_not_change(fake):
    from plugins import openai_provider

    assert openai_provider.FinalRequestOptions is not None  # this SDK has it: the fast path runs
    model = openai_model(fake)
    fake.script(text="one")
    assert collect(model.stream(request(stream=False)))[0] == "one"
    fake.script(chunks=["t", "wo"])
    assert collect(model.stream(request()))[0] == "two"
    fake.script(text="three")
    assert collect(model.stream(request(stream=False)))[0] == "three"
    assert not fake.last.body.get("stream") and "accept-encoding" in fake.last.headers
    for template in openai_provider._OPTIONS.values():
        assert template.json_data is None and template.idempotency_key is None


def test_unset_options_are_not_sent(fake):
    collect(openai_model(fake).stream(request()))
    assert not {"temperature", "max_tokens", "stop", "user"} & set(fake.last.body)


def test_stream_yields_deltas_then_streamed_usage(fake):
    fake.script(chunks=["Hel", "lo", " world"], prompt_tokens=21, completion_tokens=3, chunk_delay=0.05)
    items = list(openai_model(fake).stream(request()))
    assert items == ["Hel", "lo", " world", Usage(21, 3, estimated=False)]
    assert fake.last.body["stream"] is True
    assert fake.last.body["stream_options"] == {"include_usage": True}


def test_events_sent_at_once_come_out_whole_and_in_order(fake):
    # joined as they were read (test_sse_batches_group_the_events_each_chunk_completes); how
    # many reads it takes is up to the network
    fake.script(chunks=["Hel", "lo", " world"], prompt_tokens=21, completion_tokens=3)
    items = list(openai_model(fake).stream(request()))
    assert "".join(items[:-1]) == "Hello world" and items[-1] == Usage(21, 3, estimated=False)


def test_stream_without_usage_is_estimated(fake):
    fake.script(text="one two three", usage=False)
    text, usage = collect(openai_model(fake).stream(request()))
    assert text == "one two three"
    assert usage.estimated is True
    assert usage.completion_tokens == estimate_tokens("one two three")
    assert usage.prompt_tokens == estimate_tokens("Be brief.") + estimate_tokens("Hi there")


def test_json_without_usage_is_estimated(fake):
    fake.script(text="abc", usage=False)
    _, usage = collect(openai_model(fake).stream(request(stream=False)))
    assert usage.estimated is True and usage.completion_tokens == 1


def test_stream_usage_can_be_disabled_for_servers_without_it(fake):
    model = openai_model(fake, "local/m", OPENAI_COMPATIBLE={
        "local": {"base_url": fake.base_url, "models": ["m"], "stream_usage": False,
                  "max_retries": 0}})
    _, usage = collect(model.stream(request()))
    assert "stream_options" not in fake.last.body
    assert usage.estimated is True


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("status, cls, http", [
    (401, errors.ProviderAuthError, 502),
    (403, errors.ProviderAuthError, 502),
    (429, errors.ProviderRateLimited, 429),
    (400, errors.ProviderBadRequest, 400),
    (404, errors.ProviderBadRequest, 400),
    (500, errors.ProviderUnavailable, 502),
    (503, errors.ProviderUnavailable, 502),
])
def test_upstream_errors_map_to_taxonomy(fake, stream, status, cls, http):
    fake.script(status=status, error_message="upstream says no", retry_after="7")
    with pytest.raises(cls) as info:
        collect(openai_model(fake).stream(request(stream=stream)))
    assert type(info.value) is cls
    assert info.value.status == http
    if status == 429:
        assert info.value.headers["Retry-After"] == "7"
        assert "upstream says no" in info.value.message
    if status in (401, 403):
        assert "sk-test" not in info.value.message


def test_wrong_key_is_auth_error(fake):
    fake.api_key = "sk-right"
    with pytest.raises(errors.ProviderAuthError):
        collect(openai_model(fake).stream(request()))


def test_429_is_passed_on_not_retried(fake):
    fake.script(status=429, retry_after="30")
    started = time.monotonic()
    with pytest.raises(errors.ProviderRateLimited) as info:
        collect(openai_model(fake, OPENAI_MAX_RETRIES=2).stream(request()))
    assert time.monotonic() - started < 2
    assert len(fake.requests) == 1
    assert info.value.headers == {"Retry-After": "30"}


def test_5xx_is_retried_before_the_stream_starts(fake):
    fake.script_once(status=500)
    items = list(openai_model(fake, OPENAI_MAX_RETRIES=1).stream(request()))
    assert "".join(i for i in items if isinstance(i, str)) == "Hello from the fake upstream."
    assert len(fake.requests) == 2


def test_stream_cut_midway_is_unavailable_after_partial_deltas(fake):
    fake.script(chunks=["a", "b", "c", "d"], break_after=2)
    received = []
    with pytest.raises(errors.ProviderUnavailable) as info:
        for item in openai_model(fake).stream(request()):
            received.append(item)
    assert "".join(received) == "ab"  # what came before the break (arriving together: one delta)
    assert info.value.status == 502


def test_never_answering_server_times_out_quickly(fake):
    fake.script(hang=float("inf"))
    started = time.monotonic()
    with pytest.raises(errors.ProviderTimeout) as info:
        collect(openai_model(fake, OPENAI_READ_TIMEOUT=0.3).stream(request()))
    assert time.monotonic() - started < 2
    assert info.value.status == 504


def test_stream_that_stalls_times_out_after_partial_deltas(fake):
    fake.script(chunks=["a", "b", "c"], hang=float("inf"), hang_after=1)
    received = []
    with pytest.raises(errors.ProviderTimeout):
        for item in openai_model(fake, OPENAI_READ_TIMEOUT=0.3).stream(request()):
            received.append(item)
    assert received == ["a"]


def test_connection_refused_is_unavailable(fake):
    url = fake.base_url
    fake.stop()
    settings = {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "k", "OPENAI_MODELS": ["m"],
                "OPENAI_MAX_RETRIES": 0}
    with pytest.raises(errors.ProviderUnavailable):
        collect(ModelRegistry(settings).get("openai/m").stream(request()))


def test_closing_the_generator_closes_the_upstream_connection(fake):
    fake.script(chunks=[f" t{i}" for i in range(300)], chunk_delay=0.01)
    deltas = openai_model(fake).stream(request())
    assert next(deltas) == " t0"
    assert next(deltas) == " t1"
    deltas.close()  # what a vanished client causes (GeneratorExit)
    assert fake.last.client_gone.wait(3), "upstream kept streaming to a closed client"
    assert not fake.last.finished.is_set()


def test_one_lazy_client_per_process(fake):
    model = openai_model(fake)
    assert not model.client.created  # registering creates no client
    collect(model.stream(request()))
    first = model.client.get()
    collect(model.stream(request()))
    assert model.client.get() is first
    timeout = first.timeout
    assert (timeout.read, timeout.connect, first.max_retries) == (5.0, 2.0, 0)


def test_default_timeouts_are_explicit_not_the_sdk_defaults(fake):
    model = ModelRegistry({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "k",
                           "OPENAI_MODELS": "a,b"}).get("openai/b")
    client = model.client.get()
    assert client.timeout.read == 60 and client.timeout.connect == 5 and client.max_retries == 1


def test_compatible_server_models_are_registered_under_their_name(fake):
    model = openai_model(fake, "ollama/llama3", OPENAI_COMPATIBLE={
        "ollama": {"base_url": fake.base_url, "models": ["llama3"], "max_retries": 0}})
    assert model.name == "ollama/llama3"
    text, _ = collect(model.stream(request()))
    assert text == "Hello from the fake upstream."
    assert fake.last.body["model"] == "llama3"
    assert fake.last.headers["authorization"] == "Bearer not-needed"


def test_no_key_is_an_auth_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    model = ModelRegistry({"OPENAI_MODELS": ["gpt-x"]}).get("openai/gpt-x")
    with pytest.raises(errors.ProviderAuthError):
        collect(model.stream(request()))


def test_key_and_url_from_usual_environment_variables(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    registry = ModelRegistry({"OPENAI_MAX_RETRIES": 0})
    assert "openai/gpt-4o-mini" in registry.models  # defaults registered when a key is set
    collect(registry.get("openai/gpt-4o-mini").stream(request()))
    assert fake.last.headers["authorization"] == "Bearer sk-env"


def test_no_models_without_configuration(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert not [n for n, p in ModelRegistry({}).plugins.items() if p == "openai"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("raw", ["{not json", '{"unexpected": 1}', "[]"])
def test_malformed_reply_is_unavailable(fake, stream, raw):
    fake.script(raw=raw)
    with pytest.raises(errors.ProviderUnavailable):
        collect(openai_model(fake).stream(request(stream=stream)))


def test_error_inside_a_stream_is_unavailable_after_partial_deltas(fake):
    fake.script(chunks=["a", "b", "c"], error_event={"type": "server_error", "message": "boom"},
                error_event_after=2)
    received = []
    with pytest.raises(errors.ProviderUnavailable) as info:
        for item in openai_model(fake).stream(request()):
            received.append(item)
    assert "".join(received) == "ab"  # what came before the error event is passed on
    assert "boom" in info.value.message


@pytest.mark.parametrize("kind", ["fast", "httpx"])
def test_both_http_clients_carry_replies_streams_retries_and_errors(fake, kind):
    model = openai_model(fake, PROVIDER_HTTP_CLIENT=kind, OPENAI_MAX_RETRIES=1)
    fake.script(text="Short answer.", prompt_tokens=12, completion_tokens=3)
    assert collect(model.stream(request(stream=False)))[0] == "Short answer."
    fake.script(chunks=["a", "b", "c"])
    assert collect(model.stream(request()))[0] == "abc"
    fake.script_once(status=500)
    assert collect(model.stream(request()))[0] == "abc"  # retried before the stream started
    fake.script(status=429, retry_after="7")
    with pytest.raises(errors.ProviderRateLimited) as info:
        collect(model.stream(request()))
    assert info.value.headers == {"Retry-After": "7"}
    fake.script(chunks=["a", "b", "c"], hang=float("inf"), hang_after=1)
    with pytest.raises(errors.ProviderTimeout):  # the stream's idle gap
        collect(openai_model(fake, PROVIDER_HTTP_CLIENT=kind, PROVIDER_STREAM_IDLE=0.5).stream(request()))


def test_an_unknown_http_client_setting_is_a_clear_provider_error(fake):
    with pytest.raises(errors.ProviderUnavailable, match="PROVIDER_HTTP_CLIENT"):
        collect(openai_model(fake, PROVIDER_HTTP_CLIENT="curl").stream(request()))


def test_a_non_streamed_call_and_its_retries_share_one_deadline(fake):
    fake.script(hang=float("inf"))
    model = openai_model(fake, OPENAI_MAX_RETRIES=1, OPENAI_READ_TIMEOUT=30, PROVIDER_DEADLINE=2)
    started = time.monotonic()
    with pytest.raises(errors.ProviderTimeout):
        collect(model.stream(request(stream=False)))
    # one deadline (2 s) and the SDK's back-off (at most 1 s) before its retry fails at once;
    # a deadline per attempt would take 4 s and more
    assert 2 <= time.monotonic() - started < 3.6
    assert len(fake.requests) == 1  # the retry was refused before it was sent


# ---------------------------------------------------------------- the generalised request

def official_model(fake):
    """``openai/gpt-test`` as if it were OpenAI's own API (the fake, at a base URL of its own,
    is registered as an OpenAI-compatible server)."""
    from plugins.openai_provider import OpenAIChatModel

    return OpenAIChatModel("openai", "gpt-test", openai_model(fake).client, official=True)


def compatible_model(fake, model_id="m", **server):
    """``local/<model_id>`` on an OPENAI_COMPATIBLE server (the fake)."""
    return openai_model(fake, f"local/{model_id}", OPENAI_COMPATIBLE={
        "local": {"base_url": fake.base_url, "models": [model_id], "max_retries": 0, **server}})


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather",
                                             "parameters": {"type": "object", "properties": {
                                                 "city": {"type": "string"}}}}}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_plain_request_sends_no_more_than_before(fake, stream):
    collect(openai_model(fake).stream(request(stream=stream)))
    expected = {"model", "messages"} | ({"stream", "stream_options"} if stream else set())
    assert set(fake.last.body) == expected
    assert fake.last.body["messages"] == MESSAGES


def test_every_request_field_reaches_the_wire(fake):
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"a": {"type": "string"}}}}}
    fields = dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                  parallel_tool_calls=False, response_format=schema, seed=7, logprobs=True, top_logprobs=3,
                  n=2, top_p=0.9, presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={"50256": -100},
                  metadata={"ticket": "42"}, reasoning_effort="low", user="u-1", stop=["END"],
                  temperature=0.3, max_tokens=40)
    collect(official_model(fake).stream(request(stream=False, **fields)))
    body = fake.last.body
    expected = {**fields, "logprobs": True}
    assert {name: body.get(name) for name in expected} == expected
    assert set(body) == set(expected) | {"model", "messages"}


def test_falsy_values_that_mean_something_are_sent(fake):
    collect(openai_model(fake).stream(request(stream=False, seed=0, temperature=0, presence_penalty=0.0,
                                              parallel_tool_calls=False, tool_choice="none")))
    body = fake.last.body
    assert (body["seed"], body["temperature"], body["presence_penalty"], body["parallel_tool_calls"],
            body["tool_choice"]) == (0, 0, 0.0, False, "none")


def test_defaults_and_empty_values_are_not_sent(fake):
    collect(openai_model(fake).stream(request(stream=False, response_format={"type": "text"}, n=1,
                                              logprobs=False, tools=[], logit_bias={}, metadata={})))
    assert set(fake.last.body) == {"model", "messages"}


def test_metadata_goes_to_openais_own_api_only(fake):
    for model in (compatible_model(fake), openai_model(fake)):
        collect(model.stream(request(stream=False, metadata={"k": "v"}, seed=3)))
        assert "metadata" not in fake.last.body and fake.last.body["seed"] == 3
    collect(official_model(fake).stream(request(stream=False, metadata={"k": "v"})))
    assert fake.last.body["metadata"] == {"k": "v"}


DEVELOPER = [{"role": "developer", "content": "Answer in French."},
             {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                                              "detail": "low"}}]}]


def test_developer_messages_stay_for_openai_and_become_system_elsewhere(fake):
    messages = [dict(m) for m in DEVELOPER]
    collect(official_model(fake).stream(request(messages=messages)))
    assert fake.last.body["messages"] == DEVELOPER
    # OPENAI_BASE_URL elsewhere (vLLM, Ollama: the README's way) and OPENAI_COMPATIBLE servers
    for model in (openai_model(fake), compatible_model(fake)):
        collect(model.stream(request(messages=messages)))
        assert fake.last.body["messages"] == [{"role": "system", "content": "Answer in French."},
                                              DEVELOPER[1]]
    assert messages == DEVELOPER  # the request's own messages are not changed


@pytest.mark.parametrize("base_url, official", [
    (None, True), ("https://api.openai.com/v1", True), ("https://api.openai.com.example.net/v1", False),
    ("http://127.0.0.1:11434/v1", False)])
def test_only_openais_own_api_counts_as_official(monkeypatch, base_url, official):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    config = {"OPENAI_API_KEY": "k", "OPENAI_MODELS": ["m"], "OPENAI_EMBEDDING_MODELS": ["e"],
              "OPENAI_COMPATIBLE": {"local": {"base_url": "https://api.openai.com/v1", "models": ["m"]}}}
    if base_url:
        config["OPENAI_BASE_URL"] = base_url
    registry = ModelRegistry(config)
    assert registry.models["openai/m"].official is official
    assert registry.embedding_models["openai/e"].encoding == ("base64" if official else "float")
    assert registry.models["local/m"].official is False  # another provider name: never


def test_images_and_tool_history_are_sent_as_they_are(fake):
    history = [
        {"role": "user", "content": [{"type": "text", "text": "What is this, and the weather there?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                                         "detail": "high"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                              "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]
    collect(compatible_model(fake).stream(request(messages=history, tools=[WEATHER])))
    assert fake.last.body["messages"] == history
    assert fake.images() == [{"url": "https://example.com/a.png", "detail": "high"}]


@pytest.mark.parametrize("model_id, name", [
    ("o1", "max_completion_tokens"), ("o3-mini", "max_completion_tokens"), ("o4-mini", "max_completion_tokens"),
    ("gpt-5", "max_completion_tokens"), ("gpt-5-mini", "max_completion_tokens"),
    ("gpt-4o", "max_tokens"), ("gpt-4.1-mini", "max_tokens"), ("llama3", "max_tokens"),
])
def test_reasoning_models_get_max_completion_tokens(fake, model_id, name):
    model = openai_model(fake, f"openai/{model_id}", OPENAI_MODELS=[model_id])
    collect(model.stream(request(stream=False, max_tokens=64, temperature=1)))
    other = {"max_tokens", "max_completion_tokens"} - {name}
    assert fake.last.body[name] == 64 and not other & set(fake.last.body)
    assert fake.last.body["temperature"] == 1  # what the client asked, as it asked


def test_passthrough_fields_are_merged_but_cannot_replace_chatports_own(fake):
    passthrough = {"guided_json": {"type": "object"}, "top_k": 20, "repetition_penalty": 1.1,
                   "model": "other-model", "messages": [], "stream": False,
                   "stream_options": {"include_usage": False}, "temperature": 2}
    collect(compatible_model(fake).stream(request(temperature=0.5, passthrough=passthrough)))
    body = fake.last.body
    assert (body["guided_json"], body["top_k"], body["repetition_penalty"]) == ({"type": "object"}, 20, 1.1)
    assert (body["model"], body["messages"], body["stream"], body["stream_options"], body["temperature"]) == \
        ("m", MESSAGES, True, {"include_usage": True}, 0.5)


def test_every_feature_is_supported():
    from app.providers import FEATURES
    from plugins.openai_provider import OpenAIChatModel

    model = OpenAIChatModel("local", "m", client=None)
    assert model.supports == frozenset(FEATURES)
    model.check(request(tools=[WEATHER], n=3, logprobs=True, passthrough={"top_k": 5}, messages=DEVELOPER))


# ---------------------------------------------------------------- the generalised reply

def by_kind(items):
    """(choice-0 text from str deltas, the Chunks, the Usage) of a delta list."""
    texts = "".join(i for i in items if isinstance(i, str))
    chunks = [i for i in items if isinstance(i, Chunk)]
    usage = [i for i in items if isinstance(i, Usage)]
    assert len(usage) == 1 and items[-1] is usage[0]
    return texts, chunks, usage[0]


def calls_of(chunks):
    """The tool calls the fragments of ``chunks`` (of choice 0) make: {index: {id, name, arguments}}."""
    calls = {}
    for chunk in chunks:
        for fragment in chunk.tool_calls or ():
            call = calls.setdefault(fragment["index"], {"id": None, "name": None, "arguments": ""})
            if fragment["id"]:
                assert call["id"] is None, "the id comes once, with the first fragment"
                call["id"], call["name"] = fragment["id"], fragment["name"]
            call["arguments"] += fragment["arguments"]
    return calls


TOOL_CALLS = [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_a"},
              {"name": "get_time", "arguments": '{"zone": "Europe/Paris"}', "id": "call_b"}]
EXPECTED_CALLS = {0: {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                  1: {"id": "call_b", "name": "get_time", "arguments": '{"zone": "Europe/Paris"}'}}


def test_tool_calls_in_a_json_reply(fake):
    fake.script(tool_calls=TOOL_CALLS, prompt_tokens=30, completion_tokens=12)
    items = list(openai_model(fake).stream(request(stream=False, tools=[WEATHER])))
    assert items == [Chunk("", 0, [{"index": i, **call} for i, call in EXPECTED_CALLS.items()], None,
                           "tool_calls"),
                     Usage(30, 12)]


def test_streamed_tool_call_fragments_reassemble(fake):
    fake.script(tool_calls=TOOL_CALLS, chunks=["Let me", " check."], argument_piece=3)
    items = list(openai_model(fake).stream(request(tools=[WEATHER])))
    text, chunks, usage = by_kind(items)
    assert text == "Let me check."
    assert calls_of(chunks) == EXPECTED_CALLS
    assert sum(len(c.tool_calls or ()) for c in chunks) > 4  # the arguments came in pieces
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]
    assert chunks[-1].finish_reason == "tool_calls" and all(c.index == 0 for c in chunks)
    assert items.index(chunks[0]) > max(i for i, d in enumerate(items) if isinstance(d, str))  # text first
    assert not usage.estimated


def test_n_choices_in_a_json_reply(fake):
    fake.script(choices=["first answer", "second answer", "third answer"])
    items = list(openai_model(fake).stream(request(stream=False, n=3)))
    assert fake.last.body["n"] == 3
    assert items[:-1] == ["first answer", Chunk("second answer", 1, finish_reason="stop"),
                          Chunk("third answer", 2, finish_reason="stop")]
    assert collect(items)[0] == "first answer"


def test_n_choices_streamed(fake):
    fake.script(choices=["first answer here", "second answer"], chunk_delay=0.01)
    text, chunks, _ = by_kind(list(openai_model(fake).stream(request(n=2))))
    assert text == "first answer here"
    assert {c.index for c in chunks} == {1}
    assert "".join(c.text for c in chunks) == "second answer"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


def test_logprobs_in_a_json_reply(fake):
    fake.script(chunks=["Hel", "lo"])
    items = list(openai_model(fake).stream(request(stream=False, logprobs=True, top_logprobs=2)))
    (chunk,) = items[:-1]
    assert (chunk.text, chunk.index, chunk.finish_reason) == ("Hello", 0, "stop")
    assert [e["token"] for e in chunk.logprobs] == ["Hel", "lo"]
    assert [e["logprob"] for e in chunk.logprobs] == [FakeOpenAI.logprob(0), FakeOpenAI.logprob(1)]
    assert chunk.logprobs[1]["top_logprobs"] == [
        {"token": "lo", "logprob": FakeOpenAI.logprob(1), "bytes": list(b"lo")},
        {"token": "alt1", "logprob": FakeOpenAI.logprob(1, 1), "bytes": list(b"alt1")}]


def test_logprobs_streamed_come_with_their_text(fake):
    fake.script(chunks=["Hel", "lo", " world"])
    text, chunks, _ = by_kind(list(openai_model(fake).stream(request(logprobs=True, top_logprobs=1))))
    assert text == ""  # every piece of text has its logprobs: all of it comes in Chunks
    assert "".join(c.text for c in chunks) == "Hello world"
    entries = [e for c in chunks for e in c.logprobs or ()]
    assert [e["token"] for e in entries] == ["Hel", "lo", " world"]
    assert all(c.text == "".join(e["token"] for e in c.logprobs) for c in chunks if c.text)
    assert [e["logprob"] for e in entries] == [FakeOpenAI.logprob(i) for i in range(3)]
    assert all(len(e["top_logprobs"]) == 1 for e in entries)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_cached_and_reasoning_tokens_reach_the_usage(fake, stream):
    fake.script(text="Done.", prompt_tokens=1200, completion_tokens=300, cached_tokens=1024,
                reasoning_tokens=256)
    _, usage = collect(openai_model(fake).stream(request(stream=stream)))
    assert usage == Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=1024, reasoning_tokens=256)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_finish_reason_other_than_stop_is_passed_on(fake, stream):
    fake.script(chunks=["a", "b", "c"])
    items = list(openai_model(fake).stream(request(stream=stream, max_tokens=2)))
    text, chunks, _ = by_kind(items)
    assert "".join([text] + [c.text for c in chunks]) == "ab"
    assert [c.finish_reason for c in chunks] == ["length"]
    fake.script(text="x", finish_reason="content_filter")
    _, chunks, _ = by_kind(list(openai_model(fake).stream(request(stream=stream))))
    assert [c.finish_reason for c in chunks] == ["content_filter"]


def test_a_plain_stream_is_only_text_and_usage(fake):
    fake.script(chunks=["a", "b", "c"], chunk_delay=0.01)
    items = list(openai_model(fake).stream(request()))
    assert all(isinstance(i, str) for i in items[:-1]) and "".join(items[:-1]) == "abc"


def test_a_tool_call_stream_cut_midway_is_unavailable(fake):
    # no finish reason came: the reply did not end
    fake.script(raw=json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                               "function": {"name": "f", "arguments": "{"}}]},
         "finish_reason": None}]}))
    received = []
    with pytest.raises(errors.ProviderUnavailable, match="ended before"):
        for item in openai_model(fake).stream(request(tools=[WEATHER])):
            received.append(item)
    assert received == [Chunk(tool_calls=[{"index": 0, "id": "c", "name": "f", "arguments": "{"}])]


def chunk_line(choice):
    return json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [choice]})


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("message", [
    {"content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]},
    {"content": 5},
    {"content": {"text": "x"}},
])
def test_misshapen_content_or_tool_calls_are_unavailable(fake, stream, message):
    if stream:
        fake.script(raw=chunk_line({"index": 0, "delta": message, "finish_reason": "stop"}))
    else:
        fake.script(raw=json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}))
    with pytest.raises(errors.ProviderUnavailable):
        collect(openai_model(fake).stream(request(stream=stream)))


def test_empty_logprobs_sent_unasked_keep_the_plain_text_path(fake):
    fake.script(raw=chunk_line({"index": 0, "delta": {"content": "hi"}, "logprobs": {"content": None},
                                "finish_reason": "stop"}))
    assert list(openai_model(fake).stream(request()))[0] == "hi"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_tool_call_reply_without_usage_is_estimated_from_its_text_and_arguments(fake, stream):
    fake.script(tool_calls=[{"name": "f", "arguments": '{"query": "a long enough query"}'}],
                chunks=["Searching."], usage=False)
    _, usage = collect(openai_model(fake).stream(request(stream=stream, tools=[WEATHER])))
    assert usage.estimated
    assert usage.completion_tokens == estimate_tokens('Searching.{"query": "a long enough query"}')


def test_usage_with_completion_tokens_only_is_taken_as_reported(fake):
    fake.script(raw=json.dumps({"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}],
                                "usage": {"completion_tokens": 4}}))
    assert collect(openai_model(fake).stream(request(stream=False)))[1] == Usage(0, 4)

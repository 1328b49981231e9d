"""The anthropic plugin through the real anthropic SDK against a fake
upstream speaking the Messages wire format (tests/fakes/anthropic_server.py)."""
import time

import pytest

from app import errors
from app.providers.llm import ChatRequest, ModelRegistry, Usage, collect, estimate_tokens
from tests.fakes import FakeAnthropic

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


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


def test_json_reply_passes_system_and_options(fake):
    fake.script(text="Short answer.", prompt_tokens=12, completion_tokens=3)
    text, usage = collect(claude(fake).stream(request(stream=False, temperature=0.3, max_tokens=40,
                                                      stop=["END"], user="user-1")))
    assert text == "Short answer."
    assert usage == Usage(12, 3, estimated=False)
    body = fake.last.body
    assert fake.last.path == "/v1/messages"
    assert not body.get("stream")
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Hi there"}]
    assert (body["temperature"], body["max_tokens"], body["stop_sequences"]) == (0.3, 40, ["END"])
    assert body["metadata"] == {"user_id": "user-1"}
    assert fake.last.headers["x-api-key"] == "sk-ant-test"
    assert "anthropic-version" in fake.last.headers


def test_default_max_tokens_is_sent(fake):
    collect(claude(fake, ANTHROPIC_MAX_TOKENS=77).stream(request(messages=MESSAGES[1:])))
    assert fake.last.body["max_tokens"] == 77
    assert "system" not in fake.last.body and "temperature" not in fake.last.body


def test_stream_yields_deltas_then_usage_from_message_start_and_delta(fake):
    fake.script(chunks=["Hel", "lo", " world"], prompt_tokens=21, completion_tokens=3, chunk_delay=0.05)
    items = list(claude(fake).stream(request()))
    assert items == ["Hel", "lo", " world", Usage(21, 3, estimated=False)]
    assert fake.last.body["stream"] is True


def test_stream_without_usage_is_estimated(fake):
    fake.script(text="one two three", usage=False)
    text, usage = collect(claude(fake).stream(request()))
    assert usage.estimated is True
    assert usage.completion_tokens == estimate_tokens(text)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("status, cls, http", [
    (401, errors.ProviderAuthError, 502),
    (403, errors.ProviderAuthError, 502),
    (429, errors.ProviderRateLimited, 429),
    (400, errors.ProviderBadRequest, 400),
    (500, errors.ProviderUnavailable, 502),
    (529, errors.ProviderUnavailable, 502),
])
def test_upstream_errors_map_to_taxonomy(fake, stream, status, cls, http):
    fake.script(status=status, error_message="upstream says no", retry_after="11")
    with pytest.raises(cls) as info:
        collect(claude(fake).stream(request(stream=stream)))
    assert type(info.value) is cls
    assert info.value.status == http
    if status == 429:
        assert info.value.headers["Retry-After"] == "11"
        assert "upstream says no" in info.value.message


def test_429_is_passed_on_not_retried(fake):
    fake.script(status=429, retry_after="30")
    started = time.monotonic()
    with pytest.raises(errors.ProviderRateLimited):
        collect(claude(fake, ANTHROPIC_MAX_RETRIES=2).stream(request()))
    assert time.monotonic() - started < 2
    assert len(fake.requests) == 1


@pytest.mark.parametrize("event_type, cls", [
    ("overloaded_error", errors.ProviderUnavailable),
    ("api_error", errors.ProviderUnavailable),
    ("rate_limit_error", errors.ProviderRateLimited),
])
def test_error_event_after_http_200_is_a_provider_error(fake, event_type, cls):
    fake.script(chunks=["a", "b", "c"], error_event={"type": event_type, "message": "busy"},
                error_event_after=2)
    received = []
    with pytest.raises(cls) as info:
        for item in claude(fake).stream(request()):
            received.append(item)
    assert "".join(received) == "ab"  # what came before the error event is passed on
    assert type(info.value) is cls


def test_stream_cut_midway_is_unavailable_after_partial_deltas(fake):
    fake.script(chunks=["a", "b", "c", "d"], break_after=2)
    received = []
    with pytest.raises(errors.ProviderUnavailable):
        for item in claude(fake).stream(request()):
            received.append(item)
    assert "".join(received) == "ab"  # what came before the break (arriving together: one delta)


def test_never_answering_server_times_out_quickly(fake):
    fake.script(hang=float("inf"))
    started = time.monotonic()
    with pytest.raises(errors.ProviderTimeout) as info:
        collect(claude(fake, ANTHROPIC_READ_TIMEOUT=0.3).stream(request()))
    assert time.monotonic() - started < 2
    assert info.value.status == 504


def test_stream_that_stalls_times_out(fake):
    fake.script(chunks=["a", "b"], hang=float("inf"), hang_after=1)
    with pytest.raises(errors.ProviderTimeout):
        collect(claude(fake, ANTHROPIC_READ_TIMEOUT=0.3).stream(request()))


def test_closing_the_generator_closes_the_upstream_connection(fake):
    fake.script(chunks=[f" t{i}" for i in range(300)], chunk_delay=0.01)
    deltas = claude(fake).stream(request())
    assert next(deltas) == " t0"
    deltas.close()
    assert fake.last.client_gone.wait(3), "upstream kept streaming to a closed client"
    assert not fake.last.finished.is_set()


def test_one_lazy_client_per_process_with_explicit_timeouts(fake):
    model = claude(fake)
    assert not model.client.created
    collect(model.stream(request()))
    client = model.client.get()
    collect(model.stream(request()))
    assert model.client.get() is client
    assert (client.timeout.read, client.timeout.connect, client.max_retries) == (5.0, 2.0, 0)


def test_no_key_is_an_auth_error(fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    model = ModelRegistry({"ANTHROPIC_MODELS": ["c"], "ANTHROPIC_BASE_URL": fake.url}).get(
        "anthropic/c")
    with pytest.raises(errors.ProviderAuthError):
        collect(model.stream(request()))
    assert fake.requests == []


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("raw", ["{not json", '{"unexpected": 1}', "[]"])
def test_malformed_reply_is_unavailable(fake, stream, raw):
    fake.script(raw=raw)
    with pytest.raises(errors.ProviderUnavailable):
        collect(claude(fake).stream(request(stream=stream)))


@pytest.mark.parametrize("kind", ["fast", "httpx"])
def test_both_http_clients_carry_replies_and_streams(fake, kind):
    fake.script(text="Short answer.", prompt_tokens=12, completion_tokens=3)
    assert collect(claude(fake, PROVIDER_HTTP_CLIENT=kind).stream(request(stream=False)))[0] == "Short answer."
    fake.script(chunks=["Hel", "lo"])
    assert collect(claude(fake, PROVIDER_HTTP_CLIENT=kind).stream(request()))[0] == "Hello"

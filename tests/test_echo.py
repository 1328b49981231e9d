"""The echo provider's directives: honoured only when ECHO_DIRECTIVES is on, and bounded
in tokens, in delay per token and in total time whatever they ask."""
import time

import pytest


@pytest.fixture
def echo_api(configured):
    """``make(**config)`` -> an admin ``Api`` on an app with that configuration."""
    return lambda **config: configured(**config)[1]


def _complete(api, content, **kw):
    resp = api.post("/v1/chat/completions", json={
        "model": "echo/echo", "messages": [{"role": "user", "content": content}], **kw})
    assert resp.status_code == 200, resp.get_data()
    body = resp.get_json()
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"]


def test_directive_is_plain_text_when_directives_are_off(echo_api):
    api = echo_api(ECHO_DIRECTIVES=False)
    text, tokens = _complete(api, "[echo tokens=50 delay=2]")
    assert text == "Echo: [echo tokens=50 delay=2]"
    assert tokens == 4


def test_directives_are_off_by_default(echo_api):
    from app.config import DEFAULTS

    assert DEFAULTS["ECHO_DIRECTIVES"] is False
    api = echo_api(ECHO_DIRECTIVES=DEFAULTS["ECHO_DIRECTIVES"])
    started = time.monotonic()
    text, _ = _complete(api, "[echo tokens=100000000 delay=5]")
    assert text == "Echo: [echo tokens=100000000 delay=5]"
    assert time.monotonic() - started < 2


def test_directive_shapes_the_reply_when_on(echo_api):
    api = echo_api(ECHO_DIRECTIVES=True)
    text, tokens = _complete(api, "[echo tokens=5]")
    assert text == "t1 t2 t3 t4 t5" and tokens == 5


@pytest.mark.parametrize("count", ["100000000", "9" * 5000])
def test_token_count_beyond_the_bound_is_cut_to_it_at_once(echo_api, count):
    """10^8 (or a 5,000-digit count) answers the bounded count quickly: nothing is built for
    the tokens that are not sent."""
    api = echo_api(ECHO_DIRECTIVES=True, ECHO_MAX_TOKENS=300)
    started = time.monotonic()
    text, tokens = _complete(api, f"[echo tokens={count}]")
    assert time.monotonic() - started < 2
    assert tokens == 300
    words = text.split()
    assert len(words) == 300 and words[0] == "t1" and words[-1] == "t300"


def test_streamed_reply_is_cut_to_the_bound_too(echo_api):
    api = echo_api(ECHO_DIRECTIVES=True, ECHO_MAX_TOKENS=7)
    resp = api.post("/v1/chat/completions", json={
        "model": "echo/echo", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "[echo tokens=100000000]"}]})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "t7" in body and "t8" not in body
    assert '"completion_tokens":7' in body.replace(" ", "")


def test_delay_and_total_time_are_bounded(echo_api):
    """delay=5 per token is cut to ECHO_MAX_DELAY; the reply ends at ECHO_MAX_DURATION with
    the tokens sent by then (and usage counts those)."""
    api = echo_api(ECHO_DIRECTIVES=True, ECHO_MAX_DELAY=0.1, ECHO_MAX_DURATION=0.55)
    started = time.monotonic()
    text, tokens = _complete(api, "[echo tokens=1000 delay=5]")
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert 1 <= tokens <= 5 and text.split() == [f"t{i}" for i in range(1, tokens + 1)]


def test_echoed_text_is_bounded_by_max_tokens(echo_api):
    api = echo_api(ECHO_DIRECTIVES=False, ECHO_MAX_TOKENS=3)
    text, tokens = _complete(api, "one two three four five")
    assert text == "Echo: one two" and tokens == 3

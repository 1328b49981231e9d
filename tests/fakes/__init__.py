"""Fake upstream LLM servers for tests and benchmarks (no SDK mocking).

Each fake is a real HTTP/1.1 server on 127.0.0.1 and a free port, served
from a daemon thread, speaking the provider's wire format::

    from tests.fakes import FakeOpenAI, FakeAnthropic

    with FakeOpenAI() as fake:                      # or FakeOpenAI(api_key="sk-x")
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-x")
        fake.script(text="Hi there", prompt_tokens=5)   # default for every request
        fake.script_once(status=429, retry_after="7")   # next request only (FIFO)
        ...
        fake.last.body["temperature"]               # what the SDK sent
        fake.requests                               # every Recorded request
        fake.last.client_gone.wait(2)               # client closed mid-stream

``script``/``script_once`` take the fields of ``tests.fakes.base.Reply``:
text, chunks, prompt_tokens, completion_tokens, usage, status,
error_message, error_type, retry_after, headers, break_after, hang,
hang_after, chunk_delay, error_event, error_event_after, raw, tool_calls,
argument_piece, choices, cached_tokens, reasoning_tokens, finish_reason
(the OpenAI fake: tool calls, ``n`` choices, logprobs and embeddings; see
``tests/fakes/openai_server.py``).
``Recorded`` has method, path, headers (lower-case keys), body (parsed
JSON), and the events ``client_gone`` and ``finished``.

Standalone (e.g. a benchmark's upstream in its own process):
``python -m tests.fakes openai --port 9000 --tokens 50 --delay 0.02``
(or ``anthropic``) prints its base URL on the first line of stdout and
serves until SIGINT/SIGTERM.
"""
from .anthropic_server import FakeAnthropic
from .base import Recorded, Reply, wait_until
from .openai_server import FakeOpenAI

__all__ = ["FakeOpenAI", "FakeAnthropic", "Reply", "Recorded", "wait_until"]

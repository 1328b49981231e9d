"""The fake upstreams' standalone mode (benchmarks run them as a process)."""
import json
import os
import signal
import subprocess
import sys

import openai
import pytest

from tests.fakes import FakeOpenAI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_standalone_fake_serves_until_sigterm(api):
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes", api, "--tokens", "3"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), proc.stderr.read()
        if api == "openai":
            client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=5)
            stream = client.chat.completions.create(model="m", messages=[], stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            import anthropic

            client = anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0, timeout=5)
            reply = client.messages.create(model="c", max_tokens=10, messages=[])
            text = reply.content[0].text
        assert text == "t1 t2 t3"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# ---------------------------------------------------------------- the OpenAI fake, read by the SDK

@pytest.fixture
def oai():
    from tests.fakes import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake, openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=5)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
HI = [{"role": "user", "content": "hi"}]


def test_the_sdks_stream_helper_assembles_the_fakes_tool_call_fragments(oai):
    fake, client = oai
    fake.script(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}},
                            {"name": "get_weather", "arguments": {"city": "Oslo"}}], argument_piece=2)
    with client.chat.completions.stream(model="m", messages=HI, tools=TOOLS) as stream:
        completion = stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("call_fake_0_0", "get_weather", {"city": "Paris", "days": 3}),
        ("call_fake_0_1", "get_weather", {"city": "Oslo"})]
    reply = client.chat.completions.create(model="m", messages=HI, tools=TOOLS)
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["get_weather"] * 2


def test_the_fakes_choices_and_logprobs_parse_in_the_sdk(oai):
    fake, client = oai
    fake.script(choices=["one two", "three"])
    reply = client.chat.completions.create(model="m", messages=HI, n=2, logprobs=True, top_logprobs=2,
                                           seed=5, response_format={"type": "json_object"})
    assert [c.message.content for c in reply.choices] == ["one two", "three"]
    entries = reply.choices[0].logprobs.content
    assert [(e.token, e.logprob) for e in entries] == [("one", FakeOpenAI.logprob(0)), (" two", FakeOpenAI.logprob(1))]
    assert [t.token for t in entries[0].top_logprobs] == ["one", "alt1"]
    assert (fake.last.body["seed"], fake.last.body["response_format"]) == (5, {"type": "json_object"})
    stream = client.chat.completions.create(model="m", messages=HI, n=2, stream=True,
                                            stream_options={"include_usage": True})
    texts, usage = {0: "", 1: ""}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: "one two", 1: "three"}
    assert usage.completion_tokens == 3 and usage.prompt_tokens_details.cached_tokens == 0


def test_the_fake_records_image_parts(oai):
    fake, client = oai
    image = {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": image}]}])
    assert fake.images() == [image]


def test_the_fakes_embeddings_decode_in_the_sdk_as_float_and_base64(oai):
    fake, client = oai
    default = client.embeddings.create(model="e", input=["a", "b c"])  # the SDK asks for base64
    assert fake.last.body["encoding_format"] == "base64"
    assert [d.embedding for d in default.data] == [FakeOpenAI.vector("a"), FakeOpenAI.vector("b c")]
    floats = client.embeddings.create(model="e", input="a", encoding_format="float", dimensions=4)
    assert floats.data[0].embedding == FakeOpenAI.vector("a", 4)
    assert default.usage.prompt_tokens == 3 and floats.usage.total_tokens == 1
    tokens = client.embeddings.create(model="e", input=[[1, 2], [3]], encoding_format="float")
    assert [d.embedding for d in tokens.data] == [FakeOpenAI.vector([1, 2]), FakeOpenAI.vector([3])]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="e", input=[])

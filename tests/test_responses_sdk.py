"""The Responses API through the official openai SDK against a live ``chatport serve`` (gunicorn +
gevent), its responses stored on SQLite and on PostgreSQL; ``openai/gpt-test`` is the fake OpenAI
upstream (to see what reaches a provider)."""
import base64
import json
import uuid

import openai
import psycopg2
import pytest
import requests
from pydantic import BaseModel

from .conftest import PG_SKIP_REASON, PG_URL, pg_schema_url
from .servers import chatport_server, upstream_env

ADMIN = "cp_test_admin_key_for_the_responses_tests_000"
H = {"Authorization": f"Bearer {ADMIN}"}
TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                         "additionalProperties": False}, "strict": True}]
CALL = '[echo call=get_weather {"city": "Paris"}]'


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request, tmp_path_factory, upstream):
    env = upstream_env(upstream, ADMIN, OPENAI_MAX_RETRIES=0)
    schema = None
    if request.param == "postgres":
        if not PG_URL:
            pytest.skip(PG_SKIP_REASON)
        schema = "t_" + uuid.uuid4().hex[:12]
        with psycopg2.connect(PG_URL) as conn:
            conn.autocommit = True
            conn.cursor().execute(f"CREATE SCHEMA {schema}")
        env["CHATPORT_DATABASE_URL"] = pg_schema_url(schema)
    try:
        with chatport_server(tmp_path_factory.mktemp("responses"), workers=2, env=env) as base:
            yield base
    finally:
        if schema:
            conn = psycopg2.connect(PG_URL)
            conn.autocommit = True
            conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
            conn.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=ADMIN, max_retries=0)


def test_create_and_output_text(client):
    response = client.responses.create(model="echo/echo", input="hi")
    assert response.output_text == "Echo: hi"
    assert response.id.startswith("resp_") and response.status == "completed" and response.object == "response"
    assert response.output[0].type == "message" and response.output[0].content[0].annotations == []
    assert response.usage.output_tokens == 2 and response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.total_tokens == response.usage.input_tokens + 2


def test_retrieve_input_items_and_delete(client):
    response = client.responses.create(model="echo/echo", input=[{"role": "user", "content": "keep me"}],
                                       metadata={"ticket": "42"})
    again = client.responses.retrieve(response.id)
    assert again.output_text == "Echo: keep me" and again.metadata == {"ticket": "42"}
    assert again.usage.total_tokens == response.usage.total_tokens and again.status == "completed"
    items = client.responses.input_items.list(response.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "keep me")]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_instructions_and_history_reach_the_provider(client, upstream):
    upstream.script(text="first answer")
    first = client.responses.create(model="openai/gpt-test", input="q1", instructions="Be brief.",
                                    temperature=0.2, max_output_tokens=40)
    assert first.output_text == "first answer" and first.instructions == "Be brief."
    sent = upstream.last.body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"}]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 40
    upstream.script(text="second answer")
    second = client.responses.create(model="openai/gpt-test", input="q2", previous_response_id=first.id,
                                     instructions="Be thorough.")
    assert second.output_text == "second answer" and second.previous_response_id == first.id
    assert upstream.last.body["messages"] == [
        {"role": "system", "content": "Be thorough."}, {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "first answer"}, {"role": "user", "content": "q2"}]
    upstream.script()


def test_streaming_events_in_order(client):
    with client.responses.stream(model="echo/echo", input="one two") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-2].item.content[0].text == "Echo: one two" and final.output_text == "Echo: one two"
    assert client.responses.retrieve(final.id).output_text == "Echo: one two"
    raw = list(client.responses.create(model="echo/echo", input="x", stream=True))
    assert raw[0].type == "response.created" and raw[-1].type == "response.completed"
    assert "".join(e.delta for e in raw if e.type == "response.output_text.delta") == "Echo: x"


def test_tools_round_trip_with_previous_response_id(client):
    first = client.responses.create(model="echo/echo", input=f"What is the weather? {CALL}", tools=TOOLS)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {
        "city": "Paris"}
    assert first.output_text == ""
    second = client.responses.create(
        model="echo/echo", previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"sky": "clear"})}])
    assert second.output_text == 'Echo: get_weather returned {"sky": "clear"}'
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="echo/echo", previous_response_id=first.id, tools=TOOLS,
                                input=[{"type": "function_call_output", "call_id": "call_other", "output": "x"}])
    assert exc.value.body["param"] == "input.0.call_id"


def test_streamed_tools_round_trip(client):
    with client.responses.stream(model="echo/echo", input=f"weather {CALL}", tools=TOOLS) as stream:
        types = [e.type for e in stream]
        first = stream.get_final_response()
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta", "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    call = first.output[0]
    with client.responses.stream(model="echo/echo", previous_response_id=first.id, tools=TOOLS, input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "Echo: get_weather returned sunny"


def test_stateless_round_trip_with_output_items_passed_back(client):
    history = [{"role": "user", "content": f"weather {CALL}"}]
    first = client.responses.create(model="echo/echo", input=history, tools=TOOLS, store=False)
    history += first.output  # the SDK's own items, as its docs do it
    history.append({"type": "function_call_output", "call_id": first.output[0].call_id, "output": "rain"})
    second = client.responses.create(model="echo/echo", input=history, tools=TOOLS, store=False)
    assert second.output_text == "Echo: get_weather returned rain"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


class Reply(BaseModel):
    answer: str
    confidence: int


def test_structured_output(client):
    response = client.responses.create(model="echo/echo", input="hi", text={"format": {
        "type": "json_schema", "name": "reply", "strict": True, "schema": Reply.model_json_schema() | {
            "additionalProperties": False}}})
    assert json.loads(response.output_text) == {"answer": "Echo: hi", "confidence": 0}
    parsed = client.responses.parse(model="echo/echo", input="hello", text_format=Reply)
    assert parsed.output_parsed == Reply(answer="Echo: hello", confidence=0)


def test_images_and_bots(client, server):
    png = base64.b64encode(b"\x89PNG" + b"1" * 12).decode()
    response = client.responses.create(model="echo/echo", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{png}", "detail": "high"}]}])
    assert response.output_text == "Echo: what is this? [image image/png, 16 bytes detail=high]"
    bot = requests.post(server + "/api/v1/bots", headers=H, timeout=10,
                        json={"name": "Responder", "instructions": "Be kind."}).json()
    first = client.responses.create(model="bot/Responder", input="ahoy")
    second = client.responses.create(model=f"bot/{bot['id']}", input="again", previous_response_id=first.id)
    assert (first.output_text, second.output_text) == ("Echo: ahoy", "Echo: again")


def test_errors_in_openais_shape(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="echo/echo", input="hi", tools=[{"type": "web_search"}])
    assert exc.value.body["param"] == "tools" and "web_search" in exc.value.message
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.create(model="echo/echo", input="hi", previous_response_id="resp_" + "0" * 32)
    assert exc.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="echo/none", input="hi")
    assert exc.value.body["code"] == "model_not_found"
    bad = openai.OpenAI(base_url=client.base_url, api_key="cp_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="echo/echo", input="hi")

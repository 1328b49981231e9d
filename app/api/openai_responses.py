"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items`` (docs/openai-responses.md).

``model`` is a provider model, an alias or a bot (``bot/<id or name>``); keys scoped to some
bots may only use those bots. A response is stored (``store``, the default) as a turn of a
chatport conversation and continued with ``previous_response_id`` (``app.services.responses``).
Errors come in OpenAI's shape (the ``/v1`` prefix's renderer).
"""
from flask import current_app
from marshmallow import INCLUDE, Schema, fields, validate

from app import metering
from app.api import responses_format as wire
from app.api.common import (
    Blueprint,
    Temperature,
    any_key,
    current_key,
    model_body_limit,
    model_or_bot,
    user_label_field,
)
from app.api.sse import SSE_EVENT_SCHEMA, stream_response
from app.errors import BadRequest
from app.providers.llm import registry
from app.services import responses

blp = Blueprint("openai_responses", __name__, url_prefix="/v1", description="OpenAI Responses API")
blp.before_request(model_body_limit)
blp.before_request(any_key)


class ResponseCreate(Schema):
    """The body of ``POST /v1/responses``; fields not declared here are read by
    ``responses_format.parse_request`` (ignored when harmless, else refused)."""

    class Meta:
        unknown = INCLUDE

    model = fields.Str(required=True, validate=validate.Length(1, 300),
                       metadata={"description": "A provider model, an alias, or bot/<id or name>",
                                 "example": "echo/echo"})
    input = fields.Raw(required=True, metadata={"description": "A string, or a list of input items "
                                                               "(message, function_call, function_call_output)",
                                                "example": "Hello"})
    instructions = fields.Str(allow_none=True)
    tools = fields.List(fields.Dict(), allow_none=True, metadata={"description": "Function tools only"})
    tool_choice = fields.Raw(allow_none=True, metadata={"description": "auto, none, required or "
                                                                       "{type: function, name}"})
    parallel_tool_calls = fields.Bool(allow_none=True)
    text = fields.Dict(allow_none=True, metadata={"description": "{format: {type: text | json_object | "
                                                                 "json_schema, name, schema, strict}}"})
    temperature = Temperature()
    top_p = fields.Float(allow_none=True, validate=validate.Range(0, 1))
    max_output_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))
    reasoning = fields.Dict(allow_none=True, metadata={"description": "{effort}"})
    metadata = fields.Dict(keys=fields.Str(), values=fields.Str(), allow_none=True)
    user = user_label_field(min_length=0, allow_none=True)
    store = fields.Bool(allow_none=True, metadata={"description": "Default true"})
    previous_response_id = fields.Str(allow_none=True, validate=validate.Length(max=100))
    stream = fields.Bool(allow_none=True)
    include = fields.List(fields.Str(), allow_none=True)
    top_logprobs = fields.Int(allow_none=True, validate=validate.Range(0, 20))
    truncation = fields.Str(allow_none=True, validate=validate.OneOf(["auto", "disabled"]))


class InputItemsArgs(Schema):
    limit = fields.Int(load_default=20, validate=validate.Range(1, 100))
    order = fields.Str(load_default="desc", validate=validate.OneOf(["asc", "desc"]))
    after = fields.Str(validate=validate.Length(max=100))
    include = fields.List(fields.Str())


@blp.route("/responses", methods=["POST"])
@blp.arguments(ResponseCreate)
@blp.response(200)
@blp.alt_response(200, description="Typed response events (response.created, response.output_text.delta, ..., "
                                   "response.completed) when stream is true",
                  content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
def create_response(data):
    """Create a model response (OpenAI Responses API; typed SSE events when stream is true)"""
    key = current_key()
    bot, model_name = model_or_bot(data["model"])
    meter = metering.current()
    request = wire.parse_request(data, for_bot=bot is not None,
                                 lookup=lambda ids: responses.messages_by_id(ids, key))
    try:
        turn = responses.begin(registry=registry(), config=current_app.config, key=key, bot=bot, model=model_name,
                               messages=request.messages, system=request.system, options=request.options,
                               store=request.store, previous_response_id=request.previous_response_id,
                               params=request.params, user=request.user, start=metering.start_turn)
    except BadRequest as exc:
        raise wire.input_error(exc, request) from None
    shown = wire.Shown(turn.message_id, turn.created, request.params, request.previous_response_id,
                       request.logprobs)
    if request.stream:
        events = turn.events(heartbeat=current_app.config["SSE_HEARTBEAT"])
        finish = metering.stream_finish(turn, events)
        return stream_response(wire.response_events(events, shown, on_finish=finish))
    done = turn.run()
    meter.add_tokens(done.usage, turn.model.name)
    return current_app.json.response(wire.done_body(done, shown))


@blp.route("/responses/<response_id>", methods=["GET"])
@blp.response(200)
def get_response(response_id):
    """Retrieve a stored response (404 for one made with store false)"""
    return current_app.json.response(wire.stored_body(responses.get(response_id, current_key())))


@blp.route("/responses/<response_id>", methods=["DELETE"])
@blp.response(200)
def delete_response(response_id):
    """Delete a stored response: its answer and the input it added"""
    responses.delete(response_id, current_key())
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@blp.route("/responses/<response_id>/input_items", methods=["GET"])
@blp.arguments(InputItemsArgs, location="query")
@blp.response(200)
def list_input_items(args, response_id):
    """The input items of a stored response (newest first unless order is asc)"""
    items = wire.input_items(responses.get(response_id, current_key()))
    if args["order"] == "desc":
        items.reverse()
    if args.get("after"):
        ids = [item["id"] for item in items]
        if args["after"] not in ids:
            raise BadRequest(f"after names no input item of {response_id}", fields={"after": "unknown item"})
        items = items[ids.index(args["after"]) + 1:]
    page = items[:args["limit"]]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)}

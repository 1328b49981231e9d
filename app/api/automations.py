"""chatport API: automations (admin keys manage; keys in scope run) and their runs."""
from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.common import (
    Blueprint,
    PageArgs,
    Temperature,
    Timestamp,
    any_key,
    current_key,
    id_field,
    name_field,
    page,
    page_schema,
    scope_key,
    user_label_field,
)
from app.api.sse import SSE_EVENT_SCHEMA, sse, stream_response
from app.metering import meter_for
from app.providers.llm import registry
from app.services import automations
from app.services.keys import require_admin

blp = Blueprint("automations", __name__, url_prefix="/automations", description="Automations (flows)")
blp.before_request(any_key)
runs_blp = Blueprint("runs", __name__, url_prefix="/runs", description="Automation runs (logs)")
runs_blp.before_request(any_key)

_ident = validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", error="must be an identifier")


class InputVar(Schema):
    name = fields.Str(required=True, validate=_ident)
    default = fields.Raw()
    description = fields.Str(validate=validate.Length(max=500))


class Context(Schema):
    sources = fields.List(fields.Str(validate=validate.Length(1, 200)), load_default=list)
    tags = fields.List(fields.Str(validate=validate.Length(1, 100)), load_default=list)
    top_k = fields.Int(load_default=4, validate=validate.Range(1, 20))


class StepOptions(Schema):
    temperature = Temperature()
    max_tokens = fields.Int(allow_none=True, validate=validate.Range(1, 1_000_000))


class StepIn(Schema):
    name = fields.Str(validate=validate.Length(1, 100))
    prompt = fields.Str(required=True, validate=validate.Length(1, 50000))
    model = fields.Str(required=True, validate=validate.Length(1, 200))
    options = fields.Nested(StepOptions)
    output = fields.Str(validate=_ident)
    result_type = fields.Str(validate=validate.OneOf(["text", "list"]))
    context = fields.Nested(Context, allow_none=True)


class AutomationFields(Schema):
    description = fields.Str(validate=validate.Length(max=2000))
    endpoint = fields.Str(allow_none=True, validate=validate.Length(1, 100))
    api_enabled = fields.Bool()
    inputs = fields.List(fields.Nested(InputVar), validate=validate.Length(max=50))
    returns = fields.List(fields.Str(validate=_ident), validate=validate.Length(1, 50))


class AutomationCreate(AutomationFields):
    name = name_field(required=True)
    steps = fields.List(fields.Nested(StepIn), required=True, validate=validate.Length(1, 20))


class AutomationUpdate(AutomationFields):
    name = name_field()
    steps = fields.List(fields.Nested(StepIn), validate=validate.Length(1, 20))


class StepOut(Schema):
    position = fields.Int()
    name = fields.Str()
    prompt = fields.Str()
    model = fields.Str()
    options = fields.Dict()
    output = fields.Str()
    result_type = fields.Str()
    context = fields.Dict(allow_none=True)


class AutomationOut(Schema):
    id = fields.Str()
    name = fields.Str()
    description = fields.Str()
    endpoint = fields.Str(allow_none=True)
    api_enabled = fields.Bool()
    inputs = fields.List(fields.Dict())
    returns = fields.List(fields.Str())
    steps = fields.Function(lambda a: StepOut(many=True).dump(automations.steps_of(a)))
    created_at = Timestamp()
    updated_at = Timestamp()


AutomationPage = page_schema(AutomationOut, "AutomationPage")


class RunIn(Schema):
    inputs = fields.Raw(load_default=dict)
    user_id = user_label_field(min_length=0)
    stream = fields.Bool(load_default=False)
    steps = fields.Raw(allow_none=True, metadata={"description": "Per-step context overrides, as the flows API"})


class RunOut(Schema):
    id = fields.Str()
    automation_id = fields.Function(lambda r: r.automation_id)
    dialect = fields.Str()
    end_user = fields.Str(allow_none=True)
    inputs = fields.Raw()
    outputs = fields.Raw()
    steps = fields.Raw()
    status = fields.Str()
    error = fields.Str(allow_none=True)
    prompt_length = fields.Int()
    prompt_tokens = fields.Int()
    completion_tokens = fields.Int()
    credits = fields.Int()
    duration_ms = fields.Int()
    rating = fields.Int(allow_none=True)
    rating_comment = fields.Str(allow_none=True)
    created_at = Timestamp()
    finished_at = Timestamp(allow_none=True)


RunPage = page_schema(RunOut, "RunPage")


@blp.route("")
class AutomationList(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, AutomationPage)
    def get(self, args):
        """List automations"""
        require_admin(current_key())
        return page(*automations.list_automations(**args))

    @blp.arguments(AutomationCreate)
    @blp.response(201, AutomationOut)
    def post(self, data):
        """Create an automation; templates and variables are checked now, not at run time"""
        require_admin(current_key())
        return automations.save(data, registry=registry())


@blp.route("/<automation_id>")
class AutomationItem(MethodView):
    @blp.response(200, AutomationOut)
    def get(self, automation_id):
        """Show an automation with its steps"""
        require_admin(current_key())
        return automations.get(automation_id)

    @blp.arguments(AutomationUpdate)
    @blp.response(200, AutomationOut)
    def patch(self, data, automation_id):
        """Update an automation (steps, when given, replace the old ones)"""
        require_admin(current_key())
        return automations.save(data, registry=registry(), automation=automations.get(automation_id))

    @blp.response(204)
    def delete(self, automation_id):
        """Delete an automation (its run logs stay)"""
        require_admin(current_key())
        automations.delete(automations.get(automation_id))


class RunReply(Schema):
    log_id = fields.Str()
    result = fields.Raw()
    outputs = fields.Raw()
    credits = fields.Int()
    prompt_length = fields.Int()


@blp.route("/<automation_id>/run", methods=["POST"])
@blp.arguments(RunIn)
@blp.response(200, RunReply)
@blp.alt_response(200, description="SSE: step_start, delta (last step), step_finish, then done or error",
                  content_type="text/event-stream", success=True, schema=SSE_EVENT_SCHEMA)
def run_automation(data, automation_id):
    """Run an automation (JSON, or SSE streaming the last step's deltas)"""
    key = current_key()
    automation = automations.get(automation_id, scope_key())
    kwargs = dict(registry=registry(), config=current_app.config, key=key, end_user=data.get("user_id"),
                  dialect="chatport", step_contexts=data.get("steps"), on_finish=meter_for(automation))
    if data["stream"]:
        automations.prepare(automation, data["inputs"], step_contexts=data.get("steps"), key=key)  # 4xx before streaming
        return stream_response(_sse(automations.execute(automation, data["inputs"], stream_last=True, **kwargs)))
    result = automations.run(automation, data["inputs"], **kwargs)
    return {"log_id": result.log_id, "result": result.result, "outputs": result.outputs,
            "credits": result.credits, "prompt_length": result.prompt_length}


def _sse(events):
    from app.errors import ApiError

    try:
        for kind, *payload in events:
            if kind == "step_start":
                yield sse({"step": payload[0], "name": payload[1]}, "step_start")
            elif kind == "delta":
                yield sse({"text": payload[0]}, "delta")
            elif kind == "step_finish":
                yield sse({"step": payload[0], "output": payload[1]}, "step_finish")
            elif kind == "done":
                r = payload[0]
                yield sse({"log_id": r.log_id, "result": r.result, "outputs": r.outputs, "credits": r.credits,
                           "prompt_length": r.prompt_length}, "done")
    except ApiError as err:
        yield sse({"error": {"code": err.status, "error": err.code, "message": err.message}}, "error")


class RunArgs(PageArgs):
    automation_id = id_field()


class RateRun(Schema):
    rating = fields.Int(required=True, validate=validate.Range(1, 5))
    comment = fields.Str(allow_none=True, validate=validate.Length(max=2000))


@runs_blp.route("", methods=["GET"])
@runs_blp.arguments(RunArgs, location="query")
@runs_blp.response(200, RunPage)
def list_runs(args):
    """List automation runs (a client key sees its own)"""
    automation_id = args.pop("automation_id", None)
    return page(*automations.list_runs(scope_key(), automation_id, **args))


@runs_blp.route("/<run_id>", methods=["GET"])
@runs_blp.response(200, RunOut)
def show_run(run_id):
    """Show a run: inputs, each step's prompt length, output, model, tokens and duration"""
    return automations.get_run(run_id, scope_key())


@runs_blp.route("/<run_id>/rating", methods=["POST"])
@runs_blp.arguments(RateRun)
@runs_blp.response(200, RunOut)
def rate_run(data, run_id):
    """Rate a run by its log id: 1-5 stars and a comment"""
    return automations.rate(run_id, data["rating"], data.get("comment"), scope_key())

"""The flows API (docs/flows-api.md): ``POST /v1/flows/<flowId>/generate`` and
``POST /v1/generate``. Errors are ``{"code": <status>, "message": ..., "error": true}``."""
from flask import current_app
from marshmallow import EXCLUDE, Schema, fields

from app.api.common import Blueprint, any_key, current_key, id_field, scope_key, user_label_field
from app.api.errors import register_dialect
from app.metering import meter_for
from app.providers.llm import registry
from app.services import automations

blp = Blueprint("flows", __name__, description="Flows API")
blp.before_request(any_key)


def render_error(err):
    return {"code": err.status, "message": err.message, "error": True}, err.status, err.headers


def register(app, api):
    prefix = app.config["OPENAI_PREFIX"]
    api.register_blueprint(blp, url_prefix=prefix)
    register_dialect(app, prefix + "/flows", render_error)
    register_dialect(app, prefix + "/generate", render_error)


class FlowsLoose(Schema):
    class Meta:
        unknown = EXCLUDE


class FlowInputs(FlowsLoose):
    inputs = fields.Raw(load_default=dict)


class GenerateFlow(FlowsLoose):
    userId = user_label_field(min_length=0, allow_none=True)
    flow = fields.Nested(FlowInputs, load_default=dict)
    steps = fields.Raw(allow_none=True)


class PromptInputs(FlowsLoose):
    promptId = id_field(required=True)
    inputs = fields.Raw(load_default=dict)


class GeneratePrompt(FlowsLoose):
    prompt = fields.Nested(PromptInputs, required=True)
    endUserId = user_label_field(min_length=0, allow_none=True)


def _generate(automation, inputs, end_user, step_contexts=None):
    result = automations.run(automation, inputs, registry=registry(), config=current_app.config, key=current_key(),
                             end_user=end_user, dialect="flows", step_contexts=step_contexts,
                             on_finish=meter_for(automation))
    return {"code": 200, "message": "OK", "error": False,
            "results": {"result": result.result, "logId": result.log_id}}


@blp.route("/flows/<flow_id>/generate", methods=["POST"])
@blp.arguments(GenerateFlow)
@blp.response(200)
def generate_flow(data, flow_id):
    """Run a flow with its inputs; `steps.stepN.context` overrides a step's knowledge folders and tags"""
    automation = automations.get(flow_id, scope_key())
    return _generate(automation, data["flow"].get("inputs", {}), data.get("userId"), data.get("steps"))


@blp.route("/generate", methods=["POST"])
@blp.arguments(GeneratePrompt)
@blp.response(200)
def generate_prompt(data):
    """Run a single prompt (an automation) by `prompt.promptId` with `prompt.inputs`"""
    automation = automations.get(data["prompt"]["promptId"], scope_key())
    return _generate(automation, data["prompt"].get("inputs", {}), data.get("endUserId"))

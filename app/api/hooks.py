"""Automation endpoints (docs/flows-api.md): ``POST <HOOKS_PREFIX>/<endpoint>``.

The body's keys initialise the automation's variables; the reply carries its
return variables and the credits the call used. Errors are
``{"success": false, "error": {"message": ...}}``.
"""
from flask import current_app

from app.api.common import Blueprint, any_key, current_key, json_object, scope_key
from app.api.errors import register_blueprint_dialect, register_dialect
from app.metering import meter_for
from app.providers.llm import registry
from app.services import automations

blp = Blueprint("hooks", __name__, description="Automation endpoints")
blp.before_request(any_key)


def render_error(err):
    return {"success": False, "error": {"message": err.message}}, err.status, err.headers


def register(app, api):
    prefix = app.config["HOOKS_PREFIX"] or ""
    api.register_blueprint(blp, url_prefix=prefix or None)
    register_blueprint_dialect(app, blp.name, render_error)
    if prefix:
        register_dialect(app, prefix, render_error)


@blp.route("/<endpoint>", methods=["POST"])
@blp.response(200)
def call_endpoint(endpoint):
    """Run the automation behind a user-defined endpoint; the JSON body gives its variables"""
    key = current_key()
    automation = automations.by_endpoint(endpoint, scope_key())
    body = json_object("The body must be a JSON object of variables")
    on_finish = meter_for(automation)
    result = automations.run(automation, body, registry=registry(), config=current_app.config, key=key,
                             dialect="hooks", on_finish=on_finish)
    return {"success": True, "data": result.outputs,
            "usage": {"total_usage": result.credits, "prompt_length": result.prompt_length}}


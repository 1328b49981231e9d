"""Dialect blueprints: wire format in, service call, wire format out.

Each module is one surface. ``init_api`` mounts them, sets up OpenAPI
(``/api/openapi.json``, docs at ``/api/docs``) and the health check.
"""
from flask import jsonify
from flask_smorest import Api
from marshmallow import Schema, fields

from app.storage.db import ping


class ErrorSchema(Schema):
    """The one error body of the chatport API."""

    code = fields.Int(metadata={"description": "HTTP status code"})
    status = fields.Str(metadata={"description": "HTTP status name"})
    error = fields.Str(metadata={"description": "Stable error code, e.g. not_found"})
    message = fields.Str(metadata={"description": "What went wrong, for a person"})
    errors = fields.Dict(keys=fields.Str(), values=fields.Str(),
                         metadata={"description": "Invalid fields and why"})


class OpenAIErrorDetail(Schema):
    message = fields.Str()
    type = fields.Str()
    code = fields.Str(allow_none=True)
    param = fields.Str(allow_none=True)


class OpenAIError(Schema):
    """OpenAI's error body: ``{"error": {"message", "type", "code", "param"}}``."""

    error = fields.Nested(OpenAIErrorDetail)


class ChannelError(Schema):
    """Channel API error body."""

    success = fields.Bool()
    message = fields.Str()


class ChatApiError(Schema):
    """Chat API error body."""

    message = fields.Str()


class FlowsError(Schema):
    """Flows API error body."""

    code = fields.Int()
    message = fields.Str()
    error = fields.Bool()


class HookErrorDetail(Schema):
    message = fields.Str()


class HooksError(Schema):
    """Automation endpoint error body."""

    success = fields.Bool()
    error = fields.Nested(HookErrorDetail)


class AnthropicErrorDetail(Schema):
    type = fields.Str()
    message = fields.Str()


class AnthropicError(Schema):
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}, "request_id"}``."""

    type = fields.Str()
    error = fields.Nested(AnthropicErrorDetail)
    request_id = fields.Str()


# blueprint name -> (error schema, security requirement) for the compatibility dialects
DIALECT_DOCS = {
    "openai": (OpenAIError, None),
    "anthropic": (AnthropicError, [{"bearer": []}, {"anthropicKey": []}]),
    "openai_responses": (OpenAIError, None),
    "channel_api": (ChannelError, [{"channelSecret": []}]),
    "chat_api": (ChatApiError, None),
    "flows": (FlowsError, None),
    "hooks": (HooksError, None),
}


def _document_dialects(app, api):
    """Each compatibility dialect documents its own error body (not chatport's) and, for the
    channel API, its own credential; flask-smorest gives every operation the default error."""
    from flask_smorest.spec.plugins import FlaskPlugin

    spec = api.spec
    for schema in {schema for schema, _ in DIALECT_DOCS.values()}:  # a schema may serve two blueprints
        spec.components.schema(schema.__name__, schema=schema)
    refs = {name: {"description": "Error, in this dialect's shape",
                   "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema.__name__}"}}}}
            for name, (schema, _) in DIALECT_DOCS.items()}
    paths = spec._paths  # apispec keeps registered paths here until to_dict()
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.partition(".")[0]
        if blueprint not in DIALECT_DOCS:
            continue
        path = FlaskPlugin.flaskpath2openapi(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = paths.get(path, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, response in list(responses.items()):  # webargs' BAD_REQUEST etc.
                if str(response.get("$ref", "")).startswith("#/components/responses/"):
                    responses[status] = refs[blueprint]
            responses["default"] = refs[blueprint]
            for status, response in responses.items():  # a JSON body, also beside a stream
                if str(status).startswith("2") and str(status) != "204" and "$ref" not in response:
                    response.setdefault("content", {}).setdefault(
                        "application/json", {"schema": {"type": "object"}})
            if DIALECT_DOCS[blueprint][1] is not None:
                operation["security"] = DIALECT_DOCS[blueprint][1]


class ChatportApi(Api):
    """flask-smorest Api whose error handling is chatport's (see app.errors), and whose OpenAPI
    document is written when it is first read (``GET /api/openapi.json``, ``/api/docs``), not
    when the app is created: documenting the views was half of what creating the app cost, which
    every worker start, CLI command and test pays, most of them never reading the document."""

    ERROR_SCHEMA = ErrorSchema

    def __init__(self, *args, **kwargs):
        self._pending_docs = []  # what writes the document, in registration order
        super().__init__(*args, **kwargs)

    @property
    def spec(self):
        """The apispec document, every registered blueprint's views in it."""
        if self._pending_docs:
            pending, self._pending_docs = self._pending_docs, []
            for write in pending:
                write()
        return self._spec

    @spec.setter
    def spec(self, value):
        self._spec = value

    def register_blueprint(self, blp, *, parameters=None, **options):
        """flask-smorest's, with the views documented later (``document_later``)."""
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        app = self._app

        def write():
            blp.register_views_in_doc(self, app, self._spec, name=name, parameters=parameters)
            self._spec.tag({"name": name, "description": blp.description})
        self.document_later(write)

    def document_later(self, write):
        """Run ``write()`` (which changes ``self.spec``) when the document is first read."""
        self._pending_docs.append(write)

    def _register_error_handlers(self):
        pass  # app.api.errors.init_app installs the one handler for every dialect


def init_api(app):
    app.config.setdefault("API_TITLE", "chatport API")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/api")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "/docs")
    app.config.setdefault(
        "OPENAPI_SWAGGER_UI_URL", "https://cdn.jsdelivr.net/npm/swagger-ui-dist/"
    )
    app.config.setdefault("API_SPEC_OPTIONS", {
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "channelSecret": {"type": "apiKey", "in": "header", "name": "X-API-Secret-Key",
                              "description": "A bot channel's secret (channel API only)"},
            "anthropicKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                             "description": "A chatport key in Anthropic's header (Messages API only)"},
        }},
        "security": [{"bearer": []}],
        "info": {"description": "chatport's own API: management, conversations, knowledge, "
                                "workflows, users, models, analytics, account."},
    })
    api = ChatportApi(app)
    from app.metering import policy

    policy.init_app(app)
    app.extensions["chatport_api"] = api

    from app.api import (
        account,
        analytics,
        anthropic_messages,
        automations,
        bots,
        channel_api,
        chat_api,
        conversations,
        databases,
        flows,
        hooks,
        keys,
        knowledge,
        models,
        openai_compat,
        openai_responses,
        users,
    )
    from app.api.errors import register_dialect
    from app.api.openai_format import render_error as render_openai_error

    prefix = app.config["API_PREFIX"]
    for module in (bots, keys, users, account, models, conversations, analytics, automations, knowledge,
                   databases):
        api.register_blueprint(module.blp, url_prefix=prefix + module.blp.url_prefix)
    api.register_blueprint(automations.runs_blp, url_prefix=prefix + automations.runs_blp.url_prefix)
    chat_api.register(app, api, prefix)
    channel_api.register(app, api)
    api.register_blueprint(openai_compat.blp, url_prefix=app.config["OPENAI_PREFIX"])
    api.register_blueprint(openai_responses.blp, url_prefix=app.config["OPENAI_PREFIX"])
    register_dialect(app, app.config["OPENAI_PREFIX"], render_openai_error)
    anthropic_messages.register(app, api)
    flows.register(app, api)
    hooks.register(app, api)  # last: with an empty prefix its /<endpoint> must not shadow others
    api.document_later(lambda: _document_dialects(app, api))

    @app.get("/healthz")
    def healthz():
        """Process up and database reachable."""
        try:
            ping()
        except Exception as exc:  # noqa: BLE001 - report, don't crash
            return jsonify({"status": "error", "database": "unreachable",
                            "detail": type(exc).__name__}), 503
        return jsonify({"status": "ok", "database": "ok"})

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

"""chatport API: end users (external id + properties)."""
from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.common import Blueprint, PageArgs, Timestamp, admin_only, page, page_schema, user_label_field
from app.services import users

blp = Blueprint("users", __name__, url_prefix="/users", description="End users")
blp.before_request(admin_only)

_props = fields.Dict(keys=fields.Str(validate=validate.Length(1, 100)),
                     values=fields.Raw(allow_none=True))


class UserUpsert(Schema):
    external_id = user_label_field(required=True)
    properties = _props


class UserUpdate(Schema):
    properties = fields.Dict(required=True, keys=fields.Str(validate=validate.Length(1, 100)),
                             values=fields.Raw(allow_none=True))
    replace = fields.Bool(load_default=False,
                          metadata={"description": "Replace the properties instead of merging"})


class UserOut(Schema):
    id = fields.Str()
    external_id = fields.Str()
    properties = fields.Dict()
    created_at = Timestamp()
    updated_at = Timestamp()
    last_seen_at = Timestamp(allow_none=True)


UserPage = page_schema(UserOut, "UserPage")


@blp.route("")
class UserList(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, UserPage)
    def get(self, args):
        """List end users"""
        return page(*users.list_users(**args))

    @blp.arguments(UserUpsert)
    @blp.response(200, UserOut)
    def post(self, data):
        """Create an end user, or merge properties into an existing one"""
        row, _ = users.upsert_user(data["external_id"], data.get("properties"),
                                   max_properties=current_app.config["MAX_PROPERTIES"])
        return row


@blp.route("/<user_id>")
class UserItem(MethodView):
    @blp.response(200, UserOut)
    def get(self, user_id):
        """Show an end user (by id or external id)"""
        return users.get_user(user_id)

    @blp.arguments(UserUpdate)
    @blp.response(200, UserOut)
    def patch(self, data, user_id):
        """Update an end user's properties"""
        row = users.get_user(user_id)
        row, _ = users.upsert_user(row.external_id, data["properties"], merge=not data["replace"],
                                   max_properties=current_app.config["MAX_PROPERTIES"])
        return row

    @blp.response(204)
    def delete(self, user_id):
        """Delete an end user"""
        users.delete_user(user_id)

"""chatport API: account (instance name, version, counts, limits)."""
from flask import current_app
from marshmallow import Schema, fields

from app.api.common import Blueprint, admin_only
from app.services.account import account_info

blp = Blueprint("account", __name__, url_prefix="/account", description="Account")
blp.before_request(admin_only)


class AccountOut(Schema):
    instance = fields.Str()
    version = fields.Str()
    counts = fields.Dict(keys=fields.Str(), values=fields.Int())
    limits = fields.Dict(keys=fields.Str(), values=fields.Int())


@blp.route("", methods=["GET"])
@blp.response(200, AccountOut)
def get_account():
    """Instance name, version, counts and limits"""
    return account_info(current_app.config)

"""chatport API: the models this instance offers (any valid key; how and where each is served,
admin keys only)."""
from flask.views import MethodView
from marshmallow import Schema, fields

from app.api.common import Blueprint, any_key, current_key
from app.services import keys, models

blp = Blueprint("models", __name__, url_prefix="/models", description="Models")
blp.before_request(any_key)


class ModelOut(Schema):
    id = fields.Str(metadata={"description": "provider/model, the name bots and requests use"})
    kind = fields.Str(metadata={"description": "chat or embedding"})
    provider = fields.Str()
    model_id = fields.Str()
    plugin = fields.Str(metadata={"description": "The plugin that registered it (admin keys only)"})
    description = fields.Str(metadata={"description": "How and where it is served (admin keys only)"})
    aliases = fields.List(fields.Str(), metadata={"description": "Aliases resolving to it"})
    dimensions = fields.Int(metadata={"description": "Embedding models only"})


class ModelList(Schema):
    data = fields.List(fields.Nested(ModelOut))
    aliases = fields.Dict(keys=fields.Str(), values=fields.Str(),
                          metadata={"description": "Configured aliases: alias → model"})


@blp.route("")
class Models(MethodView):
    @blp.response(200, ModelList)
    def get(self):
        """List every registered model with its kind and aliases (not paginated)"""
        return {"data": models.list_models(configuration=keys.is_admin(current_key())),
                "aliases": models.aliases()}

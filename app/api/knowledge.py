"""chatport API: knowledge sources, rows, sync and search.

Admin keys manage sources and rows. Search is open to any key; a key scoped
to some bots searches only the sources attached to them.
"""
from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.common import Blueprint, PageArgs, Timestamp, any_key, current_key, name_field, page, page_schema
from app.services import keys, knowledge

blp = Blueprint("knowledge", __name__, url_prefix="/knowledge", description="Knowledge sources, rows and search")
blp.before_request(any_key)


def _admin():
    keys.require_admin(current_key())


_tags = fields.List(fields.Str(validate=validate.Length(1, 100)), validate=validate.Length(max=50))


class SourceCreate(Schema):
    name = name_field(required=True)
    type = fields.Str(load_default="MANUAL", validate=validate.OneOf(knowledge.TYPES))
    url = fields.Str(validate=validate.Length(1, 2000))
    text = fields.Str(validate=validate.Length(1, 5_000_000), metadata={"description": "Body of a TEXT source"})
    sync_interval = fields.Str(allow_none=True, validate=validate.OneOf(knowledge.INTERVALS))
    bot_ids = fields.List(fields.Str(validate=validate.Length(1, 64)), validate=validate.Length(max=100))


class SourceUpdate(Schema):
    name = name_field()
    sync_interval = fields.Str(allow_none=True, validate=validate.OneOf(knowledge.INTERVALS))
    bot_ids = fields.List(fields.Str(validate=validate.Length(1, 64)), validate=validate.Length(max=100))


class SourceOut(Schema):
    id = fields.Str()
    name = fields.Str()
    type = fields.Str()
    url = fields.Str(allow_none=True)
    state = fields.Str(attribute="status")
    error = fields.Str(allow_none=True)
    sync_interval = fields.Str(allow_none=True)
    last_sync = Timestamp(allow_none=True)
    next_sync_at = Timestamp(allow_none=True)
    bot_ids = fields.Function(knowledge.bots_of)
    created_at = Timestamp()
    updated_at = Timestamp()


class RowIn(Schema):
    name = fields.Str(load_default="", validate=validate.Length(max=500))
    content = fields.Str(required=True, validate=validate.Length(min=1))
    tags = _tags


class RowPatch(Schema):
    id = fields.Str(required=True, validate=validate.Length(1, 64))
    name = fields.Str(validate=validate.Length(max=500))
    content = fields.Str(validate=validate.Length(min=1))
    tags = _tags


class RowsCreate(Schema):
    rows = fields.List(fields.Nested(RowIn), required=True, validate=validate.Length(1, 1000))


class RowsUpdate(Schema):
    rows = fields.List(fields.Nested(RowPatch), required=True, validate=validate.Length(1, 1000))


class RowsDelete(Schema):
    ids = fields.List(fields.Str(validate=validate.Length(1, 64)), required=True, validate=validate.Length(1, 1000))


class RowOut(Schema):
    id = fields.Str()
    name = fields.Str()
    state = fields.Str(attribute="status")
    error = fields.Str(allow_none=True)
    tags = fields.Function(knowledge.row_tags)
    char_count = fields.Int()
    last_sync = Timestamp(allow_none=True)
    created_at = Timestamp()


class RowWithContent(RowOut):
    content = fields.Str()


class Done(Schema):
    count = fields.Int()


class SearchIn(Schema):
    query = fields.Str(required=True, validate=validate.Length(1, 2000))
    source_ids = fields.List(fields.Str(validate=validate.Length(1, 200)), load_default=list)
    tags = fields.List(fields.Str(validate=validate.Length(1, 100)), load_default=list)
    top_k = fields.Int(load_default=5, validate=validate.Range(1, 50))


class Passage(Schema):
    source_id = fields.Str()
    row_id = fields.Str()
    chunk_id = fields.Str()
    name = fields.Str()
    content = fields.Str()
    score = fields.Float()


class SearchOut(Schema):
    data = fields.List(fields.Nested(Passage))


SourcePage = page_schema(SourceOut, "SourcePage")
RowPage = page_schema(RowOut, "RowPage")


@blp.route("/sources")
class Sources(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, SourcePage)
    def get(self, args):
        """List knowledge sources"""
        _admin()
        return page(*knowledge.list_sources(**args))

    @blp.arguments(SourceCreate)
    @blp.response(201, SourceOut)
    def post(self, data):
        """Create a source (MANUAL rows, one TEXT body, or a URL) attached to bots, all or nothing
        (429 when the text does not fit the storage)"""
        _admin()
        return knowledge.create_source(**data, max_row_chars=current_app.config["KNOWLEDGE_MAX_ROW_CHARS"],
                                       quota=current_app.config["KNOWLEDGE_MAX_CHARS"])


@blp.route("/sources/<source_id>")
class SourceItem(MethodView):
    @blp.response(200, SourceOut)
    def get(self, source_id):
        """Show a source and its sync state"""
        _admin()
        return knowledge.get_source(source_id)

    @blp.arguments(SourceUpdate)
    @blp.response(200, SourceOut)
    def patch(self, data, source_id):
        """Rename, change the sync interval or the bots a source is attached to"""
        _admin()
        source = knowledge.get_source(source_id)
        if "bot_ids" in data:
            knowledge.set_bots(source, data.pop("bot_ids"))
        return knowledge.update_source(source, **data)

    @blp.response(204)
    def delete(self, source_id):
        """Delete a source with its rows and index entries"""
        _admin()
        knowledge.delete_source(knowledge.get_source(source_id))


@blp.route("/sources/<source_id>/sync", methods=["POST"])
@blp.response(202, SourceOut)
def sync(source_id):
    """Sync in the background (429 while a sync of this source runs)"""
    _admin()
    source = knowledge.get_source(source_id)
    knowledge.sync_in_background(source.id, knowledge.fetch_options(current_app.config))
    return knowledge.get_source(source_id)


@blp.route("/sources/<source_id>/rows")
class Rows(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, RowPage)
    def get(self, args, source_id):
        """List a source's rows"""
        _admin()
        return page(*knowledge.list_rows(knowledge.get_source(source_id), **args))

    @blp.arguments(RowsCreate)
    @blp.response(201, Done)
    def post(self, data, source_id):
        """Add rows, all or nothing (429 when storage is exhausted)"""
        _admin()
        rows = knowledge.add_rows(knowledge.get_source(source_id), data["rows"],
                                  max_row_chars=current_app.config["KNOWLEDGE_MAX_ROW_CHARS"],
                                  quota=current_app.config["KNOWLEDGE_MAX_CHARS"])
        return {"count": len(rows)}

    @blp.arguments(RowsUpdate)
    @blp.response(200, Done)
    def patch(self, data, source_id):
        """Update rows by id, all or nothing"""
        _admin()
        rows = knowledge.update_rows(knowledge.get_source(source_id), data["rows"],
                                     max_row_chars=current_app.config["KNOWLEDGE_MAX_ROW_CHARS"],
                                     quota=current_app.config["KNOWLEDGE_MAX_CHARS"])
        return {"count": len(rows)}

    @blp.arguments(RowsDelete)
    @blp.response(200, Done)
    def delete(self, data, source_id):
        """Delete rows by id, all or nothing"""
        _admin()
        knowledge.delete_rows(knowledge.get_source(source_id), data["ids"])
        return {"count": len(data["ids"])}


@blp.route("/sources/<source_id>/rows/<row_id>", methods=["GET"])
@blp.response(200, RowWithContent)
def get_row(source_id, row_id):
    """Show a row with its content"""
    _admin()
    return knowledge.get_row(knowledge.get_source(source_id), row_id)


@blp.route("/search", methods=["POST"])
@blp.arguments(SearchIn)
@blp.response(200, SearchOut)
def search(data):
    """Ranked passages for a query, filtered by sources (ids or names) and tags: what a bot will see"""
    return {"data": knowledge.search_for(data["query"], source_refs=data["source_ids"], tag_names=data["tags"],
                                         top_k=data["top_k"], bot_scope=keys.bot_scope(current_key()))}

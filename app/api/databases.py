"""chatport API: the Database API — tables with typed fields and their records (docs/databases.md).

Admin keys create, change and delete tables. Any key reads tables and reads and writes their
records; a key scoped to some bots sees only the tables attached to them (any other table is
the same 404 as one that does not exist). Rate-limit category ``database``.
"""
from flask import current_app, request
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.common import (
    EMPTY,
    Blueprint,
    PageArgs,
    Timestamp,
    any_key,
    current_key,
    name_field,
    page,
    page_limit_field,
    page_schema,
    read_json,
)
from app.errors import BadRequest
from app.services import databases, keys

blp = Blueprint("databases", __name__, url_prefix="/databases",
                description="Database API: structured tables (typed fields) and records that bots answer from")
blp.before_request(any_key)


def _admin():
    keys.require_admin(current_key())


def _scope():
    return keys.bot_scope(current_key())


def _table(table_id):
    return databases.get_table(table_id, _scope())


_bot_ids = fields.List(fields.Str(validate=validate.Length(1, 64)), validate=validate.Length(max=100))


class FieldSpec(Schema):
    name = fields.Str(required=True, validate=validate.Regexp(databases.FIELD_NAME.pattern),
                      metadata={"description": "Letters, digits and _, not starting with a digit (1..64)"})
    type = fields.Str(load_default="text", validate=validate.OneOf(databases.TYPES))
    searchable = fields.Bool(load_default=False,
                             metadata={"description": "A bot's turn matches the question against this field"})


class TableCreate(Schema):
    name = name_field(required=True)
    description = fields.Str(load_default="", validate=validate.Length(max=2000))
    fields_ = fields.List(fields.Nested(FieldSpec), data_key="fields", required=True,
                          metadata={"description": "At most DATABASE_MAX_FIELDS"})
    bot_ids = _bot_ids


class TableUpdate(Schema):
    name = name_field()
    description = fields.Str(validate=validate.Length(max=2000))
    fields_ = fields.List(fields.Nested(FieldSpec), data_key="fields", metadata={
        "description": "The whole new field list: adding fields is free; removing a field records use, or "
                       "changing a type a held value does not convert to, is a 400 naming the field"})
    bot_ids = _bot_ids


class FieldOut(Schema):
    name = fields.Str()
    type = fields.Str()
    searchable = fields.Bool()


class TableOut(Schema):
    id = fields.Str()
    name = fields.Str()
    description = fields.Str()
    fields_ = fields.List(fields.Nested(FieldOut), attribute="spec", data_key="fields")
    bot_ids = fields.Function(databases.bots_of)
    created_at = Timestamp()
    updated_at = Timestamp()


class RecordIn(Schema):
    values = fields.Dict(keys=fields.Str(), required=True,
                         metadata={"description": "{field name: value}; null or absent: no value. Dates ISO 8601"})


class RecordPatch(Schema):
    values = fields.Dict(keys=fields.Str(), required=True,
                         metadata={"description": "Merged into the record's values; null removes a value"})


class RecordOut(Schema):
    id = fields.Str()
    table_id = fields.Str()
    values = fields.Dict()
    created_at = Timestamp()
    updated_at = Timestamp()


class RecordArgs(Schema):
    limit = page_limit_field()
    cursor = fields.Str(load_default=None, validate=validate.Length(max=64),
                        metadata={"description": "The `last` id of the previous page"})
    filter = fields.List(fields.Str(validate=validate.Length(1, 1000)), load_default=list, metadata={
        "description": "Repeatable `field:op:value`, op eq ne gt gte lt lte contains (text); `field:value` is eq"})
    sort = fields.Str(load_default=None, validate=validate.Length(1, 65),
                      metadata={"description": "`field` or `-field` (descending); records without a value last"})


class Rejected(Schema):
    line = fields.Int(metadata={"description": "JSON: the array position from 1; CSV: the file line (header 1)"})
    error = fields.Str()


class ImportReport(Schema):
    created = fields.Int()
    rejected = fields.List(fields.Nested(Rejected))


TablePage = page_schema(TableOut, "TablePage")
RecordPage = page_schema(RecordOut, "RecordPage")


def _config():
    return current_app.config


@blp.route("/tables")
class Tables(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, TablePage)
    def get(self, args):
        """List tables (a scoped key: those of its bots)"""
        return page(*databases.list_tables(bot_scope=_scope(), **args))

    @blp.arguments(TableCreate)
    @blp.response(201, TableOut)
    def post(self, data):
        """Create a table with its fields, attached to bots (admin)"""
        _admin()
        return databases.create_table(name=data["name"], description=data["description"], fields=data["fields_"],
                                      bot_ids=data.get("bot_ids", ()), config=_config())


@blp.route("/tables/<table_id>")
class TableItem(MethodView):
    @blp.response(200, TableOut)
    def get(self, table_id):
        """Show a table and its fields"""
        return _table(table_id)

    @blp.arguments(TableUpdate)
    @blp.response(200, TableOut)
    def patch(self, data, table_id):
        """Rename, describe, change the fields of or re-attach a table, all or nothing (admin)"""
        _admin()
        return databases.update_table(_table(table_id), config=_config(), name=data.get("name"),
                                      description=data.get("description"), fields=data.get("fields_"),
                                      bot_ids=data.get("bot_ids"))

    @blp.response(204)
    def delete(self, table_id):
        """Delete a table with its records (admin)"""
        _admin()
        databases.delete_table(_table(table_id))


@blp.route("/tables/<table_id>/records")
class Records(MethodView):
    @blp.arguments(RecordArgs, location="query")
    @blp.response(200, RecordPage)
    def get(self, args, table_id):
        """List records: filters, sorting, cursor pagination"""
        return page(*databases.list_records(_table(table_id), filters=args["filter"], sort=args["sort"],
                                            limit=args["limit"], cursor=args["cursor"]))

    @blp.arguments(RecordIn)
    @blp.response(201, RecordOut)
    def post(self, data, table_id):
        """Create a record (values checked against the field types)"""
        return databases.create_record(_table(table_id), data["values"], _config())


@blp.route("/tables/<table_id>/records/<record_id>")
class RecordItem(MethodView):
    @blp.response(200, RecordOut)
    def get(self, table_id, record_id):
        """Show a record"""
        return databases.get_record(_table(table_id), record_id)

    @blp.arguments(RecordPatch)
    @blp.response(200, RecordOut)
    def patch(self, data, table_id, record_id):
        """Change some of a record's values (null removes one)"""
        table = _table(table_id)
        return databases.update_record(table, databases.get_record(table, record_id), data["values"], _config())

    @blp.arguments(RecordIn)
    @blp.response(200, RecordOut)
    def put(self, data, table_id, record_id):
        """Replace a record's values"""
        table = _table(table_id)
        return databases.update_record(table, databases.get_record(table, record_id), data["values"], _config(),
                                       replace=True)

    @blp.response(204)
    def delete(self, table_id, record_id):
        """Delete a record"""
        table = _table(table_id)
        databases.delete_record(databases.get_record(table, record_id))


_IMPORT_BODY = {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "items": {"type": "object", "additionalProperties": True},
                                    "description": "Records: objects of values (or {\"values\": {...}})"}},
    "text/csv": {"schema": {"type": "string", "description": "Header: field names; empty cell: no value"}}}}


@blp.route("/tables/<table_id>/import", methods=["POST"])
@blp.doc(requestBody=_IMPORT_BODY)
@blp.response(200, ImportReport)
def import_records(table_id):
    """Import records from a JSON array or a CSV file: the good lines are created, the others
    reported (at most DATABASE_IMPORT_MAX_LINES lines, DATABASE_IMPORT_MAX_BYTES bytes)"""
    table = _table(table_id)
    request.max_content_length = int(_config()["DATABASE_IMPORT_MAX_BYTES"])
    if request.mimetype in ("text/csv", "text/plain"):
        try:
            text = request.get_data(cache=True).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequest("the CSV must be UTF-8") from None
        return databases.import_records(table, config=_config(), csv_text=text)
    items = read_json()
    if items is EMPTY:
        raise BadRequest("the body must be a JSON array of records, or a CSV (Content-Type: text/csv)")
    return databases.import_records(table, config=_config(), items=items)

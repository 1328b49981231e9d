"""The Database API's rules: tables with typed fields, their records, and the records a bot's
turn is given (docs/databases.md).

- A table has a name, a description, ``fields`` (``[{"name", "type", "searchable"}]``, types
  ``text``, ``number``, ``boolean``, ``date``) and the bots it is attached to. Adding fields is
  always allowed; removing a field that records use, or changing a field's type when a value
  does not convert, is a 400 naming the field (nothing changed).
- A record's ``values`` is ``{field name: value}``; a value is checked against its field's type
  (dates are ISO 8601: ``2026-03-01`` or ``2026-03-01T09:30:00Z``, stored normalised so they
  compare as text); null or absent means no value.
- Bounds come from the configuration: ``DATABASE_MAX_TABLES``, ``DATABASE_MAX_FIELDS``,
  ``DATABASE_MAX_RECORDS`` (per table), ``DATABASE_MAX_RECORD_BYTES`` (a record's values as
  JSON), ``DATABASE_IMPORT_MAX_LINES``.
- Scope: ``bot_scope`` None sees every table; a list of bot ids sees only the tables attached
  to one of them, and any other table is the same NotFound as one that does not exist.
"""
import csv
import io
import json
import math
import re
from datetime import date, datetime, timezone

from peewee import Expression, fn

from app import clock
from app.errors import BadRequest, NotFound
from app.ids import new_id
from app.services import bots
from app.storage import prepared, record_index
from app.storage.db import db, is_sqlite
from app.storage.models import BotTable, DataRecord, DataTable
from app.storage.pagination import page_size, paginate

TYPES = ("text", "number", "boolean", "date")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "contains")
MAX_FILTERS = 20
BATCH = 500
WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to say which record a question is about.
STOP_WORDS = set("a an the is are was were be of to in on at for and or what who how why when where which "
                 "do does did can could i you it this that with about tell me my your our its".split())
MAX_QUERY_WORDS = 12
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


# ---------------------------------------------------------------- values


class _Invalid(ValueError):
    pass


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid("must be a finite number")
    return value


def _date(value):
    if not isinstance(value, str):
        raise _Invalid("must be an ISO 8601 date (YYYY-MM-DD) or date-time")
    text = value.strip()
    if len(text) == 10:
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid("must be an ISO 8601 date (YYYY-MM-DD) or date-time") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat() + "Z"


def _text(value):
    if not isinstance(value, str):
        raise _Invalid("must be a string")
    if "\x00" in value:
        raise _Invalid("must not contain NUL characters")
    return value


def check_value(value, type_):
    """``value`` as stored for a field of ``type_`` (None stays None). Raises _Invalid."""
    if value is None:
        return None
    if type_ == "text":
        return _text(value)
    if type_ == "number":
        return _number(value)
    if type_ == "boolean":
        if not isinstance(value, bool):
            raise _Invalid("must be true or false")
        return value
    return _date(value)


def parse_text(text, type_):
    """A value of ``type_`` from its text form (a CSV cell, a filter, a type change); the empty
    string is no value. Raises _Invalid."""
    if text is None or text == "":
        return None
    if type_ == "text":
        return _text(text)
    if type_ == "number":
        try:
            number = int(text) if re.fullmatch(r"[+-]?\d{1,30}", text.strip()) else float(text)
        except ValueError:
            raise _Invalid("must be a number") from None
        return _number(number)
    if type_ == "boolean":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _Invalid("must be true or false")
    return _date(text)


def text_form(value):
    """A stored value as text (how a record is rendered for a model, and the start of a type change)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------- tables


def _check_fields(fields, config):
    """The normalised field list. Raises BadRequest naming the problem."""
    if not isinstance(fields, list):
        raise BadRequest("fields must be a list", fields={"fields": "not a list"})
    top = int(config["DATABASE_MAX_FIELDS"])
    if len(fields) > top:
        raise BadRequest(f"a table has at most {top} fields (DATABASE_MAX_FIELDS)", fields={"fields": "too many"})
    out, seen = [], set()
    for i, f in enumerate(fields):
        if not isinstance(f, dict):
            raise BadRequest(f"fields[{i}] must be an object", fields={f"fields.{i}": "not an object"})
        name, type_ = f.get("name"), f.get("type", "text")
        if not isinstance(name, str) or not FIELD_NAME.match(name):
            raise BadRequest(f"fields[{i}].name must be 1 to 64 letters, digits or _ (not starting with a digit)",
                             fields={f"fields.{i}.name": "invalid"})
        if name.lower() in seen:
            raise BadRequest(f"field {name} is named twice", fields={f"fields.{i}.name": "duplicate"})
        if type_ not in TYPES:
            raise BadRequest(f"field {name}: type must be one of {', '.join(TYPES)}",
                             fields={f"fields.{i}.type": "invalid"})
        seen.add(name.lower())
        out.append({"name": name, "type": type_, "searchable": bool(f.get("searchable", False))})
    return out


def _attach(table, bot_ids):
    bot_ids = bots.existing_ids(bot_ids)
    BotTable.delete().where(BotTable.table == table).execute()
    for bot_id in bot_ids:
        BotTable.insert(bot=bot_id, table=table).on_conflict_ignore().execute()


def create_table(*, name, fields, config, description="", bot_ids=()):
    """Create a table attached to ``bot_ids``, all or nothing. Raises BadRequest."""
    spec = _check_fields(fields, config)
    with db.atomic():
        top = int(config["DATABASE_MAX_TABLES"])
        if DataTable.select().count() >= top:
            raise BadRequest(f"this instance already has {top} tables (DATABASE_MAX_TABLES)",
                             fields={"name": "too many tables"})
        table = DataTable.create(name=name, description=description or "", spec=spec)
        _attach(table, bot_ids)
    return table


def tables_query(bot_scope=None):
    query = DataTable.select()
    if bot_scope is not None:
        query = query.where(DataTable.id.in_(BotTable.select(BotTable.table).where(BotTable.bot.in_(bot_scope))))
    return query


def list_tables(*, bot_scope=None, limit=None, cursor=None):
    """One page of tables (those of ``bot_scope``'s bots), oldest first."""
    return paginate(tables_query(bot_scope), DataTable, limit=limit, cursor=cursor)


def get_table(table_id, bot_scope=None):
    """Raises NotFound (also for a table outside ``bot_scope``)."""
    table = tables_query(bot_scope).where(DataTable.id == table_id).first()
    if table is None:
        raise NotFound(f"Table {table_id} not found")
    return table


def bots_of(table):
    return [link.bot_id for link in BotTable.select(BotTable.bot).where(BotTable.table == table)
            .order_by(BotTable.id)]


def _value_expr(name, type_):
    """SQL for record field ``name``'s value, typed for comparison and sorting."""
    if is_sqlite():
        return fn.json_extract(DataRecord.values, f'$."{name}"')
    text = Expression(DataRecord.values.cast("jsonb"), "->>", name)
    if type_ == "number":
        return text.cast("numeric")  # exact: integers beyond 2**53 stay distinct
    if type_ == "boolean":
        return text.cast("boolean")
    return text


def update_table(table, *, config, name=None, description=None, fields=None, bot_ids=None):
    """Rename, describe, change the fields of, or re-attach a table, all or nothing.

    A new field list that drops a field some record holds a value of, or changes a field's type
    when a held value does not convert, is a BadRequest naming the field. Raises BadRequest."""
    with db.atomic():
        if fields is not None:
            new_spec = _check_fields(fields, config)
            _change_fields(table, new_spec)
            table.spec = new_spec
        if name is not None:
            table.name = name
        if description is not None:
            table.description = description
        if bot_ids is not None:
            _attach(table, bot_ids)
        table.updated_at = clock.now()
        table.save()
    return table


def _change_fields(table, new_spec):
    """Check a field list change against the records and rewrite them when types or searchable
    fields change. Raises BadRequest naming the field (the caller's transaction rolls back)."""
    old = {f["name"]: f for f in table.spec}
    new = {f["name"]: f for f in new_spec}
    records = DataRecord.select().where(DataRecord.table == table)
    for name in old:
        if name not in new:
            held = record_index.held(table.id, name)
            if held:
                raise BadRequest(f"field {name} holds values in {held} record(s): removing it would lose them",
                                 fields={name: "in use"})
    retyped = {n for n in new if n in old and new[n]["type"] != old[n]["type"]}
    search_changed = ({n for n, f in new.items() if f["searchable"]}
                      != {n for n, f in old.items() if f["searchable"]}) or retyped
    if not retyped and not search_changed:
        return
    changed = []
    for record in records.order_by(DataRecord.id).iterator():
        values = dict(record.values)
        for name in retyped:
            if values.get(name) is None:
                continue
            try:
                values[name] = parse_text(text_form(values[name]), new[name]["type"])
            except _Invalid as exc:
                raise BadRequest(f"field {name} cannot become {new[name]['type']}: record {record.id} holds "
                                 f"{json.dumps(values[name])}, which {exc}", fields={name: "incompatible type"})
        record.values, record.search_text = values, _search_text(values, new_spec)
        changed.append(record)
    types = {f["name"]: f["type"] for f in new_spec}
    for start in range(0, len(changed), BATCH):
        part = changed[start:start + BATCH]
        record_index.remove([r.id for r in part])
        DataRecord.bulk_update(part, fields=[DataRecord.values, DataRecord.search_text])
        record_index.add([_row(r) for r in part], types)


def delete_table(table):
    """Delete a table with its records and bot links."""
    with db.atomic():
        clear_records(table)
        table.delete_instance()  # bot links cascade


def clear_records(table):
    """Delete every record of a table and their index entries (the table and its bot links stay)."""
    with db.atomic():
        record_index.remove_table(table.id)
        DataRecord.delete().where(DataRecord.table == table).execute()


def set_tables_of_bot(bot_id, table_ids):
    """Make ``bot_id`` answer from exactly these tables (one transaction). Raises BadRequest
    naming unknown table ids (nothing changed)."""
    table_ids = list(dict.fromkeys(table_ids or []))
    with db.atomic():
        found = ({t.id for t in DataTable.select(DataTable.id).where(DataTable.id.in_(table_ids))}
                 if table_ids else set())
        missing = [t for t in table_ids if t not in found]
        if missing:
            raise BadRequest(f"unknown table(s): {', '.join(missing)}", fields={"table_ids": "unknown"})
        BotTable.delete().where((BotTable.bot == bot_id) & BotTable.table.not_in(table_ids)).execute()
        for table_id in table_ids:
            BotTable.insert(bot=bot_id, table=table_id).on_conflict_ignore().execute()


# ---------------------------------------------------------------- records


def _types(table):
    return {f["name"]: f["type"] for f in table.spec}


def _row(record):
    """A record as the row dict ``record_index.add`` takes."""
    return {"id": record.id, "table": record.table_id, "values": record.values,
            "search_text": record.search_text, "seq": record.seq}


def _search_text(values, spec):
    return " ".join(text_form(values[f["name"]]).lower() for f in spec
                    if f["searchable"] and values.get(f["name"]) is not None)


def _check_values(table, values, config, *, from_text=False):
    """Checked values (no nulls kept). Raises _Invalid with a message naming the field."""
    if isinstance(values, _Unreadable):
        raise _Invalid(str(values))
    if not isinstance(values, dict):
        raise _Invalid("values must be an object of field names")
    types = _types(table)
    unknown = [k for k in values if k not in types]
    if unknown:
        raise _Invalid(f"unknown field(s): {', '.join(map(str, unknown[:5]))}")
    out = {}
    for name, type_ in types.items():
        if name not in values:
            continue
        try:
            value = parse_text(values[name], type_) if from_text else check_value(values[name], type_)
        except _Invalid as exc:
            raise _Invalid(f"field {name} {exc}") from None
        if value is not None:
            out[name] = value
    size, top = len(json.dumps(out, separators=(",", ":")).encode()), int(config["DATABASE_MAX_RECORD_BYTES"])
    if size > top:
        raise _Invalid(f"the record's values take {size} bytes, more than {top} (DATABASE_MAX_RECORD_BYTES)")
    return out


def _checked(table, values, config):
    try:
        return _check_values(table, values, config)
    except _Invalid as exc:
        raise BadRequest(str(exc), fields={"values": str(exc)}) from None


def _room(table, config):
    """How many more records ``table`` may hold."""
    return int(config["DATABASE_MAX_RECORDS"]) - DataRecord.select().where(DataRecord.table == table).count()


def _full(config):
    top = int(config["DATABASE_MAX_RECORDS"])
    return f"the table already holds {top} records (DATABASE_MAX_RECORDS)"


def create_record(table, values, config):
    """Raises BadRequest (a value, the size, or a full table)."""
    values = _checked(table, values, config)
    with db.atomic():
        if _room(table, config) <= 0:
            raise BadRequest(_full(config), fields={"values": "table full"})
        row = {"id": new_id(), "table": table.id, "values": values, "search_text": _search_text(values, table.spec)}
        record_index.number([row])
        record = DataRecord.create(**row)
        record_index.add([row], _types(table))
    return record


def get_record(table, record_id):
    """Raises NotFound."""
    record = DataRecord.get_or_none((DataRecord.table == table) & (DataRecord.id == record_id))
    if record is None:
        raise NotFound(f"Record {record_id} not found")
    return record


def update_record(table, record, values, config, *, replace=False):
    """Change a record's values: merged into the old ones (null removes a value), or all of them
    with ``replace``. Raises BadRequest."""
    merged = dict(values) if replace else {**record.values, **values}
    merged = _checked(table, merged, config)
    record.values, record.search_text, record.updated_at = merged, _search_text(merged, table.spec), clock.now()
    with db.atomic():
        record_index.remove([record.id])
        record.save()
        record_index.add([_row(record)], _types(table))
    return record


def delete_record(record):
    with db.atomic():
        record_index.remove([record.id])
        record.delete_instance()


def _parse_filter(table, text):
    """``field:op:value`` as a peewee condition. Raises BadRequest naming the filter."""
    types = _types(table)
    name, _, rest = text.partition(":")
    op, _, raw = rest.partition(":")
    if not rest:  # field:value means equality
        op, raw = "eq", ""
    elif op not in OPERATORS:
        op, raw = "eq", rest
    if name not in types:
        raise BadRequest(f"filter {text!r}: unknown field {name}", fields={"filter": "unknown field"})
    type_ = types[name]
    if op == "contains" and type_ != "text":
        raise BadRequest(f"filter {text!r}: contains applies to text fields", fields={"filter": "invalid"})
    if op in ("gt", "gte", "lt", "lte") and type_ == "boolean":
        raise BadRequest(f"filter {text!r}: ranges apply to numbers, dates and text", fields={"filter": "invalid"})
    expr = _value_expr(name, type_)
    if op == "contains":
        lowered = raw.lower()
        return (fn.instr(fn.lower(expr), lowered) > 0) if is_sqlite() else (fn.strpos(fn.lower(expr), lowered) > 0)
    try:
        value = parse_text(raw, type_)
    except _Invalid as exc:
        raise BadRequest(f"filter {text!r}: the value {exc}", fields={"filter": "invalid value"}) from None
    if value is None:  # no value: held or not
        held = record_index.candidates(table.id, name, type_, "eq", None)
        return DataRecord.id.not_in(held) if op == "eq" else DataRecord.id.in_(held)
    exact = value
    if type_ == "boolean" and is_sqlite():
        exact = int(value)  # json_extract reads JSON true as 1
    exact = {"eq": expr == exact, "ne": (expr != exact) | expr.is_null(), "gt": expr > exact,
             "gte": expr >= exact, "lt": expr < exact, "lte": expr <= exact}[op]
    if op == "ne":  # most records: a scan is as good as an index
        return exact
    # the value index finds a superset of the matches; the record's own value decides
    return DataRecord.id.in_(record_index.candidates(table.id, name, type_, op, value)) & exact


def records_query(table, filters=()):
    if len(filters) > MAX_FILTERS:
        raise BadRequest(f"at most {MAX_FILTERS} filters", fields={"filter": "too many"})
    query = DataRecord.select().where(DataRecord.table == table)
    for text in filters:
        query = query.where(_parse_filter(table, text))
    return query


def list_records(table, *, filters=(), sort=None, limit=None, cursor=None):
    """One page of records matching every filter (``field:op:value``, ops eq ne gt gte lt lte
    contains; ``field:value`` is eq), sorted by ``sort`` (``field`` or ``-field``; records without
    a value last; ties by id) or by id: ``(items, {"total", "last"})``. The cursor is the ``last``
    record id of the previous page. Raises BadRequest."""
    limit = page_size(limit)
    query = records_query(table, filters)
    total = query.count()
    order = [DataRecord.id]
    anchor = None
    if cursor:
        anchor = query.clone().where(DataRecord.id == cursor).first()
        if anchor is None:
            raise BadRequest("cursor is not an item of this list", fields={"cursor": "unknown"})
    if sort:
        descending, name = sort.startswith("-"), sort.lstrip("-")
        types = _types(table)
        if name not in types:
            raise BadRequest(f"sort: unknown field {name}", fields={"sort": "unknown field"})
        expr = _value_expr(name, types[name])
        order = [expr.is_null(), expr.desc() if descending else expr.asc(), DataRecord.id]
        if anchor is not None:
            held = anchor.values.get(name)
            if held is None:
                query = query.where(expr.is_null() & (DataRecord.id > anchor.id))
            else:
                if types[name] == "boolean" and is_sqlite():
                    held = int(held)
                beyond = (expr < held) if descending else (expr > held)
                query = query.where(beyond | ((expr == held) & (DataRecord.id > anchor.id)) | expr.is_null())
    elif anchor is not None:
        query = query.where(DataRecord.id > anchor.id)
    items = list(query.order_by(*order).limit(limit))
    return items, {"total": total, "last": items[-1].id if items else None}


def import_records(table, *, config, items=None, csv_text=None):
    """Create the good records of a JSON array (``items``: objects of values) or a CSV text
    (header: field names; empty cell: no value) and report the others:
    ``{"created": n, "rejected": [{"line", "error"}]}``. Lines are the array's positions from 1,
    or the CSV file's lines (the header is line 1). Lines past the table's room are rejected.
    Raises BadRequest for an import that is not readable at all or has too many lines."""
    top = int(config["DATABASE_IMPORT_MAX_LINES"])
    if csv_text is not None:
        lines = _csv_lines(table, csv_text, top)
        from_text = True
    else:
        if not isinstance(items, list):
            raise BadRequest("the body must be a JSON array of records (objects of values)")
        if len(items) > top:
            raise BadRequest(f"an import has at most {top} lines (DATABASE_IMPORT_MAX_LINES)")
        lines = [(i, item.get("values", item) if isinstance(item, dict) and set(item) == {"values"} else item)
                 for i, item in enumerate(items, start=1)]
        from_text = False
    rejected, good = [], []
    for line, values in lines:
        try:
            good.append((line, _check_values(table, values, config, from_text=from_text)))
        except _Invalid as exc:
            rejected.append({"line": line, "error": str(exc)})
    created = 0
    with db.atomic():
        room = max(0, _room(table, config))
        if len(good) > room:
            rejected += [{"line": line, "error": _full(config)} for line, _ in good[room:]]
            good = good[:room]
        now = clock.now()
        rows = [{"id": new_id(), "table": table.id, "values": values,
                 "search_text": _search_text(values, table.spec), "created_at": now, "updated_at": now}
                for _, values in good]
        record_index.number(rows)
        for start in range(0, len(rows), BATCH):
            DataRecord.insert_many(rows[start:start + BATCH]).execute()
        record_index.add(rows, _types(table))
        created = len(rows)
    rejected.sort(key=lambda r: r["line"])
    return {"created": created, "rejected": rejected}


def _csv_lines(table, text, top):
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise BadRequest("the CSV has no header line (field names)") from None
    except csv.Error as exc:
        raise BadRequest(f"CSV line 1: {exc}") from None
    names = {f["name"] for f in table.spec}
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in names]
    if unknown:
        raise BadRequest(f"CSV header: unknown field(s) {', '.join(unknown[:5])}", fields={"header": "unknown field"})
    if len(set(header)) != len(header):
        raise BadRequest("CSV header: a field is named twice", fields={"header": "duplicate"})
    out = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # the rest of the file cannot be read: report it on the line
            out.append((reader.line_num, _Unreadable(str(exc))))
            break
        if not cells:
            continue  # a blank line
        if len(out) >= top:
            raise BadRequest(f"an import has at most {top} lines (DATABASE_IMPORT_MAX_LINES)")
        if len(cells) != len(header):
            out.append((reader.line_num, _Unreadable(f"{len(cells)} cells, the header has {len(header)}")))
            continue
        out.append((reader.line_num, dict(zip(header, cells))))
    return out


class _Unreadable(str):
    """A CSV line that could not be split into the header's cells (rejected with this message)."""


def record_text(record, table):
    """A record as text for a model: ``store: Lyon; opening hours: 9-18`` (fields in order)."""
    return "; ".join(f"{f['name'].replace('_', ' ')}: {text_form(record.values[f['name']])}"
                     for f in table.spec if record.values.get(f["name"]) is not None)


# ---------------------------------------------------------------- a bot's turn


def table_ids_of_bot(bot):
    """Ids of the tables attached to ``bot`` (runs on every turn of a bot with knowledge or
    tables: SQL built once)."""
    bot_id = bot.id if hasattr(bot, "id") else bot
    rows = prepared.select(BotTable, "tables_of_bot",
                           lambda: BotTable.select(BotTable.table).where(BotTable.bot == "?"), bot_id)
    return [row.table_id for row in rows]


def query_words(query):
    out = []
    for word in WORD.findall((query or "").lower()):
        if word not in STOP_WORDS and word not in out:
            out.append(word)
        if len(out) >= MAX_QUERY_WORDS:
            break
    return out


def passages_for(table_ids, query, top_k):
    """The records of ``table_ids`` whose searchable fields best match the words of ``query``
    (the full-text index: BM25 on SQLite, ``ts_rank`` on PostgreSQL), as passages:
    ``[{"table_id", "record_id", "name" (the table's), "content", "score"}]``, best first."""
    words = query_words(query)
    if not table_ids or not words or top_k <= 0:
        return []
    hits = record_index.search(list(table_ids), words, int(top_k))
    if not hits:
        return []
    records = {r.id: r for r in DataRecord.select().where(DataRecord.id.in_([h[0] for h in hits]))}
    tables = {t.id: t for t in DataTable.select().where(DataTable.id.in_({r.table_id for r in records.values()}))}
    return [{"table_id": r.table_id, "record_id": r.id, "name": tables[r.table_id].name,
             "content": record_text(r, tables[r.table_id]), "score": score}
            for r, score in ((records.get(i), score) for i, score in hits) if r is not None]

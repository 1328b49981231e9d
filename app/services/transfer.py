"""Export and import of an instance's configuration: bots, knowledge sources with their rows,
Database API tables with their records, automations, as one JSON document (``chatport export``
/ ``chatport import``).

The document (``FORMAT``, ``VERSION`` 2)::

    {"format": "chatport-export", "version": 2, "exported_at": "2026-12-02T07:00:00Z",
     "bots": [{"name", "model", "instructions", "temperature", "max_tokens", "greeting",
               "knowledge", "allowed_models", "enabled", "sources": [source names],
               "tables": [table names]}],
     "knowledge_sources": [{"name", "type", "url", "sync_interval",
                            "rows": [{"name", "content", "tags": [names]}]}],
     "tables": [{"name", "description", "fields": [{"name", "type", "searchable"}],
                 "records": [{field name: value}]}],
     "automations": [{"name", "description", "endpoint", "api_enabled", "inputs", "returns",
                      "steps": [{"name", "prompt", "model", "options", "output", "result_type",
                                 "context"}]}]}

Versions: 2 added ``tables`` and the bots' ``tables``. An export is stamped 2 so that a
chatport reading only version 1, which ignores keys it does not know, refuses it ("newer than
this chatport reads") instead of importing it without its tables and saying it succeeded.
Version 1 documents (no tables) are still read: a bot item without ``tables`` creates a bot
attached to no table, or leaves the table links of the bot it replaces as they are (the
document says nothing about them); ``"tables": []`` detaches them.

Everything refers to everything else by name, since ids are the instance's own: a bot's
``sources`` and ``tables`` name sources and tables of the document, a step's ``context``
names sources and tags (ids of the exporting instance are turned into names). Names are
unique within each list.

Import creates everything with new ids, in one transaction, all or nothing: a name that
already exists on the instance is a Conflict unless ``replace``, which overwrites that
bot, source (its rows replaced), table (its fields and records replaced) or automation in
place (its id, and what refers to it, kept: a table's bot links too). Imported rows and
records are indexed in the same transaction, so they are searchable and filterable at once.
A table's records go through the Database API's rules (``databases.import_records``): values
checked against the fields' types, the bounds ``DATABASE_MAX_TABLES``, ``DATABASE_MAX_FIELDS``,
``DATABASE_MAX_RECORDS`` and ``DATABASE_MAX_RECORD_BYTES``; one record refused refuses the
import (a BadRequest naming the table and the record's position from 1).
Not carried: keys, channels, conversations, usage (``chatport db backup`` / ``copy`` move
a whole instance).
"""
from app import clock
from app.errors import BadRequest, Conflict
from app.services import automations, bots, databases, knowledge
from app.storage.db import db
from app.storage.models import (
    Automation,
    AutomationStep,
    Bot,
    DataRecord,
    DataTable,
    KnowledgeRow,
    KnowledgeSource,
    Tag,
)

FORMAT = "chatport-export"
VERSION = 2  # the version export writes; import reads 1 to VERSION
BOT_FIELDS = ("model", "instructions", "temperature", "max_tokens", "greeting", "knowledge",
              "allowed_models", "enabled")
STEP_FIELDS = ("name", "prompt", "model", "options", "output", "result_type", "context")
KINDS = ("knowledge_sources", "tables", "bots", "automations")
MAX_DESCRIPTION = 2000  # a table's description, as the API bounds it


# ---------------------------------------------------------------- export


def export():
    """The instance's bots, knowledge sources (with rows), tables (with records) and automations
    as the document."""
    sources = list(KnowledgeSource.select().order_by(KnowledgeSource.created_at, KnowledgeSource.id))
    source_names = {s.id: s.name for s in sources}
    tag_names = {t.id: t.name for t in Tag.select()}
    out_sources = []
    for source in sources:
        rows = KnowledgeRow.select().where(KnowledgeRow.source == source).order_by(
            KnowledgeRow.created_at, KnowledgeRow.id)
        out_sources.append({
            "name": source.name, "type": source.type, "url": source.url, "sync_interval": source.sync_interval,
            "rows": [{"name": r.name, "content": r.content, "tags": knowledge.row_tags(r)} for r in rows]})
    tables = list(DataTable.select().order_by(DataTable.created_at, DataTable.id))
    table_names = {t.id: t.name for t in tables}
    out_tables = []
    for table in tables:
        records = DataRecord.select(DataRecord.values).where(DataRecord.table == table).order_by(DataRecord.id)
        out_tables.append({"name": table.name, "description": table.description, "fields": table.spec,
                           "records": [r.values for r in records.iterator()]})
    out_bots = []
    for bot in bots.all_bots():
        item = {"name": bot.name, **{f: getattr(bot, f) for f in BOT_FIELDS}}
        item["sources"] = sorted(source_names[s] for s in knowledge.source_ids_of_bot(bot) if s in source_names)
        item["tables"] = sorted(table_names[t] for t in databases.table_ids_of_bot(bot) if t in table_names)
        out_bots.append(item)
    out_automations = []
    for auto in Automation.select().order_by(Automation.created_at, Automation.id):
        steps = []
        for step in auto.steps.order_by(AutomationStep.position):
            item = {f: getattr(step, f) for f in STEP_FIELDS}
            item["context"] = _named_context(step.context, source_names, tag_names)
            steps.append(item)
        out_automations.append({
            "name": auto.name, "description": auto.description, "endpoint": auto.endpoint,
            "api_enabled": auto.api_enabled, "inputs": auto.inputs, "returns": auto.returns, "steps": steps})
    return {"format": FORMAT, "version": VERSION, "exported_at": clock.now().isoformat(timespec="seconds") + "Z",
            "bots": out_bots, "knowledge_sources": out_sources, "tables": out_tables, "automations": out_automations}


def _named_context(context, source_names, tag_names):
    """A step context with this instance's source and tag ids replaced by their names."""
    if not isinstance(context, dict):
        return context
    context = dict(context)
    if isinstance(context.get("sources"), list):
        context["sources"] = [source_names.get(r, r) for r in context["sources"]]
    if isinstance(context.get("tags"), list):
        context["tags"] = [tag_names.get(r, r) for r in context["tags"]]
    return context


# ---------------------------------------------------------------- import


def check_document(doc):
    """Raises BadRequest unless ``doc`` is an export document this version reads."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadRequest(f"not a chatport export (its \"format\" must be {FORMAT!r})")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise BadRequest("the export has no valid \"version\"")
    if version > VERSION:
        raise BadRequest(f"the export is format version {version}, newer than this chatport reads ({VERSION})")
    for kind in KINDS:
        items = doc.get(kind, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BadRequest(f"{kind} must be a list of objects")
        names = [i.get("name") for i in items]
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise BadRequest(f"every item of {kind} needs a name")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise BadRequest(f"{kind} names must be unique in the export: {', '.join(twice)}")
    known = {s["name"] for s in doc.get("knowledge_sources", [])}
    known_tables = {t["name"] for t in doc.get("tables", [])}
    for bot in doc.get("bots", []):
        missing = [s for s in bot.get("sources") or [] if s not in known]
        if missing:
            raise BadRequest(f"bot {bot['name']!r} names sources the export lacks: {', '.join(missing)}")
        named = bot.get("tables", [])
        if not isinstance(named, list) or not all(isinstance(t, str) for t in named):
            raise BadRequest(f"bot {bot['name']!r}: tables must be a list of table names")
        missing = [t for t in named if t not in known_tables]
        if missing:
            raise BadRequest(f"bot {bot['name']!r} names tables the export lacks: {', '.join(missing)}")


def _existing(model, names):
    """``{name: row}`` of the instance's rows with these names; BadRequest when a name is taken
    twice (an overwrite would not know which)."""
    found = {}
    for row in model.select().where(model.name.in_(list(names))) if names else []:
        if row.name in found:
            raise BadRequest(f"the instance has several {model._meta.table_name} rows named {row.name!r}: "
                             "rename them before importing over them")
        found[row.name] = row
    return found


def import_document(doc, *, registry, config, replace=False):
    """Create (or, with ``replace``, overwrite same-named) the document's sources, tables, bots
    and automations in one transaction; return ``{"created": {kind: [names]}, "replaced": {...}}``.
    ``config`` holds the Database API's bounds.

    Raises BadRequest (a malformed document, an invalid item: nothing imported), Conflict
    (names the instance has, without ``replace``).
    """
    check_document(doc)
    report = {"created": {k: [] for k in KINDS}, "replaced": {k: [] for k in KINDS}}
    models = {"knowledge_sources": KnowledgeSource, "tables": DataTable, "bots": Bot, "automations": Automation}
    with db.atomic():
        existing = {kind: _existing(models[kind], [i["name"] for i in doc.get(kind, [])]) for kind in KINDS}
        clashes = [f"{kind[:-1].replace('_', ' ')} {name!r}" for kind in KINDS for name in existing[kind]]
        if clashes and not replace:
            raise Conflict(f"the instance already has {', '.join(clashes)}: pass --replace to overwrite them")
        source_ids = {}
        for item in doc.get("knowledge_sources", []):
            source_ids[item["name"]] = _import_source(item, existing["knowledge_sources"].get(item["name"]), report)
        table_ids = {}
        for item in doc.get("tables", []):
            table_ids[item["name"]] = _import_table(item, existing["tables"].get(item["name"]), config, report)
        for item in doc.get("bots", []):
            _import_bot(item, existing["bots"].get(item["name"]), source_ids, table_ids, report)
        for item in doc.get("automations", []):
            _import_automation(item, existing["automations"].get(item["name"]), registry, report)
    return report


def _where(kind, name, exc):
    """The item's name in front of a service's message, as the same exception type."""
    exc.message = f"{kind} {name!r}: {exc.message}"
    exc.args = (exc.message,)
    return exc


def _import_source(item, current, report):
    rows = item.get("rows") or []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BadRequest(f"knowledge source {item['name']!r}: rows must be a list of objects")
    fields = {"type": item.get("type") or "MANUAL", "url": item.get("url"), "sync_interval": item.get("sync_interval")}
    try:
        if current is None:
            source = knowledge.create_source(name=item["name"], **fields)
            report["created"]["knowledge_sources"].append(item["name"])
        else:
            old = [r.id for r in KnowledgeRow.select(KnowledgeRow.id).where(KnowledgeRow.source == current)]
            if old:
                knowledge.delete_rows(current, old)
            if fields["type"] not in knowledge.TYPES:
                raise BadRequest(f"type must be one of {', '.join(knowledge.TYPES)}")
            source = knowledge.update_source(current, **fields)
            report["replaced"]["knowledge_sources"].append(item["name"])
        knowledge.add_rows(source, [{"name": r.get("name", ""), "content": r.get("content"),
                                     "tags": r.get("tags") or []} for r in rows])
    except BadRequest as exc:
        raise _where("knowledge source", item["name"], exc)
    knowledge.index_now(source)
    return source.id


def _import_table(item, current, config, report):
    name = item["name"]
    description = "" if item.get("description") is None else item["description"]
    records = [] if item.get("records") is None else item["records"]
    if len(name) > int(config["MAX_NAME_LENGTH"]):
        raise BadRequest(f"table {name[:40]!r}: a name has at most {config['MAX_NAME_LENGTH']} characters")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise BadRequest(f"table {name!r}: description must be a string of at most {MAX_DESCRIPTION} characters")
    if not isinstance(records, list):
        raise BadRequest(f"table {name!r}: records must be a list of objects of values")
    try:
        if current is None:
            table = databases.create_table(name=name, fields=item.get("fields"), config=config,
                                           description=description)
            report["created"]["tables"].append(name)
        else:
            databases.clear_records(current)  # first, so the new fields need not fit the old records
            table = databases.update_table(current, config=config, fields=item.get("fields"), description=description)
            report["replaced"]["tables"].append(name)
        # Each record wrapped, so a record whose only field is named "values" is read as itself;
        # in parts of DATABASE_IMPORT_MAX_LINES, the bound of one import call.
        part = max(1, int(config["DATABASE_IMPORT_MAX_LINES"]))
        for start in range(0, len(records), part):
            result = databases.import_records(table, config=config,
                                              items=[{"values": r} for r in records[start:start + part]])
            if result["rejected"]:
                first = result["rejected"][0]
                more = len(result["rejected"]) - 1
                raise BadRequest(f"record {start + first['line']}: {first['error']}"
                                 + (f" ({more} more record(s) refused)" if more else ""))
    except BadRequest as exc:
        raise _where("table", name, exc)
    return table.id


def _import_bot(item, current, source_ids, table_ids, report):
    fields = {f: item[f] for f in BOT_FIELDS if f in item}
    try:
        if current is None:
            bot = bots.create_bot(name=item["name"], **fields)
            report["created"]["bots"].append(item["name"])
        else:
            bot = bots.update_bot(current.id, **fields)
            report["replaced"]["bots"].append(item["name"])
        knowledge.set_sources_of_bot(bot.id, [source_ids[s] for s in item.get("sources") or []])
        if "tables" in item:  # absent (a version 1 document): the bot's table links stay as they are
            databases.set_tables_of_bot(bot.id, [table_ids[t] for t in item["tables"]])
    except BadRequest as exc:
        raise _where("bot", item["name"], exc)


def _import_automation(item, current, registry, report):
    data = {k: item[k] for k in ("name", "description", "endpoint", "api_enabled", "inputs", "returns", "steps")
            if k in item}
    try:
        automations.save(data, registry=registry, automation=current)
    except (BadRequest, Conflict) as exc:
        raise _where("automation", item["name"], exc)
    report["replaced" if current else "created"]["automations"].append(item["name"])

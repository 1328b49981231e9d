"""The lookup tool: a bot's tables offered to a tool-capable model as the function
``lookup_records`` (docs/databases.md, "The lookup tool").

A bot whose ``knowledge.tables_tool`` is on and that has tables attached gets, on a turn where
the client offered no tools of its own (and asked for one answer, no logprobs and no response
format), a model wrapped by ``ToolLoop``: the model may call ``lookup_records`` (a table, words
to search, ``field:op:value`` filters as the records API takes them, a limit); chatport runs the
call against the bot's tables, gives the model the records as the tool's result and asks again,
at most ``DATABASE_TOOL_ROUNDS`` times, after which the model must answer (the tool stays
declared with ``tool_choice`` ``none``). The client sees one answer: the text of every round,
the tokens of every round in its usage, the records the calls returned in its citations (after
the turn's own). The calls and their results are not part of the conversation's history.
"""
import json
from contextlib import nullcontext
from dataclasses import replace

from app.errors import BadRequest
from app.ids import tool_call_id
from app.providers.llm import Chunk, Usage, add_tool_fragment, estimate_tokens, joined_tool_calls, message_tokens
from app.services import databases
from app.storage import record_index
from app.storage.db import db
from app.storage.models import DataRecord, DataTable

NAME = "lookup_records"
DESCRIPTION_FIELDS = 30  # fields of a table named in the tool's description
MAX_WORDS = 12


def tool_for(bot, provider_model, request, config):
    """The ``ToolLoop`` standing for ``provider_model`` on this turn, or None when the tool is
    not offered (``bot`` None, the setting off, no tables, a model without tools, a request that
    brings its own tools or wants what a loop cannot keep: several choices, logprobs, a format)."""
    if bot is None or not (bot.knowledge or {}).get("tables_tool"):
        return None
    if "tools" not in provider_model.supports or request.tools or (request.n or 1) > 1 or request.logprobs:
        return None
    if request.response_format and request.response_format.get("type", "text") != "text":
        return None
    table_ids = databases.table_ids_of_bot(bot)
    if not table_ids:
        return None
    tables = list(DataTable.select().where(DataTable.id.in_(table_ids)).order_by(DataTable.name, DataTable.id))
    return ToolLoop(provider_model, tables, rounds=int(config.get("DATABASE_TOOL_ROUNDS", 3)),
                    max_records=int(config.get("DATABASE_TOOL_RECORDS", 10)),
                    citations=request.extra.setdefault("passages", []))


def definition(tables, max_records):
    """The OpenAI function tool describing ``tables`` (names, fields and their types)."""
    described = []
    for t in tables:
        fields = ", ".join(f"{f['name']} ({f['type']}{', searchable' if f.get('searchable') else ''})"
                           for f in t.spec[:DESCRIPTION_FIELDS])
        more = " ..." if len(t.spec) > DESCRIPTION_FIELDS else ""
        about = f" - {t.description.strip()}" if t.description.strip() else ""
        described.append(f"{t.name}{about}: {fields}{more}")
    names = list(dict.fromkeys(t.name for t in tables))
    return {"type": "function", "function": {
        "name": NAME,
        "description": ("Look up records in the tables you answer from. Give a table and filters for "
                        "exact lookups, or words to search the searchable fields. Tables: "
                        + "; ".join(described)),
        "parameters": {
            "type": "object",
            "properties": {
                "table": {"type": "string", "enum": names, "description": "The table to look in (all, without one)."},
                "query": {"type": "string", "description": "Words to find in the searchable fields."},
                "filters": {"type": "array", "items": {"type": "string"},
                            "description": "Conditions field:op:value, op one of eq ne gt gte lt lte contains "
                                           "(field:value is eq); they need a table."},
                "limit": {"type": "integer", "minimum": 1, "maximum": max_records,
                          "description": "The most records to return."},
            },
            "additionalProperties": False,
        },
    }}


class ToolLoop:
    """A chat model with ``lookup_records`` answered by chatport (the ``Model`` interface the
    turn uses: ``name``, ``supports``, ``check``, ``stream``)."""

    def __init__(self, model, tables, *, rounds, max_records, citations):
        self.model = model
        self.tables = tables
        self.rounds = rounds
        self.max_records = max_records
        self.citations = citations  # the turn's passages: records the calls return are added
        self.tool = definition(tables, max_records)

    @property
    def name(self):
        return self.model.name

    @property
    def supports(self):
        return self.model.supports

    def __getattr__(self, name):  # provider, model_id, description...
        return getattr(self.model, name)

    def check(self, request):
        self.model.check(request)

    def stream(self, request):
        """Ask the model, run its lookups, ask again; yield the text of every round, the last
        round's finish reason, and one Usage summing the rounds."""
        messages = list(request.messages)
        prompt = completion = cached = reasoning = 0
        estimated = False
        for round_ in range(self.rounds + 1):
            last = round_ == self.rounds
            ask = replace(request, messages=messages, tools=[self.tool], tool_choice="none" if last else "auto",
                        parallel_tool_calls=None)
            calls, text, usage, finish = {}, [], None, None
            upstream = self.model.stream(ask)
            try:
                for item in upstream:
                    if isinstance(item, str):
                        if item:
                            text.append(item)
                            yield item
                    elif isinstance(item, Usage):
                        usage = item
                    elif isinstance(item, Chunk):
                        if item.text:
                            text.append(item.text)
                            yield item.text
                        for fragment in item.tool_calls or ():
                            add_tool_fragment(calls, fragment)
                        if item.finish_reason:
                            finish = item.finish_reason
            finally:
                close = getattr(upstream, "close", None)
                if close:
                    close()
            if usage is None:
                usage = Usage(sum(message_tokens(m) for m in messages),
                              estimate_tokens("".join(text)) + sum(
                                  estimate_tokens(c["name"] + "".join(c["arguments"])) for c in calls.values()),
                              estimated=True)
            prompt += usage.prompt_tokens
            completion += usage.completion_tokens
            cached += usage.cached_tokens
            reasoning += usage.reasoning_tokens
            estimated = estimated or usage.estimated
            if not calls or last:
                if finish and finish != "tool_calls":
                    yield Chunk(finish_reason=finish)
                break
            for call in calls.values():
                call["id"] = call["id"] or tool_call_id()  # the result must name its call
            made = joined_tool_calls(calls)
            messages = messages + [{"role": "assistant", "content": "".join(text) or None, "tool_calls": made}]
            for call in made:
                result = self.call(call["function"]["name"], call["function"]["arguments"])
                messages.append({"role": "tool", "tool_call_id": call["id"],
                                 "content": json.dumps(result, ensure_ascii=False, default=str)})
        yield Usage(prompt, completion, estimated=estimated, cached_tokens=cached, reasoning_tokens=reasoning)

    def call(self, name, arguments):
        """The result of one call: ``{"records": [...], "more": bool}`` or ``{"error": "..."}``
        (what was wrong, for the model to mend its call)."""
        if name != NAME:
            return {"error": f"unknown tool {name!r}: the only tool is {NAME}"}
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            return {"error": "the arguments are not JSON"}
        if not isinstance(args, dict):
            return {"error": "the arguments must be a JSON object"}
        try:
            # a connection of the greenlet's own for the call, back to the pool after it: the
            # call may run in a heartbeat relay's producer greenlet, and between model calls
            with nullcontext() if db.in_transaction() else db.connection_context():
                return self._lookup(args)
        except BadRequest as exc:
            return {"error": exc.message}

    def _lookup(self, args):
        table_name, query, filters, limit = args.get("table"), args.get("query"), args.get("filters"), args.get("limit")
        if table_name is not None and not isinstance(table_name, str):
            raise BadRequest("table must be a table's name")
        if query is not None and not isinstance(query, str):
            raise BadRequest("query must be a string")
        if filters is None:
            filters = []
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise BadRequest("filters must be a list of strings field:op:value")
        if limit is None:
            limit = min(5, self.max_records)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BadRequest(f"limit must be an integer from 1 to {self.max_records}")
        limit = min(limit, self.max_records)
        tables = self.tables
        if table_name:
            tables = [t for t in self.tables if table_name in (t.name, t.id)]
            if not tables:
                raise BadRequest(f"no table {table_name!r}: the tables are "
                                 + ", ".join(sorted({t.name for t in self.tables})))
        if filters and len(tables) > 1:
            raise BadRequest("filters need a table: name one")
        words = databases.query_words(query)[:MAX_WORDS]
        by_id = {t.id: t for t in tables}
        scores = {}
        if filters:
            found = databases.records_query(tables[0], filters)
            if words:
                ranked = [i for i, _ in record_index.search([tables[0].id], words, 200)]
                found = found.where(DataRecord.id.in_(ranked)) if ranked else None
                records = sorted(found, key=lambda r: ranked.index(r.id))[:limit + 1] if found is not None else []
            else:
                records = list(found.order_by(DataRecord.id).limit(limit + 1))
        elif words:
            hits = record_index.search(list(by_id), words, limit + 1)
            scores = dict(hits)
            rows = {r.id: r for r in DataRecord.select().where(DataRecord.id.in_([i for i, _ in hits]))}
            records = [rows[i] for i, _ in hits if i in rows]
        else:
            records = list(DataRecord.select().where(DataRecord.table.in_(list(by_id)))
                           .order_by(DataRecord.id).limit(limit + 1))
        more, records = len(records) > limit, records[:limit]
        cited = {(c.get("table_id"), c.get("record_id")) for c in self.citations}
        for r in records:
            if (r.table_id, r.id) not in cited:
                cited.add((r.table_id, r.id))
                self.citations.append({"table_id": r.table_id, "record_id": r.id, "name": by_id[r.table_id].name,
                                       "content": databases.record_text(r, by_id[r.table_id]), "score": scores.get(r.id)})
        return {"records": [{"table": by_id[r.table_id].name, "table_id": r.table_id, "record_id": r.id,
                             "values": r.values} for r in records], "more": more}


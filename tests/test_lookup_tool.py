"""The lookup tool (docs/databases.md, "The lookup tool"): a bot's tables offered to a
tool-capable model as ``lookup_records``, the calls answered by chatport, bounded rounds, usage
summed, the records cited, nothing of the exchange saved. SQLite and PostgreSQL (``app``). The
real SDKs against ``chatport serve`` with both provider plugins: tests/test_cross_provider.py."""
import json

from app.providers.llm import Chunk, Usage

from .scripted import scripted

BASE = "/api/v1/databases/tables"
STORES = [{"name": "store", "type": "text", "searchable": True},
          {"name": "opening_hours", "type": "text"},
          {"name": "size", "type": "number"}]


def _bot(admin, model="echo/echo", **knowledge):
    resp = admin.post("/api/v1/bots", json={"name": "store bot", "model": model, "knowledge": knowledge})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def _stores(admin, bot_ids, name="stores", rows=(("Lyon", "9-18", 3), ("Paris", "10-20", 10))):
    resp = admin.post(BASE, json={"name": name, "fields": STORES, "bot_ids": bot_ids})
    assert resp.status_code == 201, resp.get_json()
    table = resp.get_json()["id"]
    ids = {}
    for store, hours, size in rows:
        made = admin.post(f"{BASE}/{table}/records",
                          json={"values": {"store": store, "opening_hours": hours, "size": size}})
        assert made.status_code == 201
        ids[store] = made.get_json()["id"]
    return table, ids


def _ask(admin, bot, content):
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot}).get_json()["id"]
    resp = admin.post(f"/api/v1/conversations/{conv}/messages", json={"content": content, "stream": False})
    assert resp.status_code == 200, resp.get_json()
    return conv, resp.get_json()


def _call(**arguments):
    return f"[echo call=lookup_records {json.dumps(arguments)}]"


def _result(content):
    """The tool result echo repeats after ``Echo: lookup_records returned``."""
    prefix = "Echo: lookup_records returned "
    assert content.startswith(prefix), content
    return json.loads(content[len(prefix):])


def test_knowledge_settings_take_the_records_bound_and_the_tool(app, admin):
    bot = _bot(admin, model="extractive/extractive", records=1, tables_tool=True)
    assert admin.get(f"/api/v1/bots/{bot}").get_json()["knowledge"] == {"records": 1, "tables_tool": True}
    for bad in ({"records": 51}, {"records": -1}, {"records": "many"}, {"tables_tool": "maybe"}):
        resp = admin.post("/api/v1/bots", json={"name": "bad", "knowledge": bad})
        assert resp.status_code == 400, bad
        assert "knowledge" in json.dumps(resp.get_json())
        assert admin.patch(f"/api/v1/bots/{bot}", json={"knowledge": bad}).status_code == 400
    assert [b["id"] for b in admin.get("/api/v1/bots").get_json()["data"]] == [bot]
    # knowledge.records bounds the records a turn is given
    _stores(admin, [bot], rows=(("Lyon Nord", "9-18", 3), ("Lyon Sud", "8-20", 4)))
    _, answer = _ask(admin, bot, "Lyon opening hours?")
    assert len(answer["message"]["citations"]) == 1
    assert admin.patch(f"/api/v1/bots/{bot}", json={"knowledge": {"records": 0}}).status_code == 200
    _, answer = _ask(admin, bot, "Lyon opening hours?")
    assert answer["message"]["citations"] == []


def test_the_model_filters_a_table_and_the_answer_cites_what_it_found(app, admin):
    bot = _bot(admin, tables_tool=True)
    table, ids = _stores(admin, [bot])
    conv, answer = _ask(admin, bot, "Which are big? " + _call(table="stores", filters=["size:gte:5"]))
    message = answer["message"]
    result = _result(message["content"])
    assert result == {"records": [{"table": "stores", "table_id": table, "record_id": ids["Paris"],
                                   "values": {"store": "Paris", "opening_hours": "10-20", "size": 10}}],
                      "more": False}
    assert [(c["table_id"], c["record_id"]) for c in message["citations"]] == [(table, ids["Paris"])]
    assert message["citations"][0]["content"] == "store: Paris; opening hours: 10-20; size: 10"
    assert answer["finish_reason"] == "stop" and message["status"] == "complete"
    # the exchange with the tool is not part of the conversation: the question and the answer
    saved = admin.get(f"/api/v1/conversations/{conv}/messages").get_json()["data"]
    assert [m["role"] for m in saved] == ["user", "assistant"]
    assert saved[1]["content"] == message["content"] and saved[1]["citations"] == message["citations"]
    assert "tool_calls" not in json.dumps(saved)


def test_words_limits_and_mistakes_come_back_to_the_model(app, admin):
    bot = _bot(admin, tables_tool=True)
    table, ids = _stores(admin, [bot], rows=[(f"Lyon {i}", "9-18", i) for i in range(7)] + [("Paris", "10-20", 10)])
    _stores(admin, [bot], name="depots", rows=(("Lyon depot", "6-22", 50),))
    # words search the searchable fields of every table of the bot, best first, with a score
    _, answer = _ask(admin, bot, _call(query="paris"))
    found = _result(answer["message"]["content"])
    assert [r["record_id"] for r in found["records"]] == [ids["Paris"]] and found["more"] is False
    assert answer["message"]["citations"][-1]["score"] > 0
    # filters and words together; limit bounds the records, and "more" says there were more
    _, answer = _ask(admin, bot, _call(table="stores", query="lyon", filters=["size:lt:5"], limit=2))
    found = _result(answer["message"]["content"])
    assert len(found["records"]) == 2 and found["more"] is True
    assert all(r["values"]["size"] < 5 and r["table"] == "stores" for r in found["records"])
    # no words and no filters: the first records of the table
    _, answer = _ask(admin, bot, _call(table="depots"))
    assert [r["values"]["store"] for r in _result(answer["message"]["content"])["records"]] == ["Lyon depot"]
    mistakes = [
        (dict(table="stores", filters=["colour:red"]), "unknown field colour"),
        (dict(table="stores", filters=["size:gt:big"]), "size:gt:big"),
        (dict(table="stores", filters="size:gt:1"), "filters must be a list"),
        (dict(filters=["size:gt:1"]), "filters need a table"),
        (dict(table="warehouses"), "no table 'warehouses': the tables are depots, stores"),
        (dict(table="stores", limit=0), "limit must be an integer from 1 to 10"),
        (dict(query=5), "query must be a string"),
    ]
    for arguments, error in mistakes:
        _, answer = _ask(admin, bot, _call(**arguments))
        result = _result(answer["message"]["content"])
        assert error in result["error"], (arguments, result)
        assert answer["message"]["status"] == "complete"


def test_the_tool_sees_only_the_bots_tables(app, admin):
    bot, other = _bot(admin, tables_tool=True), _bot(admin)
    _stores(admin, [bot], rows=(("Lyon", "9-18", 3),))
    _stores(admin, [other], name="secrets", rows=(("Paris", "never", 99),))
    _, answer = _ask(admin, bot, _call(query="paris"))
    assert _result(answer["message"]["content"]) == {"records": [], "more": False}
    _, answer = _ask(admin, bot, _call(table="secrets"))
    assert "no table 'secrets'" in _result(answer["message"]["content"])["error"]
    assert all(c["name"] == "stores" for c in answer["message"]["citations"])


def test_not_offered_without_the_setting_tables_or_tool_support(app, admin):
    plain = _bot(admin)  # tables_tool off: the model is offered no tool and echoes the text
    _stores(admin, [plain])
    _, answer = _ask(admin, plain, _call(table="stores"))
    assert answer["message"]["content"].startswith("Echo: [echo call=lookup_records")
    no_tables = _bot(admin, tables_tool=True)
    _, answer = _ask(admin, no_tables, _call(table="stores"))
    assert answer["message"]["content"].startswith("Echo: [echo call=lookup_records")
    extractive = _bot(admin, model="extractive/extractive", tables_tool=True)  # no tools: records as text
    _stores(admin, [extractive], rows=(("Lyon", "9-18", 3),))
    _, answer = _ask(admin, extractive, "opening hours of the Lyon store?")
    assert "opening hours: 9-18" in answer["message"]["content"]


def test_a_client_that_brings_its_own_tools_gets_its_own_calls(app, admin):
    bot = _bot(admin, tables_tool=True)
    _stores(admin, [bot])
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    resp = admin.post("/v1/chat/completions", json={
        "model": f"bot/{bot}", "tools": [weather],
        "messages": [{"role": "user", "content": "[echo call=get_weather {\"city\": \"Lyon\"}] "
                                                 + _call(table="stores")}]})
    assert resp.status_code == 200, resp.get_json()
    choice = resp.get_json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]


def _looping(calls_per_round=1):
    """A script that calls the tool whenever it may, and answers "done" when it may not."""
    def script(request):
        if request.tools and request.tool_choice != "none":
            yield "Looking. "
            for i in range(calls_per_round):
                yield Chunk(tool_calls=[{"index": i, "id": f"c{len(request.messages)}_{i}", "name": "lookup_records",
                                         "arguments": '{"query": '}])
                yield Chunk(tool_calls=[{"index": i, "arguments": '"lyon"}'}])
            yield Chunk(finish_reason="tool_calls")
            yield Usage(10, 2)
        else:
            yield "done"
            yield Chunk(finish_reason="length")
            yield Usage(10, 1)
    return script


def test_rounds_are_bounded_and_their_usage_summed(configured):
    app, admin = configured(DATABASE_TOOL_ROUNDS=2)
    with scripted(app, _looping(calls_per_round=2)) as model:
        model.supports = frozenset({"stop", "tools", "tool_choice"})
        bot = _bot(admin, model="scripted/test", tables_tool=True)
        table, ids = _stores(admin, [bot])
        conv, answer = _ask(admin, bot, "Where?")
    assert len(model.requests) == 3  # two rounds of calls, then the model must answer
    assert [r.tool_choice for r in model.requests] == ["auto", "auto", "none"]
    assert all(r.tools[0]["function"]["name"] == "lookup_records" for r in model.requests)
    assert model.requests[0].tools[0]["function"]["parameters"]["properties"]["table"]["enum"] == ["stores"]
    last = model.requests[2].messages
    results = [m for m in last if m["role"] == "tool"]
    assert len(results) == 4 and [m["tool_call_id"] for m in results][:2] == [
        c["id"] for c in next(m for m in last if m.get("tool_calls"))["tool_calls"]]
    assert json.loads(results[0]["content"])["records"][0]["record_id"] == ids["Lyon"]
    assert answer["message"]["content"] == "Looking. Looking. done"
    assert answer["usage"]["prompt_tokens"] == 30 and answer["usage"]["completion_tokens"] == 5
    assert answer["finish_reason"] == "length"  # the last round's own reason
    assert [c["record_id"] for c in answer["message"]["citations"]] == [ids["Lyon"]]  # once
    assert model.closed


def test_a_client_gone_mid_turn_closes_the_model_and_keeps_the_turn(configured):
    app, admin = configured()
    with scripted(app, _looping()) as model:
        model.supports = frozenset({"stop", "tools", "tool_choice"})
        bot = _bot(admin, model="scripted/test", tables_tool=True)
        _stores(admin, [bot])
        conv = admin.post("/api/v1/conversations", json={"bot_id": bot}).get_json()["id"]
        resp = admin.client.post(f"/api/v1/conversations/{conv}/messages", headers=admin._headers(None),
                                 json={"content": "Where?", "stream": True}, buffered=False)
        body, seen = iter(resp.response), b""
        while b"Looking" not in seen:  # the first round's text, then the client goes away
            seen += next(body)
        resp.close()
    assert model.closed
    saved = admin.get(f"/api/v1/conversations/{conv}/messages").get_json()["data"]
    assert [m["role"] for m in saved] == ["user", "assistant"] and saved[1]["status"] == "incomplete"

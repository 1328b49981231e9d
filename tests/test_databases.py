"""The Database API (docs/databases.md): tables, records, imports, scope, rate category, and a
bot that answers from a record and cites it. Every test runs on SQLite and PostgreSQL."""
import json
import time

from app.storage.db import db

from .conftest import Api, create_key, run_cli

BASE = "/api/v1/databases/tables"
STORES = [{"name": "store", "type": "text", "searchable": True},
          {"name": "opening_hours", "type": "text"},
          {"name": "size", "type": "number"},
          {"name": "open_sunday", "type": "boolean"},
          {"name": "opened", "type": "date"}]


def _table(admin, fields=STORES, **extra):
    resp = admin.post(BASE, json={"name": "stores", "fields": fields, **extra})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def _record(admin, table_id, **values):
    resp = admin.post(f"{BASE}/{table_id}/records", json={"values": values})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def _bot(admin, model="extractive/extractive"):
    resp = admin.post("/api/v1/bots", json={"name": "store bot", "model": model})
    assert resp.status_code == 201
    return resp.get_json()["id"]


def _count(app):
    from app.storage.models import DataRecord, DataTable

    with app.app_context(), db.connection_context():
        return DataTable.select().count(), DataRecord.select().count()


def test_tables_routes_good_and_bad(app, admin):
    bot = _bot(admin)
    table = _table(admin, description="Our stores", bot_ids=[bot])
    assert [f["name"] for f in table["fields"]] == [f["name"] for f in STORES]
    assert table["bot_ids"] == [bot] and table["fields"][0]["searchable"] is True
    assert admin.get(f"{BASE}/{table['id']}").get_json()["description"] == "Our stores"
    listed = admin.get(BASE).get_json()
    assert [t["id"] for t in listed["data"]] == [table["id"]] and listed["pagination"]["total"] == 1

    bad_bodies = [
        {"name": "x", "fields": [{"name": "1st"}]},                      # field name
        {"name": "x", "fields": [{"name": "a", "type": "money"}]},        # type
        {"name": "x", "fields": [{"name": "a"}, {"name": "A"}]},          # duplicate
        {"name": "x", "fields": [{"name": "a"}], "bot_ids": ["nobot"]},   # unknown bot
        {"name": "", "fields": []},                                       # empty name
        {"fields": []},                                                   # no name
    ]
    for body in bad_bodies:
        resp = admin.post(BASE, json=body)
        assert resp.status_code == 400, body
        assert resp.get_json()["error"] == "bad_request" and resp.get_json()["message"]
    assert admin.post(BASE, data="nope", headers={"Content-Type": "text/plain"}).status_code == 415
    assert _count(app) == (1, 0)

    renamed = admin.patch(f"{BASE}/{table['id']}", json={"name": "shops", "bot_ids": []})
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "shops"
    assert renamed.get_json()["bot_ids"] == []
    missing = admin.get(f"{BASE}/nosuchtable")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert admin.patch(f"{BASE}/nosuchtable", json={"name": "y"}).status_code == 404
    assert admin.delete(f"{BASE}/{table['id']}").status_code == 204
    assert admin.get(f"{BASE}/{table['id']}").status_code == 404
    assert admin.delete(f"{BASE}/{table['id']}").status_code == 404


def test_table_bounds_from_configuration(configured):
    app, admin = configured(DATABASE_MAX_TABLES=1, DATABASE_MAX_FIELDS=2)
    too_many_fields = admin.post(BASE, json={"name": "t", "fields": [{"name": n} for n in "abc"]})
    assert too_many_fields.status_code == 400 and "DATABASE_MAX_FIELDS" in too_many_fields.get_json()["message"]
    _table(admin, fields=[{"name": "a"}])
    second = admin.post(BASE, json={"name": "t2", "fields": [{"name": "a"}]})
    assert second.status_code == 400 and "DATABASE_MAX_TABLES" in second.get_json()["message"]
    assert _count(app) == (1, 0)


def test_schema_changes_that_lose_data_are_refused(app, admin):
    table = _table(admin)
    tid = table["id"]
    rec = _record(admin, tid, store="Lyon", opening_hours="9-18", size=3)
    url = f"{BASE}/{tid}"
    # adding fields is free
    added = admin.patch(url, json={"fields": STORES + [{"name": "city", "searchable": True}]})
    assert added.status_code == 200 and added.get_json()["fields"][-1]["name"] == "city"
    # removing a field a record uses: 400 naming it; an unused one may go
    kept = [f for f in STORES if f["name"] != "opening_hours"]
    refused = admin.patch(url, json={"fields": kept, "name": "renamed"})
    assert refused.status_code == 400
    assert "opening_hours" in refused.get_json()["message"] and "opening_hours" in refused.get_json()["errors"]
    assert admin.get(url).get_json()["name"] == "stores"  # nothing changed, not even the name
    assert admin.patch(url, json={"fields": [f for f in STORES if f["name"] != "opened"]}).status_code == 200
    # an incompatible type change (text "9-18" is no number) is refused, a compatible one done
    retyped = [dict(f, type="number") if f["name"] == "opening_hours" else f for f in STORES[:4]]
    refused = admin.patch(url, json={"fields": retyped})
    assert refused.status_code == 400 and "opening_hours" in refused.get_json()["message"]
    as_text = [dict(f, type="text") if f["name"] == "size" else f for f in STORES[:4]]
    assert admin.patch(url, json={"fields": as_text}).status_code == 200
    assert admin.get(f"{url}/records/{rec['id']}").get_json()["values"]["size"] == "3"
    back = admin.patch(url, json={"fields": STORES[:4]})
    assert back.status_code == 200
    assert admin.get(f"{url}/records/{rec['id']}").get_json()["values"]["size"] == 3


def test_records_routes_good_and_bad(app, admin):
    tid = _table(admin)["id"]
    rec = _record(admin, tid, store="Lyon", opening_hours="9-18", size=3, open_sunday=False,
                  opened="2021-04-01T10:00:00+02:00")
    assert rec["values"]["opened"] == "2021-04-01T08:00:00Z" and rec["table_id"] == tid
    url = f"{BASE}/{tid}/records"
    for values in ({"size": "big"}, {"size": True}, {"open_sunday": "yes"}, {"opened": "April 1st"},
                   {"store": 12}, {"nosuch": 1}, {"store": "x" * 20_000}):
        resp = admin.post(url, json={"values": values})
        assert resp.status_code == 400, values
        assert resp.get_json()["message"]
    assert admin.post(url, json={"values": "Lyon"}).status_code == 400
    assert admin.post(url, json={}).status_code == 400
    assert _count(app) == (1, 1)

    item = f"{url}/{rec['id']}"
    assert admin.get(item).get_json()["values"]["store"] == "Lyon"
    patched = admin.patch(item, json={"values": {"size": 4, "open_sunday": None}})
    assert patched.status_code == 200
    assert patched.get_json()["values"] == {"store": "Lyon", "opening_hours": "9-18", "size": 4,
                                            "opened": "2021-04-01T08:00:00Z"}
    assert admin.patch(item, json={"values": {"size": "four"}}).status_code == 400
    assert admin.get(item).get_json()["values"]["size"] == 4
    replaced = admin.put(item, json={"values": {"store": "Lyon 2"}})
    assert replaced.status_code == 200 and replaced.get_json()["values"] == {"store": "Lyon 2"}
    assert admin.get(f"{url}/nosuch").status_code == 404
    other = _table(admin, fields=[{"name": "a"}])["id"]
    assert admin.get(f"{BASE}/{other}/records/{rec['id']}").status_code == 404  # not that table's
    assert admin.delete(item).status_code == 204
    assert admin.get(item).status_code == 404 and admin.delete(item).status_code == 404


def test_record_bounds(configured):
    app, admin = configured(DATABASE_MAX_RECORDS=2, DATABASE_MAX_RECORD_BYTES=100)
    tid = _table(admin)["id"]
    big = admin.post(f"{BASE}/{tid}/records", json={"values": {"store": "x" * 200}})
    assert big.status_code == 400 and "DATABASE_MAX_RECORD_BYTES" in big.get_json()["message"]
    _record(admin, tid, store="a")
    _record(admin, tid, store="b")
    full = admin.post(f"{BASE}/{tid}/records", json={"values": {"store": "c"}})
    assert full.status_code == 400 and "DATABASE_MAX_RECORDS" in full.get_json()["message"]
    report = admin.post(f"{BASE}/{tid}/import", json=[{"store": "d"}]).get_json()
    assert report["created"] == 0 and "DATABASE_MAX_RECORDS" in report["rejected"][0]["error"]
    assert _count(app) == (1, 2)


def test_list_filters_sorting_and_cursor(app, admin):
    tid = _table(admin)["id"]
    rows = [("Lyon", 3, True, "2020-01-05"), ("Paris", 10, False, "2019-06-01"), ("Nice", 7, True, None),
            ("Lille", None, False, "2022-02-02"), ("Lyon Part-Dieu", 5, None, "2021-03-03")]
    for store, size, sunday, opened in rows:
        _record(admin, tid, store=store, size=size, open_sunday=sunday, opened=opened)
    url = f"{BASE}/{tid}/records"

    def stores(query):
        resp = admin.get(f"{url}?{query}")
        assert resp.status_code == 200, resp.get_json()
        return [r["values"]["store"] for r in resp.get_json()["data"]]

    assert stores("filter=store:Lyon") == ["Lyon"]
    assert stores("filter=store:contains:lyon") == ["Lyon", "Lyon Part-Dieu"]
    assert stores("filter=size:gte:5&sort=size") == ["Lyon Part-Dieu", "Nice", "Paris"]
    assert stores("filter=size:gt:3&filter=size:lt:10") == ["Nice", "Lyon Part-Dieu"]
    assert stores("filter=open_sunday:eq:true") == ["Lyon", "Nice"]
    assert stores("filter=opened:lt:2021-01-01&sort=-opened") == ["Lyon", "Paris"]
    assert stores("filter=size:ne:3") == ["Paris", "Nice", "Lille", "Lyon Part-Dieu"]
    assert stores("sort=-size") == ["Paris", "Nice", "Lyon Part-Dieu", "Lyon", "Lille"]  # no value: last
    # cursor pagination over a sort, then over ids
    seen, cursor = [], None
    while True:
        page = admin.get(f"{url}?sort=-size&limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [r["values"]["store"] for r in page["data"]]
        assert page["pagination"]["total"] == 5
        cursor = page["pagination"]["last"]
        if len(page["data"]) < 2:
            break
    assert seen == ["Paris", "Nice", "Lyon Part-Dieu", "Lyon", "Lille"]
    first = admin.get(f"{url}?limit=3").get_json()
    rest = admin.get(f"{url}?limit=3&cursor={first['pagination']['last']}").get_json()
    assert [r["values"]["store"] for r in first["data"] + rest["data"]] == [r[0] for r in rows]
    for query in ("filter=nosuch:1", "filter=size:gt:big", "filter=size:contains:3", "filter=open_sunday:gt:true",
                  "sort=nosuch", "cursor=nosuch", "limit=0", "limit=1000"):
        resp = admin.get(f"{url}?{query}")
        assert resp.status_code == 400, query
        assert resp.get_json()["error"] == "bad_request"


def test_csv_import_of_10000_lines_with_bad_ones(app, admin):
    tid = _table(admin)["id"]
    lines = ["store,opening_hours,size,open_sunday,opened"]
    bad = {}
    for i in range(10_000):
        line_no = i + 2
        if i % 1000 == 7:
            lines.append(f"Store {i},9-18,many,true,2020-01-01")
            bad[line_no] = "size"
        elif i % 1000 == 8:
            lines.append(f"Store {i},9-18,3,true,not a date")
            bad[line_no] = "opened"
        elif i % 1000 == 9:
            lines.append(f"Store {i},9-18")
            bad[line_no] = "cells"
        else:
            lines.append(f"Store {i},9-18,{i},{'true' if i % 2 else 'false'},2020-01-{1 + i % 28:02d}")
    started = time.perf_counter()
    resp = admin.post(f"{BASE}/{tid}/import", data="\n".join(lines) + "\n",
                      headers={"Content-Type": "text/csv"})
    elapsed = time.perf_counter() - started
    assert resp.status_code == 200, resp.get_json()
    report = resp.get_json()
    assert report["created"] == 10_000 - len(bad)
    assert [r["line"] for r in report["rejected"]] == sorted(bad)
    for r in report["rejected"]:
        assert bad[r["line"]] in r["error"]
    assert _count(app) == (1, 10_000 - len(bad))
    assert elapsed < 30
    found = admin.get(f"{BASE}/{tid}/records?filter=store:Store%204242").get_json()["data"]
    assert found[0]["values"] == {"store": "Store 4242", "opening_hours": "9-18", "size": 4242,
                                  "open_sunday": False, "opened": "2020-01-15"}
    # an unreadable import changes nothing
    resp = admin.post(f"{BASE}/{tid}/import", data="store,price\nLyon,3\n", headers={"Content-Type": "text/csv"})
    assert resp.status_code == 400 and "price" in resp.get_json()["message"]
    assert _count(app) == (1, 10_000 - len(bad))


def test_json_import_report_and_bounds(configured):
    app, admin = configured(DATABASE_IMPORT_MAX_LINES=3)
    tid = _table(admin)["id"]
    url = f"{BASE}/{tid}/import"
    report = admin.post(url, json=[{"store": "Lyon", "size": 3}, {"values": {"store": "Nice"}}, {"size": "x"}])
    assert report.status_code == 200
    assert report.get_json() == {"created": 2, "rejected": [{"line": 3, "error": "field size must be a number"}]}
    assert admin.post(url, json=[{}] * 4).status_code == 400  # more than DATABASE_IMPORT_MAX_LINES
    assert admin.post(url, json={"store": "Lyon"}).status_code == 400
    assert admin.post(url).status_code == 400
    assert admin.post(f"{BASE}/nosuch/import", json=[]).status_code == 404
    assert _count(app) == (1, 2)


def test_bot_answers_from_a_record_and_cites_it(app, admin):
    bot = _bot(admin)
    tid = _table(admin, bot_ids=[bot])["id"]
    lyon = _record(admin, tid, store="Lyon", opening_hours="9-18")
    _record(admin, tid, store="Paris", opening_hours="10-20")
    conv = admin.post("/api/v1/conversations", json={"bot_id": bot}).get_json()["id"]
    resp = admin.post(f"/api/v1/conversations/{conv}/messages",
                      json={"content": "What are the opening hours of the Lyon store?", "stream": False})
    assert resp.status_code == 200, resp.get_json()
    message = resp.get_json()["message"]
    assert "opening hours: 9-18" in message["content"] and "Paris" not in message["content"]
    assert [(c["table_id"], c["record_id"]) for c in message["citations"]] == [(tid, lyon["id"])]
    assert message["citations"][0]["content"] == "store: Lyon; opening hours: 9-18"
    # a bot without tables (and no knowledge) cites nothing
    other = _bot(admin)
    conv = admin.post("/api/v1/conversations", json={"bot_id": other}).get_json()["id"]
    message = admin.post(f"/api/v1/conversations/{conv}/messages",
                         json={"content": "opening hours of the Lyon store?", "stream": False}).get_json()["message"]
    assert message["citations"] == [] and "9-18" not in message["content"]


def test_records_and_knowledge_passages_in_one_prompt(app, admin):
    from app.services.chat import system_prompt

    passages = [{"table_id": "t1", "record_id": "r1", "name": "stores", "content": "store: Lyon"},
                {"source_id": "s1", "row_id": "w1", "name": "faq", "content": "We sell bread."}]

    class Bot:
        instructions = ""

    prompt = system_prompt(Bot(), passages)
    assert "[table t1 record r1] stores\nstore: Lyon" in prompt and "[source s1 row w1] faq\nWe sell bread." in prompt


def test_scoped_key_sees_only_its_bots_tables(app, client, admin):
    mine, theirs = _bot(admin), _bot(admin)
    my_table = _table(admin, bot_ids=[mine])["id"]
    their_table = _table(admin, bot_ids=[theirs])["id"]
    rec = _record(admin, their_table, store="Paris")
    scoped = Api(client, create_key(app, kind="client", bot_ids=[mine]))
    assert [t["id"] for t in scoped.get(BASE).get_json()["data"]] == [my_table]
    assert scoped.get(f"{BASE}/{my_table}").status_code == 200
    for method, path in (("GET", f"{BASE}/{their_table}"), ("GET", f"{BASE}/{their_table}/records"),
                         ("GET", f"{BASE}/{their_table}/records/{rec['id']}"),
                         ("DELETE", f"{BASE}/{their_table}/records/{rec['id']}")):
        resp = scoped.request(method, path)
        unknown = scoped.request(method, path.replace(their_table, "01a00000-0000-7000-8000-000000000000"))
        assert resp.status_code == unknown.status_code == 404, path
        assert resp.get_json()["message"].replace(their_table, "X") == \
            unknown.get_json()["message"].replace("01a00000-0000-7000-8000-000000000000", "X")
    assert scoped.post(f"{BASE}/{their_table}/records", json={"values": {"store": "x"}}).status_code == 404
    # records of its own tables it may write; tables only admins change
    assert scoped.post(f"{BASE}/{my_table}/records", json={"values": {"store": "Lyon"}}).status_code == 201
    assert scoped.post(BASE, json={"name": "t", "fields": []}).status_code == 403
    assert scoped.delete(f"{BASE}/{my_table}").status_code == 403
    assert _count(app) == (2, 2)


def test_database_rate_category_holds_its_plan(app, client):
    app.config["RATE_LIMIT_PLANS"] = {"default": {}, "tables": {"database": 2, "*": 100}}
    api = Api(client, create_key(app, kind="admin", plan="tables"))
    assert [api.get(BASE).status_code for _ in range(2)] == [200, 200]
    limited = api.get(BASE)
    assert limited.status_code == 429 and limited.get_json()["error"] == "rate_limited"
    assert limited.headers["RateLimit-Limit"] == "2"
    assert api.get("/api/v1/account").status_code == 200  # other categories keep their budget
    from app.storage.models import Usage

    with app.app_context(), db.connection_context():
        categories = [u.category for u in Usage.select().order_by(Usage.created_at, Usage.id)]
    assert categories[:3] == ["database"] * 3


def test_cli_create_import_and_list(app, tmp_path):
    out = run_cli(app, "databases", "create", "--name", "stores", "--field", "store:text:searchable",
                  "--field", "size:number", "--json")
    assert out.exit_code == 0, out.output
    table = json.loads(out.output)
    assert table["fields"] == [{"name": "store", "type": "text", "searchable": True},
                               {"name": "size", "type": "number", "searchable": False}]
    csv_file = tmp_path / "stores.csv"
    csv_file.write_text("store,size\nLyon,3\nNice,x\n")
    out = run_cli(app, "databases", "import", table["id"], str(csv_file))
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"created": 1, "rejected": [{"line": 3, "error": "field size must be a number"}]}
    out = run_cli(app, "databases", "list")
    assert out.exit_code == 0 and table["id"] in out.output and "stores" in out.output
    bad = run_cli(app, "databases", "create", "--name", "t", "--field", "a:money")
    assert bad.exit_code != 0 and "type must be one of" in bad.output


def test_openapi_documents_the_database_api(app, client):
    spec = client.get("/api/openapi.json").get_json()
    paths = spec["paths"]
    for path in ("/api/v1/databases/tables", "/api/v1/databases/tables/{table_id}",
                 "/api/v1/databases/tables/{table_id}/records",
                 "/api/v1/databases/tables/{table_id}/records/{record_id}",
                 "/api/v1/databases/tables/{table_id}/import"):
        assert path in paths, path
    body = paths["/api/v1/databases/tables/{table_id}/import"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv"} <= set(body)
    assert {"TableOut", "RecordOut", "ImportReport"} <= set(spec["components"]["schemas"])

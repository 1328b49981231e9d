"""The Database API's record indexes (app/storage/record_index.py): the value index and the word
index follow every write, filters stay exact where the index key is not (long texts, large
integers), a bot turn's search prefers the question's rare words, and an instance at schema 16
gets its indexes on upgrade. Every test runs on SQLite and PostgreSQL."""
from app.storage import migrations, record_index
from app.storage.db import db, is_sqlite

from .conftest import make_app

BASE = "/api/v1/databases/tables"
FIELDS = [{"name": "store", "type": "text", "searchable": True}, {"name": "note", "type": "text"},
          {"name": "size", "type": "number"}, {"name": "open_sunday", "type": "boolean"},
          {"name": "opened", "type": "date"}]


def _table(admin, fields=FIELDS):
    resp = admin.post(BASE, json={"name": "stores", "fields": fields})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def _index_state(app):
    """(value rows as stored, value rows the records call for, word entries, records with words)."""
    from app.storage.models import DataRecord, DataTable, DataValue

    with app.app_context(), db.connection_context():
        stored = sorted((v.record_id, v.table_id, v.field, v.num, v.txt) for v in DataValue.select())
        wanted = []
        for table in DataTable.select():
            types = {f["name"]: f["type"] for f in table.spec}
            for r in DataRecord.select().where(DataRecord.table == table):
                wanted += record_index.value_rows(r.id, table.id, r.values, types)
        with_words = DataRecord.select().where(DataRecord.search_text != "").count()
        if is_sqlite():
            words = db.execute_sql("SELECT count(*) FROM data_record_fts").fetchone()[0]
            assert record_index.orphan_count() == 0
        else:
            words = db.execute_sql("SELECT count(*) FROM data_record WHERE tsv != ''::tsvector").fetchone()[0]
    return stored, sorted(wanted), words, with_words


def _assert_in_step(app):
    stored, wanted, words, with_words = _index_state(app)
    assert stored == wanted
    assert words == with_words


def _stores(admin, tid, *query):
    resp = admin.get(f"{BASE}/{tid}/records?" + "&".join(query))
    assert resp.status_code == 200, resp.get_json()
    return [r["values"].get("store") for r in resp.get_json()["data"]]


def test_indexes_follow_every_write(app, admin):
    tid = _table(admin)
    made = admin.post(f"{BASE}/{tid}/records", json={"values": {"store": "Lyon", "size": 3, "open_sunday": True}})
    assert made.status_code == 201
    rid = made.get_json()["id"]
    imported = admin.post(f"{BASE}/{tid}/import", json=[{"store": f"Nice {i}", "size": i, "opened": "2024-01-02"}
                                                        for i in range(30)] + [{"size": "x"}])
    assert imported.get_json()["created"] == 30
    _assert_in_step(app)
    assert admin.patch(f"{BASE}/{tid}/records/{rid}", json={"values": {"size": None, "note": "new"}}).status_code == 200
    assert admin.put(f"{BASE}/{tid}/records/{rid}", json={"values": {"store": "Lyon Confluence"}}).status_code == 200
    _assert_in_step(app)
    assert _stores(admin, tid, "filter=store:Lyon Confluence") == ["Lyon Confluence"]
    assert _stores(admin, tid, "filter=size:gte:28") == ["Nice 28", "Nice 29"]
    # a type change (number to text), a searchable field more, a field without values removed
    fields = [dict(f, type="text") if f["name"] == "size" else f for f in FIELDS if f["name"] != "open_sunday"]
    fields = [dict(f, searchable=True) if f["name"] == "note" else f for f in fields]
    changed = admin.patch(f"{BASE}/{tid}", json={"fields": fields})
    assert changed.status_code == 200, changed.get_json()
    _assert_in_step(app)
    assert _stores(admin, tid, "filter=size:7") == ["Nice 7"]
    assert _stores(admin, tid, "filter=size:gt:8", "limit=3") == ["Nice 9"]  # now compared as text: "9" > "8"
    bad = admin.patch(f"{BASE}/{tid}", json={"fields": [f for f in fields if f["name"] != "opened"]})
    assert bad.status_code == 400 and "opened" in bad.get_json()["message"]
    _assert_in_step(app)
    assert admin.delete(f"{BASE}/{tid}/records/{rid}").status_code == 204
    _assert_in_step(app)
    other = _table(admin)
    admin.post(f"{BASE}/{other}/import", json=[{"store": "Lille"}])
    assert admin.delete(f"{BASE}/{tid}").status_code == 204
    stored, wanted, words, with_words = _index_state(app)
    assert stored == wanted and len(stored) == 1 and words == with_words == 1


def test_filters_are_exact_where_the_index_key_is_not(app, admin):
    tid = _table(admin)
    head = "x" * record_index.PREFIX
    big = 2 ** 53
    rows = [{"store": head + "a", "size": big}, {"store": head + "b", "size": big + 1},
            {"store": head, "size": -2.5}, {"store": "short", "size": 0, "open_sunday": False},
            {"store": "dated", "opened": "2024-02-29T23:30:00+01:00"}]
    assert admin.post(f"{BASE}/{tid}/import", json=rows).get_json()["created"] == 5
    assert _stores(admin, tid, f"filter=store:{head}b") == [head + "b"]
    assert _stores(admin, tid, f"filter=store:{head}") == [head]
    assert _stores(admin, tid, f"filter=store:gt:{head}a") == [head + "b"]
    assert _stores(admin, tid, f"filter=store:lt:{head}a", "sort=store") == ["dated", "short", head]
    assert _stores(admin, tid, f"filter=size:{big + 1}") == [head + "b"]
    assert _stores(admin, tid, f"filter=size:{big}") == [head + "a"]
    assert _stores(admin, tid, "filter=size:lt:0") == [head]
    assert _stores(admin, tid, "filter=size:gte:0", "filter=size:lte:0") == ["short"]
    assert _stores(admin, tid, "filter=open_sunday:false") == ["short"]
    assert _stores(admin, tid, "filter=opened:2024-02-29T22:30:00Z") == ["dated"]  # stored in UTC
    assert _stores(admin, tid, "filter=opened:gte:2024-02-29") == ["dated"]
    assert _stores(admin, tid, "filter=opened:", "filter=size:") == []  # neither value: no record
    assert sorted(_stores(admin, tid, "filter=opened:ne:")) == ["dated"]
    assert sorted(_stores(admin, tid, "filter=size:ne:0")) == sorted([head + "a", head + "b", head, "dated"])


def test_turn_search_prefers_the_rare_words(app, admin, monkeypatch):
    from app.services import databases

    monkeypatch.setattr(record_index, "RARE", 5)  # "lyon" is held by more records than that
    tid = _table(admin)
    rows = [{"store": f"Lyon {i}", "note": f"hours {i}"} for i in range(12)] + [{"store": "Paris Bastille"},
                                                                                 {"store": "Paris Opera"}]
    assert admin.post(f"{BASE}/{tid}/import", json=rows).get_json()["created"] == 14
    with app.app_context(), db.connection_context():
        found = databases.passages_for([tid], "What are the opening hours of the Lyon 7 store?", 3)
        assert [p["content"] for p in found] == ["store: Lyon 7; note: hours 7"]  # not Lyon 1, 2...
        assert found[0]["table_id"] == tid and found[0]["name"] == "stores" and found[0]["score"] > 0
        common = databases.passages_for([tid], "Which stores are in Lyon?", 3)
        # no rare word: every record holding a word is ranked, up to top_k
        assert len(common) == 3 and all(p["content"].startswith("store: Lyon ") for p in common)
        both = [p["content"] for p in databases.passages_for([tid], "Lyon 7 or Paris Opera?", 3)]
        # the rare words (7, opera, paris) find them; the one that holds only "paris" comes last
        assert set(both[:2]) == {"store: Lyon 7; note: hours 7", "store: Paris Opera"}
        assert both[2:] == ["store: Paris Bastille"]
        assert [p["content"] for p in databases.passages_for([tid], "the bastille shop", 3)] == \
            ["store: Paris Bastille"]
        assert databases.passages_for([tid], "hours", 3) == []  # not a searchable field
        assert databases.passages_for([tid], "berlin", 3) == []
        assert databases.passages_for(["01a00000-0000-7000-8000-000000000000"], "Lyon 7", 3) == []


def test_schema_16_instance_gets_its_indexes_on_upgrade(database_url, tmp_path):
    from app.services import databases
    from app.storage.models import DataRecord, DataTable

    app = make_app(database_url, tmp_path)
    with app.app_context(), db.connection_context():
        table = databases.create_table(name="stores", fields=FIELDS, config=app.config)
        databases.import_records(table, config=app.config, items=[{"store": "Lyon", "size": 3}, {"store": "Nice"}])
        # what schema 16 had: no value table, no word index, no seq
        db.execute_sql("DROP TABLE data_value")
        if is_sqlite():
            db.execute_sql("DROP TABLE data_record_fts")
            db.execute_sql('DROP INDEX IF EXISTS "data_record_seq"')
            db.execute_sql("ALTER TABLE data_record DROP COLUMN seq")
        else:
            db.execute_sql("ALTER TABLE data_record DROP COLUMN tsv")
            db.execute_sql("ALTER TABLE data_record DROP COLUMN seq")
        from app.storage.models import SchemaVersion

        SchemaVersion.update(version=16).execute()
    app2 = make_app(database_url, tmp_path)
    with app2.app_context(), db.connection_context():
        assert migrations.current_version() == migrations.LATEST
        table = DataTable.get()
        items, _ = databases.list_records(table, filters=["size:3"])
        assert [r.values["store"] for r in items] == ["Lyon"]
        assert [p["content"] for p in databases.passages_for([table.id], "the Nice store", 3)] == ["store: Nice"]
        if is_sqlite():
            assert DataRecord.select().where(DataRecord.seq.is_null()).count() == 0
    _assert_in_step(app2)


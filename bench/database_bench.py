"""Database API benchmark: record lookup at 100,000 records on SQLite (and PostgreSQL).

    .venv/bin/python -m bench.database_bench [--records 100000] [--lookups 1000] [--postgres URL]

Imports a reproducible table of stores (seeded; store name, city, opening hours, size, a date)
through ``databases.import_records`` (the import route's call), then times, each over random
records: a lookup by id (``get_record``, the GET route's call), an equality filter on a field
(``list_records`` with ``filter=store:<name>``, one page), a range filter (``size:gte:<n>``
matching about 0.2% of the records), a ``contains`` filter (no index: a scan of the table's
records), and the records a bot's turn is given for a question naming a store (``passages_for``,
what ``retrieval.passages_for_turn`` calls). On PostgreSQL the tables are analysed after the
import (the statistics autovacuum keeps); ``db_mb`` is the database's size after the import.
"""
import argparse
import os
import random
import statistics
import tempfile
import time


def rows(n, seed=7):
    rnd = random.Random(seed)
    cities = ["Lyon", "Paris", "Nice", "Lille", "Nantes", "Rennes", "Dijon", "Brest", "Metz", "Tours"]
    for i in range(n):
        yield {"store": f"{rnd.choice(cities)} {i}", "city": rnd.choice(cities),
               "opening_hours": f"{rnd.randint(7, 10)}-{rnd.randint(17, 21)}", "size": rnd.randint(50, 5000),
               "opened": f"20{rnd.randint(10, 25)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"}


FIELDS = [{"name": "store", "type": "text", "searchable": True}, {"name": "city", "type": "text"},
          {"name": "opening_hours", "type": "text"}, {"name": "size", "type": "number"},
          {"name": "opened", "type": "date"}]


def _timed(fn, args):
    out = []
    for arg in args:
        t0 = time.perf_counter()
        fn(arg)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _summary(ms):
    ms = sorted(ms)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2),
            "max_ms": round(ms[-1], 2)}


def run(database_url, records, lookups):
    from app import create_app
    from app.services import databases
    from app.storage.db import db

    tmp = tempfile.mkdtemp(prefix="chatport-dbb-")
    app = create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": tmp, "DATABASE_MAX_RECORDS": records,
                      "DATABASE_IMPORT_MAX_LINES": records})
    with app.test_request_context(), db.connection_context():
        config = app.config
        table = databases.create_table(name="stores", fields=FIELDS, config=config)
        t0 = time.perf_counter()
        report = databases.import_records(table, config=config, items=list(rows(records)))
        load_s = time.perf_counter() - t0
        assert report["created"] == records, report["rejected"][:3]
        if not databases.is_sqlite():
            db.execute_sql("ANALYZE")
        ids = [r.id for r in databases.DataRecord.select(databases.DataRecord.id)
               .where(databases.DataRecord.table == table)]
        rnd = random.Random(1)
        sample = [rnd.randrange(records) for _ in range(lookups)]
        by_id = _timed(lambda i: databases.get_record(table, ids[i]), sample)
        names = {i: f"{r['store']}" for i, r in enumerate(rows(records)) if i in set(sample[:200])}
        by_filter = _timed(lambda i: databases.list_records(table, filters=[f"store:{names[i]}"], limit=10),
                           sample[:200])
        turn = _timed(lambda i: databases.passages_for([table.id], f"opening hours of the {names[i]} store?", 3),
                      sample[:200])
        by_range = _timed(lambda i: databases.list_records(table, filters=[f"size:gte:{4990 - i % 10}"], limit=10),
                          sample[:200])
        by_contains = _timed(lambda i: databases.list_records(table, filters=[f"store:contains:{i}"], limit=10),
                             sample[:50])
        size = _size(database_url)
    return {"records": records, "import_s": round(load_s, 2), "import_per_s": round(records / load_s),
            "db_mb": size, "get_by_id": _summary(by_id), "filter_eq": _summary(by_filter),
            "filter_range": _summary(by_range), "filter_contains": _summary(by_contains),
            "turn_records": _summary(turn)}


def _size(database_url):
    from app.storage.db import db, is_sqlite

    if is_sqlite():
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return round(os.path.getsize(database_url[len("sqlite:///"):]) / 1e6, 1)
    return round(int(db.execute_sql("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                                "AND c.relkind = 'r'").fetchone()[0]) / 1e6, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL (a fresh schema)")
    args = parser.parse_args()
    results = {"sqlite": run(f"sqlite:///{tempfile.mkdtemp()}/bench.db", args.records, args.lookups)}
    if args.postgres:
        import uuid

        import psycopg2

        schema = "bench_" + uuid.uuid4().hex[:8]
        conn = psycopg2.connect(args.postgres)
        conn.autocommit = True
        conn.cursor().execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in args.postgres else "?"
            results["postgresql"] = run(f"{args.postgres}{sep}options=-csearch_path%3D{schema}",
                                        args.records, args.lookups)
        finally:
            from app.storage.db import db

            if db.obj is not None and hasattr(db.obj, "close_all"):
                db.obj.close_all()
            conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
            conn.close()
    for backend, result in results.items():
        print(backend, result)


if __name__ == "__main__":
    main()

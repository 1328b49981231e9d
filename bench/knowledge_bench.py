"""Knowledge benchmark: sync throughput, index size and search latency on SQLite and PostgreSQL.

    .venv/bin/python -m bench.knowledge_bench [--rows 20000] [--queries 1000] [--postgres URL]

Generates a reproducible corpus (seeded; ~2.5 KB of markdown a row, ~50 MB for 20,000 rows),
loads it into one source, syncs it (chunking + full-text indexing), then runs random 3-word
queries through ``knowledge.search`` (the same call retrieval makes for a bot turn).
"""
import argparse
import os
import random
import statistics
import tempfile
import time
import uuid


def corpus(rows, seed=42):
    rnd = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ten", "ra", "sol", "vi", "den", "tor", "pa", "qui", "ne", "zar", "mu", "fe"]
    vocab = sorted({"".join(rnd.choice(syllables) for _ in range(rnd.randint(2, 4))) for _ in range(8000)})
    weights = [1.0 / (i + 1) for i in range(len(vocab))]  # Zipf-like, as in real text
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    for i in range(rows):
        parts = [f"# Document {i} {rnd.choice(vocab)}"]
        for _ in range(3):
            parts.append(f"## {' '.join(rnd.choices(vocab, cum_weights=cum, k=3))}")
            for _ in range(2):
                parts.append(" ".join(rnd.choices(vocab, cum_weights=cum, k=42)) + ".")
        yield {"name": f"doc-{i}.md", "content": "\n\n".join(parts)}, vocab


def run(database_url, rows, queries):
    from app import create_app
    from app.services import knowledge
    from app.storage.db import db

    tmp = tempfile.mkdtemp(prefix="chatport-kb-")
    app = create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": tmp, "KNOWLEDGE_MAX_CHARS": None})
    with app.app_context(), db.connection_context():
        source = knowledge.create_source(name="bench")
        gen = corpus(rows)
        batch, chars, vocab = [], 0, None
        t0 = time.perf_counter()
        for row, vocab in gen:
            batch.append(row)
            chars += len(row["content"])
            if len(batch) == 500:
                knowledge.add_rows(source, batch)
                batch = []
        if batch:
            knowledge.add_rows(source, batch)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        knowledge.sync_source(source.id)
        sync_s = time.perf_counter() - t0
        size = _index_size(db)
        rnd = random.Random(7)
        words = vocab[:2000]
        latencies, hits = [], 0
        for _ in range(queries):
            q = " ".join(rnd.sample(words, 3))
            t = time.perf_counter()
            found = knowledge.search(q, source_ids=[source.id], top_k=5)
            latencies.append((time.perf_counter() - t) * 1000)
            hits += bool(found)
        latencies.sort()
        return {"rows": rows, "mb": chars / 1e6, "load_s": load_s, "sync_s": sync_s, "rows_per_s": rows / sync_s,
                "index_mb": size, "p50_ms": statistics.median(latencies),
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1], "queries_with_hits": hits}


def _index_size(db):
    from app.storage.db import is_sqlite

    if is_sqlite():
        pages = db.execute_sql("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'knowledge_chunk_fts%'").fetchone()[0]
        return (pages or 0) / 1e6
    size = db.execute_sql("SELECT pg_relation_size('knowledge_chunk_tsv')").fetchone()[0]
    return size / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--postgres", default=os.environ.get("CHATPORT_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (a fresh schema is created and dropped)")
    args = parser.parse_args()
    results = {}
    sqlite_dir = tempfile.mkdtemp(prefix="chatport-kb-sqlite-")
    results["SQLite (FTS5, BM25)"] = run(f"sqlite:///{sqlite_dir}/kb.db", args.rows, args.queries)
    print("SQLite", results["SQLite (FTS5, BM25)"], flush=True)
    if args.postgres:
        import psycopg2

        schema = "bench_" + uuid.uuid4().hex[:8]
        conn = psycopg2.connect(args.postgres)
        conn.autocommit = True
        conn.cursor().execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in args.postgres else "?"
            results["PostgreSQL (tsvector, GIN)"] = run(f"{args.postgres}{sep}options=-csearch_path%3D{schema}",
                                                        args.rows, args.queries)
            print("PostgreSQL", results["PostgreSQL (tsvector, GIN)"], flush=True)
        finally:
            from app.storage.db import db

            if hasattr(db.obj, "close_all"):
                db.obj.close_all()
            conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
            conn.close()
    print("\n| backend | rows | corpus MB | sync rows/s | index MB | search p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rows']} | {r['mb']:.1f} | {r['rows_per_s']:.0f} | {r['index_mb']:.1f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()

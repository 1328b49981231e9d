"""Knowledge core: chunking, sync, full-text search (FTS5 / PostgreSQL), retrieval, extractive answers."""
import pytest

from app.errors import BadRequest, NotFound
from app.services import knowledge, retrieval
from app.storage import search_index
from app.storage.db import db
from app.storage.models import Bot, KnowledgeChunk, KnowledgeRow

DOCS = [
    {"name": "Moon", "content": "# The Moon\n\nThe Moon is about 384,400 kilometers from Earth. "
                                 "It orbits Earth every 27 days.", "tags": ["space"]},
    {"name": "Refunds", "content": "# Refund policy\n\nRefunds are issued within 14 days of purchase. "
                                    "Contact support with your order number.", "tags": ["billing"]},
    {"name": "Shipping", "content": "Orders ship within two business days. Express shipping costs extra.",
     "tags": ["billing", "logistics"]},
]


@pytest.fixture
def ctx(app):
    with app.app_context(), db.connection_context():
        yield app


def _source(rows=DOCS, **kw):
    source = knowledge.create_source(name=kw.pop("name", "docs"), **kw)
    knowledge.add_rows(source, rows)
    return knowledge.sync_source(source.id)


def test_chunking_is_markdown_aware_and_bounded():
    text = "# Intro\n\nShort para.\n\n## Details\n\n" + ("Sentence number one is here. " * 120)
    chunks = knowledge.chunk_markdown(text, max_chars=500, overlap=50)
    assert chunks[0] == ("Intro", "Short para.")
    assert all(h == "Details" for h, _ in chunks[1:]) and len(chunks) > 3
    assert all(len(c) <= 500 for _, c in chunks)
    assert chunks[2][1][:20] in chunks[1][1]  # overlap carried over
    assert knowledge.chunk_markdown("") == []


def test_sync_and_search_ranked(ctx):
    source = _source()
    assert source.status == "synced" and source.last_sync is not None
    assert {r.status for r in KnowledgeRow.select()} == {"synced"}
    hits = knowledge.search("how far away is the moon")
    assert hits[0]["name"] == "Moon" and "384,400" in hits[0]["content"]
    assert hits[0]["source_id"] == source.id and hits[0]["score"] > 0
    assert knowledge.search("refund within days")[0]["name"] == "Refunds"
    assert knowledge.search("zebra quantum") == []


def test_filters_by_source_and_tag_in_sql(ctx):
    a = _source(name="a")
    b = _source(rows=[{"name": "Moon B", "content": "The moon is made of rock, not cheese."}], name="b")
    assert {h["source_id"] for h in knowledge.search("moon", source_ids=[b.id])} == {b.id}
    assert {h["source_id"] for h in knowledge.search("moon")} == {a.id, b.id}
    billing = knowledge.resolve_tag_ids(names=["billing"])
    names = {h["name"] for h in knowledge.search("days support orders", tag_ids=billing)}
    assert names == {"Refunds", "Shipping"}
    space = knowledge.resolve_tag_ids(names=["space"])
    assert {h["name"] for h in knowledge.search("days", tag_ids=space)} == {"Moon"}
    assert knowledge.resolve_source_ids(names=["b"]) == [b.id]
    assert knowledge.resolve_source_ids() is None and knowledge.resolve_tag_ids() is None
    with pytest.raises(NotFound):
        knowledge.resolve_source_ids(names=["nope"])
    with pytest.raises(NotFound):
        knowledge.resolve_tag_ids(ids=["nope"])


HOSTILE_QUERIES = [  # (query, the names of the rows it must find, best first)
    ('moon" OR', ["Moon"]), ("NEAR(moon", ["Moon"]), ("moon*", ["Moon"]), ("-moon AND", ["Moon"]),
    ('"moon"', ["Moon"]), ("moon AND OR NOT", ["Moon"]), ("heading:moon", ["Moon"]), ("{refunds}^", ["Refunds"]),
    ("\u00e9t\u00e9 moon", ["Moon"]), ('"', []), ("NEAR(", []), ("*", []), ("AND OR", []), ("((()))", []),
    ("'; DROP TABLE knowledge_chunk; --", []), ("a" * 2000, []),
]


def test_query_syntax_is_only_words(app, admin):
    """Search operators and quotes in a query are plain text: the search answers 200 with the
    rows its words match (none for a query without a word that occurs)."""
    with app.app_context(), db.connection_context():
        _source()
    for query, names in HOSTILE_QUERIES:
        resp = admin.post("/api/v1/knowledge/search", json={"query": query})
        assert resp.status_code == 200, (query, resp.get_json())
        assert [hit["name"] for hit in resp.get_json()["data"]] == names, query
    assert admin.post("/api/v1/knowledge/search", json={"query": "moon"}).get_json()["data"][0]["name"] == "Moon"


def test_delete_leaves_no_orphans(ctx):
    source = _source()
    other = _source(name="other")
    assert KnowledgeChunk.select().count() > 0
    knowledge.delete_source(source)
    assert search_index.orphan_count() == 0
    assert {h["source_id"] for h in knowledge.search("moon refund shipping")} == {other.id}
    knowledge.replace_text(other, "Completely new text about penguins.")
    knowledge.sync_source(other.id)
    assert search_index.orphan_count() == 0
    assert knowledge.search("refund") == [] and knowledge.search("penguins")[0]["source_id"] == other.id


def test_bad_rows_write_nothing(ctx):
    source = knowledge.create_source(name="s")
    for rows in ([{"content": ""}], [{"content": "ok"}, {"content": 5}], [{"content": "ok", "tags": "x"}],
                 [{"content": "ok", "tags": [""]}], [{"content": "x" * 20}]):
        with pytest.raises(BadRequest):
            knowledge.add_rows(source, rows, max_row_chars=10 if rows[0]["content"] == "x" * 20 else 1000)
    assert KnowledgeRow.select().count() == 0
    with pytest.raises(BadRequest):
        knowledge.create_source(name="x", type="FTP")
    with pytest.raises(BadRequest):
        knowledge.create_source(name="x", sync_interval="hourly")


def test_retrieval_for_bot_and_extractive_answer(ctx):
    from app.providers.llm import registry
    from app.services import chat

    bot = Bot.create(name="kb", model="extractive/extractive", greeting="")
    lonely = Bot.create(name="none", model="echo/echo")
    source = knowledge.create_source(name="docs", bot_ids=[bot.id])
    knowledge.add_rows(source, DOCS)
    knowledge.sync_source(source.id)
    assert retrieval.passages_for_turn(lonely, "moon") == []
    passages = retrieval.passages_for_turn(bot, "How far is the Moon from Earth?")
    assert passages[0]["name"] == "Moon"
    conv = chat.start_conversation(bot)
    done = chat.prepare_turn(registry=registry(), config=ctx.config, bot=bot, conversation=conv,
                             content="How far is the Moon from Earth?").run()
    assert "384,400 kilometers" in done.content
    assert done.citations[0]["row_id"] == passages[0]["row_id"]
    fallback = chat.prepare_turn(registry=registry(), config=ctx.config, bot=bot, conversation=conv,
                                 content="xylophone zeppelin").run()
    assert "don't know" in fallback.content

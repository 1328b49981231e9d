"""Console pages through the Flask client: each form saves through the services, and bad input
shows its error on the form (400) and changes nothing."""
import re

import pytest

from app.storage.db import db
from app.storage.models import ApiKey, Bot, BotSource, Channel

from .conftest import create_key, make_app
from .console_client import Console, field_error, text_of


@pytest.fixture
def app(tmp_path):
    """These pages' rules are the services' (tested on both databases there): SQLite only here."""
    application = make_app(f"sqlite:///{tmp_path}/chatport.db", tmp_path)
    yield application
    if not db.is_closed():
        db.close()


@pytest.fixture
def console(app):
    c = Console(app.test_client())
    c.sign_in(create_key(app, kind="admin", name="console admin"))
    return c


def rows(app, model, *where):
    with app.app_context(), db.connection_context():
        query = model.select()
        if where:
            query = query.where(*where)
        return list(query)


def make_source(app, name="Handbook", content="# Refunds\n\nRefunds take five days."):
    from app.services import knowledge

    with app.app_context(), db.connection_context():
        source = knowledge.create_source(name=name)
        knowledge.add_rows(source, [{"name": "refunds", "content": content}])
        knowledge.sync_source(source.id)
        return source.id


# ---------------------------------------------------------------- bots


def test_bots_are_created_listed_edited_and_attached_to_knowledge(app, console):
    source_id = make_source(app)
    page = console.get("/console/bots/new")
    assert page.status_code == 200
    assert 'value="echo/echo" selected' in page.get_data(as_text=True)  # DEFAULT_MODEL preselected
    resp = console.post("/console/bots/new", {
        "name": "Support", "instructions": "Answer briefly.", "model": "extractive/extractive",
        "temperature": "0.3", "max_tokens": "", "greeting": "Hi!", "allowed_models": ["echo/echo"],
        "source_ids": [source_id], "top_k": "3", "max_chars": "", "context_messages": "", "records": "2",
        "tables_tool": "on"})
    assert resp.status_code == 302
    (bot,) = rows(app, Bot)
    assert (bot.name, bot.model, bot.temperature, bot.greeting) == ("Support", "extractive/extractive", 0.3, "Hi!")
    assert bot.allowed_models == ["echo/echo"] and bot.max_tokens is None
    assert bot.knowledge == {"top_k": 3, "records": 2, "tables_tool": True}
    assert [link.source_id for link in rows(app, BotSource)] == [source_id]
    assert resp.headers["Location"] == f"/console/bots/{bot.id}"
    page = console.get(resp.headers["Location"])
    assert "Bot Support created." in text_of(page)
    assert 'name="tables_tool" value="on" checked' in page.get_data(as_text=True)
    assert "Bot Support created." not in text_of(console.get(resp.headers["Location"]))  # shown once
    assert "Support" in text_of(console.get("/console/bots"))

    resp = console.post(f"/console/bots/{bot.id}", {
        "name": "Support desk", "instructions": "", "model": "echo/echo", "temperature": "", "max_tokens": "50",
        "greeting": "", "top_k": "", "max_chars": "", "context_messages": "", "enabled": "on"})
    assert resp.status_code == 302
    (bot,) = rows(app, Bot)
    assert (bot.name, bot.model, bot.temperature, bot.max_tokens) == ("Support desk", "echo/echo", None, 50)
    assert bot.allowed_models == [] and bot.knowledge == {} and bot.enabled
    assert rows(app, BotSource) == []  # unchecked: detached


@pytest.mark.parametrize("field, value, says", [
    ("name", "", "Length"),
    ("temperature", "hot", "between 0 and 2"),
    ("temperature", "2.5", "between 0 and 2"),
    ("max_tokens", "0", "1"),
    ("model", "nobody/nothing", "Pick one of this server's models"),
    ("top_k", "99", "0"),
    ("records", "51", "0"),
    ("allowed_models", "nobody/nothing", "not a model of this server"),
    ("source_ids", "no-such-source", "unknown"),
])
def test_bad_bot_input_shows_on_the_form_and_saves_nothing(app, console, field, value, says):
    good = {"name": "Support", "instructions": "", "model": "echo/echo", "temperature": "", "max_tokens": "",
            "greeting": "", "top_k": "", "max_chars": "", "context_messages": ""}
    resp = console.post("/console/bots/new", {**good, field: value})
    assert resp.status_code == 400
    assert says.lower() in (field_error(resp, field) or "").lower() or says.lower() in text_of(resp).lower()
    assert f'value="{value}"' in resp.get_data(as_text=True) or field in ("allowed_models", "source_ids", "model")
    assert rows(app, Bot) == []


def test_a_bad_edit_changes_nothing(app, console):
    console.post("/console/bots/new", {"name": "Support", "model": "echo/echo"})
    (bot,) = rows(app, Bot)
    console.get(f"/console/bots/{bot.id}")
    resp = console.post(f"/console/bots/{bot.id}", {"name": "Renamed", "model": "echo/echo", "temperature": "9",
                                                     "enabled": "on"})
    assert resp.status_code == 400 and "between 0 and 2" in field_error(resp, "temperature")
    assert rows(app, Bot)[0].name == "Support"


def test_bots_are_disabled_enabled_and_deleted_by_name(app, console):
    console.post("/console/bots/new", {"name": "Support", "model": "echo/echo"})
    (bot,) = rows(app, Bot)
    console.get("/console/bots")
    assert console.post(f"/console/bots/{bot.id}/disable").status_code == 302
    assert not rows(app, Bot)[0].enabled
    assert "disabled" in text_of(console.get("/console/bots"))
    console.post(f"/console/bots/{bot.id}/enable")
    assert rows(app, Bot)[0].enabled
    resp = console.post(f"/console/bots/{bot.id}/delete", {"confirm": "Suport"})
    assert resp.status_code == 400 and "Type the bot's name" in field_error(resp, "confirm")
    assert len(rows(app, Bot)) == 1
    assert console.post(f"/console/bots/{bot.id}/delete", {"confirm": "Support"}).status_code == 302
    assert rows(app, Bot) == []
    assert console.get(f"/console/bots/{bot.id}").status_code == 404


# ---------------------------------------------------------------- keys and channels


SECRET = re.compile(r'value="(cp_[^"]+)" data-secret')


def test_a_new_key_is_shown_once_with_a_curl_line(app, console):
    console.post("/console/bots/new", {"name": "Support", "model": "echo/echo"})
    (bot,) = rows(app, Bot)
    console.get("/console/keys")
    resp = console.post("/console/keys", {"name": "website", "kind": "client", "bot_ids": [bot.id],
                                          "plan": "free", "credit_quota": "500"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/console/keys"
    page = console.get("/console/keys")
    (secret,) = SECRET.findall(page.get_data(as_text=True))
    text = text_of(page)
    assert f"Authorization: Bearer {secret}" in text and f'"bot_id": "{bot.id}"' in text and "curl -s -X POST" in text
    row = rows(app, ApiKey, ApiKey.name == "website")[0]
    assert (row.kind, row.bot_ids, row.plan, row.credit_quota) == ("client", [bot.id], "free", 500)
    assert secret.endswith(row.last4) and f"{row.prefix}…{row.last4}" in text
    again = console.get("/console/keys")
    assert SECRET.findall(again.get_data(as_text=True)) == [] and secret not in again.get_data(as_text=True)
    from app.services import keys

    with app.app_context(), db.connection_context():
        assert keys.authenticate(secret).id == row.id  # the key shown is the key stored


@pytest.mark.parametrize("field, value", [("kind", "root"), ("credit_quota", "-1"), ("credit_quota", "lots"),
                                          ("plan", "gold"), ("bot_ids", "no-such-bot")])
def test_bad_key_input_shows_on_the_form_and_creates_nothing(app, console, field, value):
    before = len(rows(app, ApiKey))
    console.get("/console/keys")
    resp = console.post("/console/keys", {"name": "x", "kind": "client", field: value})
    assert resp.status_code == 400
    assert field_error(resp, field), text_of(resp)
    assert len(rows(app, ApiKey)) == before
    assert SECRET.findall(resp.get_data(as_text=True)) == []


def test_keys_are_disabled_enabled_and_deleted(app, console):
    key_id = rows(app, ApiKey)[0].id
    other = create_key(app, kind="client", name="other")
    other_id = rows(app, ApiKey, ApiKey.name == "other")[0].id
    console.get("/console/keys")
    console.post(f"/console/keys/{other_id}/disable")
    assert not rows(app, ApiKey, ApiKey.id == other_id)[0].enabled
    page = text_of(console.get("/console/keys"))
    assert "disabled: its calls get 401" in page and "this session" in page
    console.post(f"/console/keys/{other_id}/enable")
    assert rows(app, ApiKey, ApiKey.id == other_id)[0].enabled
    console.post(f"/console/keys/{other_id}/delete")
    assert [k.id for k in rows(app, ApiKey)] == [key_id]
    assert other


def test_channels_are_created_with_their_secret_once_rotated_and_deleted(app, console):
    console.post("/console/bots/new", {"name": "Support", "model": "echo/echo"})
    (bot,) = rows(app, Bot)
    console.get(f"/console/bots/{bot.id}")
    resp = console.post(f"/console/bots/{bot.id}/channels", {"channel_name": "website"})
    assert resp.headers["Location"].endswith(f"/console/bots/{bot.id}#channels")
    page = console.get(f"/console/bots/{bot.id}").get_data(as_text=True)
    (secret,) = re.findall(r'value="(cps_[^"]+)" data-secret', page)
    (channel,) = rows(app, Channel)
    assert f"/api/public/channels/{channel.id}/1.0/message" in page
    assert secret not in console.get(f"/console/bots/{bot.id}").get_data(as_text=True)
    console.post(f"/console/bots/{bot.id}/channels/{channel.id}/disable")
    assert not rows(app, Channel)[0].enabled
    console.post(f"/console/bots/{bot.id}/channels/{channel.id}/rotate")
    page = console.get(f"/console/bots/{bot.id}").get_data(as_text=True)
    (new_secret,) = re.findall(r'value="(cps_[^"]+)" data-secret', page)
    assert new_secret != secret
    resp = console.post(f"/console/bots/{bot.id}/channels", {"channel_name": "x" * 201})
    assert "Channel not created" in text_of(console.get(resp.headers["Location"]))
    assert len(rows(app, Channel)) == 1
    console.post(f"/console/bots/{bot.id}/channels/{channel.id}/delete")
    assert rows(app, Channel) == []


def test_the_overview_counts_todays_calls(app, console):
    from .conftest import Api

    key = create_key(app, kind="admin")
    api = Api(app.test_client(), key)
    bot = api.post("/api/v1/bots", json={"name": "Support"}).get_json()
    conv = api.post("/api/v1/conversations", json={"bot_id": bot["id"]}).get_json()
    api.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "hello"})
    page = console.get("/console/")
    text = text_of(page)
    assert re.search(r"Today Requests 3 ", text), text
    assert "Support" in text and "echo/echo" in text  # busiest bot and model


# ---------------------------------------------------------------- playground


def _bot_with_knowledge(app, console, model="echo/echo"):
    source_id = make_source(app)
    console.get("/console/bots/new")
    console.post("/console/bots/new", {"name": "Support", "model": model, "greeting": "Hello!",
                                       "source_ids": [source_id]})
    return rows(app, Bot)[0], source_id


def _sse(resp):
    import json

    events, event = [], None
    for line in resp.get_data(as_text=True).splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:])))
    return events


def test_the_playground_streams_a_real_console_conversation_with_citations(app, console):
    from app.storage.models import Conversation, Message, Usage

    bot, source_id = _bot_with_knowledge(app, console)
    assert "Support" in text_of(console.get("/console/playground"))
    resp = console.post("/console/playground", {"bot_id": bot.id})
    (conv,) = rows(app, Conversation)
    assert conv.surface == "console" and conv.api_key_id == rows(app, ApiKey)[0].id
    assert resp.headers["Location"] == f"/console/playground?conversation_id={conv.id}"
    assert "Hello!" in text_of(console.get(resp.headers["Location"]))  # the greeting
    resp = console.post(f"/console/api/conversations/{conv.id}/messages", {"content": "how long do refunds take",
                                                                           "stream": "on"})
    assert resp.mimetype == "text/event-stream"
    events = _sse(resp)
    assert [e for e, _ in events][0] == "start" and [e for e, _ in events][-1] == "done"
    text = "".join(d["text"] for e, d in events if e == "delta")
    assert text == "Echo: how long do refunds take"
    done = events[-1][1]
    assert done["citations"][0]["source"] == "Handbook" and done["citations"][0]["row"] == "refunds"
    answer = rows(app, Message, Message.id == done["message_id"])[0]
    assert answer.content == text and answer.citations[0]["source_id"] == source_id
    (usage,) = rows(app, Usage)  # one metered call: the turn
    assert (usage.dialect, usage.category, usage.bot_id, usage.model) == ("console", "conversation", bot.id,
                                                                           "echo/echo")
    assert usage.key_id == conv.api_key_id and usage.completion_tokens > 0
    page = text_of(console.get(f"/console/playground?conversation_id={conv.id}"))
    assert "Echo: how long do refunds take" in page and "Handbook · refunds" in page


def test_the_playground_works_without_javascript_and_rates_answers(app, console):
    from app.storage.models import Conversation, Message

    bot, _ = _bot_with_knowledge(app, console)
    console.post("/console/playground", {"bot_id": bot.id})
    (conv,) = rows(app, Conversation)
    console.get(f"/console/playground?conversation_id={conv.id}")
    resp = console.post(f"/console/api/conversations/{conv.id}/messages", {"content": "refunds?"})
    assert resp.status_code == 303 and resp.headers["Location"].startswith(f"/console/playground?conversation_id={conv.id}")
    answer = rows(app, Message, Message.content == "Echo: refunds?")[0]
    resp = console.post(f"/console/conversations/{conv.id}/messages/{answer.id}/rating",
                        {"rating": "dislike", "next": "playground"})
    assert resp.status_code == 303
    assert rows(app, Message, Message.id == answer.id)[0].rating == "dislike"
    page = console.get(f"/console/playground?conversation_id={conv.id}").get_data(as_text=True)
    assert 'aria-pressed="true">Dislike' in page
    console.post(f"/console/conversations/{conv.id}/messages/{answer.id}/rating", {"rating": ""})
    assert rows(app, Message, Message.id == answer.id)[0].rating is None
    resp = console.post(f"/console/conversations/{conv.id}/messages/{answer.id}/rating", {"rating": "meh"})
    assert "Not rated" in text_of(console.get(resp.headers["Location"]))
    assert rows(app, Message, Message.id == answer.id)[0].rating is None


def test_bad_playground_input_changes_nothing(app, console):
    from app.storage.models import Conversation, Message

    bot, _ = _bot_with_knowledge(app, console)
    console.post("/console/playground", {"bot_id": "no-such-bot"})
    assert rows(app, Conversation) == []
    console.post("/console/playground", {"bot_id": bot.id})
    (conv,) = rows(app, Conversation)
    before = len(rows(app, Message))
    resp = console.post(f"/console/api/conversations/{conv.id}/messages", {"content": "  ", "stream": "on"})
    assert resp.status_code == 400 and resp.get_json()["error"]["message"]
    resp = console.post(f"/console/api/conversations/{conv.id}/messages", {"content": ""})
    assert "Not sent" in text_of(console.get(resp.headers["Location"]))
    resp = console.post(f"/console/api/conversations/{conv.id}/messages", {"content": "hi", "stream": "on"},
                        csrf=False)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "csrf_refused"
    assert len(rows(app, Message)) == before
    signed_out = Console(app.test_client())
    resp = signed_out.post(f"/console/api/conversations/{conv.id}/messages", {"content": "hi", "stream": "on"})
    assert resp.status_code == 401 and len(rows(app, Message)) == before


def test_stop_answers_for_a_finished_generation(app, console):
    from app.storage.models import Conversation

    bot, _ = _bot_with_knowledge(app, console)
    console.post("/console/playground", {"bot_id": bot.id})
    (conv,) = rows(app, Conversation)
    done = _sse(console.post(f"/console/api/conversations/{conv.id}/messages", {"content": "hi", "stream": "on"}))[-1][1]
    resp = console._done(console.client.post(f"/console/api/conversations/{conv.id}/messages/{done['message_id']}/stop",
                                              headers={"X-CSRF-Token": console.token}))
    assert resp.status_code == 202 and resp.get_json() == {"message_id": done["message_id"], "stop_requested": False}
    from app.storage.models import Usage

    stops = rows(app, Usage, Usage.endpoint.contains("/stop"))
    assert [u.key_id for u in stops] == [rows(app, ApiKey)[0].id]  # metered as the session's key
    resp = console.client.post(f"/console/api/conversations/{conv.id}/messages/{done['message_id']}/stop")
    assert resp.status_code == 400  # no token


# ---------------------------------------------------------------- knowledge


def test_knowledge_sources_rows_files_sync_and_search(app, console):
    from app.storage.models import KnowledgeRow, KnowledgeSource

    console.post("/console/bots/new", {"name": "Support", "model": "echo/echo"})
    (bot,) = rows(app, Bot)
    console.get("/console/knowledge")
    resp = console.post("/console/knowledge", {"name": "Handbook", "type": "MANUAL", "bot_ids": [bot.id]})
    (source,) = rows(app, KnowledgeSource)
    assert resp.headers["Location"] == f"/console/knowledge/{source.id}"
    assert [link.bot_id for link in rows(app, BotSource)] == [bot.id]
    console.get(resp.headers["Location"])
    resp = console.post(f"/console/knowledge/{source.id}/rows", {"row_name": "refunds", "tags": "billing, faq",
                                                                 "content": "# Refunds\n\nRefunds take five days."})
    assert resp.status_code == 302
    import io

    resp = console.post(f"/console/knowledge/{source.id}/upload", {
        "files": [(io.BytesIO(b"# Shipping\n\nParcels ship on Mondays."), "shipping.md"),
                  (io.BytesIO("Caf\u00e9 hours: nine to five.".encode()), "hours.txt")]},
        content_type="multipart/form-data")
    assert resp.status_code == 302
    assert sorted(r.name for r in rows(app, KnowledgeRow)) == ["hours.txt", "refunds", "shipping.md"]
    page = text_of(console.get(f"/console/knowledge/{source.id}"))
    assert "Rows (3)" in page and "billing, faq" in page and "not synced" in page
    assert console.post(f"/console/knowledge/{source.id}/sync").status_code == 302
    import time

    deadline = time.monotonic() + 20
    while console.client.get(f"/console/knowledge/{source.id}/state").get_json()["state"] == "syncing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert console.client.get(f"/console/knowledge/{source.id}/state").get_json()["state"] == "synced"
    page = text_of(console.get("/console/knowledge?q=when+do+parcels+ship"))
    assert "Handbook · shipping.md" in page and "Parcels ship on Mondays." in page
    refunds = rows(app, KnowledgeRow, KnowledgeRow.name == "refunds")[0]
    console.get(f"/console/knowledge/{source.id}")
    console.post(f"/console/knowledge/{source.id}/rows/delete", {"row_ids": [refunds.id]})
    assert sorted(r.name for r in rows(app, KnowledgeRow)) == ["hours.txt", "shipping.md"]
    console.post(f"/console/knowledge/{source.id}", {"name": "Manual", "sync_interval": "week"})
    source = rows(app, KnowledgeSource)[0]
    assert (source.name, source.sync_interval) == ("Manual", "week") and rows(app, BotSource) == []
    console.post(f"/console/knowledge/{source.id}/delete", {"confirm": "Manual"})
    assert rows(app, KnowledgeSource) == [] and rows(app, KnowledgeRow) == []


def test_url_and_text_sources(app, console):
    from app.storage.models import KnowledgeRow, KnowledgeSource

    console.get("/console/knowledge")
    console.post("/console/knowledge", {"name": "Site", "type": "URL", "url": "https://example.com/faq",
                                        "sync_interval": "day"})
    console.post("/console/knowledge", {"name": "Policy", "type": "TEXT", "text": "# Policy\n\nBe kind."})
    by_name = {s.name: s for s in rows(app, KnowledgeSource)}
    assert (by_name["Site"].type, by_name["Site"].url, by_name["Site"].sync_interval) == (
        "URL", "https://example.com/faq", "day")
    assert [r.content for r in rows(app, KnowledgeRow)] == ["# Policy\n\nBe kind."]
    resp = console.post(f"/console/knowledge/{by_name['Site'].id}/rows", {"content": "x"})
    assert resp.status_code == 400 and len(rows(app, KnowledgeRow)) == 1


@pytest.mark.parametrize("form, field", [
    ({"name": "", "type": "MANUAL"}, "name"),
    ({"name": "x", "type": "FOLDER"}, "type"),
    ({"name": "x", "type": "URL"}, "url"),
    ({"name": "x", "type": "URL", "url": "ftp://example.com/"}, "url"),
    ({"name": "x", "type": "MANUAL", "url": "https://example.com/"}, "url"),
    ({"name": "x", "type": "TEXT"}, "text"),
    ({"name": "x", "type": "MANUAL", "sync_interval": "hourly"}, "sync_interval"),
    ({"name": "x", "type": "MANUAL", "bot_ids": ["no-such-bot"]}, "bot_ids"),
])
def test_bad_source_input_shows_on_the_form_and_creates_nothing(app, console, form, field):
    from app.storage.models import KnowledgeSource

    console.get("/console/knowledge")
    resp = console.post("/console/knowledge", form)
    assert resp.status_code == 400 and field_error(resp, field), text_of(resp)
    assert rows(app, KnowledgeSource) == []


@pytest.mark.parametrize("files, says", [
    ([], "Choose one or more files"),
    ([(b"%PDF-1.4", "manual.pdf")], "only .md, .markdown, .txt"),
    ([(b"\xff\xfe\x00bad", "bad.txt")], "not UTF-8"),
    ([(b"fine", "ok.md"), (b"", "empty.md")], "empty"),
])
def test_bad_uploads_show_on_the_form_and_add_nothing(app, console, files, says):
    import io

    from app.storage.models import KnowledgeRow

    source_id = make_source(app)
    console.get(f"/console/knowledge/{source_id}")
    resp = console.post(f"/console/knowledge/{source_id}/upload",
                        {"files": [(io.BytesIO(data), name) for data, name in files]},
                        content_type="multipart/form-data")
    assert resp.status_code == 400 and says in field_error(resp, "files")
    assert len(rows(app, KnowledgeRow)) == 1


def test_a_row_without_content_is_refused(app, console):
    from app.storage.models import KnowledgeRow

    source_id = make_source(app)
    console.get(f"/console/knowledge/{source_id}")
    resp = console.post(f"/console/knowledge/{source_id}/rows", {"row_name": "empty", "content": ""})
    assert resp.status_code == 400 and field_error(resp, "content")
    assert 'value="empty"' in resp.get_data(as_text=True)  # what was typed is kept
    assert len(rows(app, KnowledgeRow)) == 1
    resp = console.post(f"/console/knowledge/{source_id}/delete", {"confirm": "nope"})
    assert resp.status_code == 400 and field_error(resp, "confirm")


# ---------------------------------------------------------------- usage and overview


def test_usage_charts_tables_and_csv_count_the_calls(app, console):
    import csv
    import io

    from .conftest import Api

    key = create_key(app, kind="admin", name="api admin")
    api = Api(app.test_client(), key)
    bot = api.post("/api/v1/bots", json={"name": "Support"}).get_json()
    conv = api.post("/api/v1/conversations", json={"bot_id": bot["id"]}).get_json()
    for text in ("one", "two"):
        api.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": text})
    resp = console.get("/console/usage?group_by=bot&metric=calls")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    bars = re.findall(r'<rect class="s\d" [^>]*data-value="(\d+)"><title>([^<]*)</title>', page)
    assert sorted(int(v) for v, _ in bars) == [1, 3]  # creating the bot; the conversation and its 2 turns
    assert any("Support: 3" in title for _, title in bars)
    assert "4" == re.search(r'id="usage-total">(\d+)<', page).group(1)
    text = text_of(resp)
    assert "Support 3" in text and "(none) 1" in text
    tokens = console.get("/console/usage?group_by=model&metric=tokens").get_data(as_text=True)
    assert "echo/echo" in tokens
    csv_resp = console.get("/console/usage.csv?group_by=bot")
    assert csv_resp.mimetype == "text/csv" and "attachment" in csv_resp.headers["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(csv_resp.get_data(as_text=True))))
    assert sorted((r["bot"], r["requests"]) for r in lines) == [("(none)", "1"), ("Support", "3")]
    assert next(r for r in lines if r["bot"] == "Support")["bot_id"] == bot["id"]


@pytest.mark.parametrize("query, field", [("start=yesterday", "start"), ("end=2026-13-01", "end"),
                                          ("start=2026-05-02&end=2026-05-01", "end"),
                                          ("start=2024-01-01&end=2026-01-01", "start"),
                                          ("group_by=colour", "group_by"), ("metric=joy", "metric")])
def test_bad_usage_filters_show_on_the_form(console, query, field):
    resp = console.get(f"/console/usage?{query}")
    assert resp.status_code == 400 and field_error(resp, field)
    assert console.get(f"/console/usage.csv?{query}").status_code == 400


# ---------------------------------------------------------------- conversations


def test_conversations_are_filtered_and_read_as_transcripts(app, console):
    from app.storage.models import Conversation, Message

    from .conftest import Api

    api = Api(app.test_client(), create_key(app, kind="admin"))
    support = api.post("/api/v1/bots", json={"name": "Support", "greeting": "Hi"}).get_json()
    sales = api.post("/api/v1/bots", json={"name": "Sales"}).get_json()
    alice = api.post("/api/v1/conversations", json={"bot_id": support["id"], "end_user_id": "alice"}).get_json()
    bob = api.post("/api/v1/conversations", json={"bot_id": sales["id"], "end_user_id": "bob"}).get_json()
    turn = api.post(f"/api/v1/conversations/{alice['id']}/messages", json={"content": "where is my parcel"}).get_json()
    api.post(f"/api/v1/conversations/{bob['id']}/messages", json={"content": "prices please"})
    api.post(f"/api/v1/conversations/{alice['id']}/messages/{turn['message']['id']}/rating", json={"rating": "dislike"})
    with app.app_context(), db.connection_context():  # an answer that failed, as a provider error leaves it
        Message.create(conversation=bob["id"], role="assistant", content="", status="error",
                       error="Provider openai/gpt failed: timeout", model="openai/gpt")

    def listed(query=""):
        resp = console.get(f"/console/conversations?{query}")
        assert resp.status_code == 200, text_of(resp)
        return re.findall(r'href="/console/conversations/([^"]+)"', resp.get_data(as_text=True))

    assert listed() == [bob["id"], alice["id"]]  # newest first
    assert listed(f"bot_id={support['id']}") == [alice["id"]]
    assert listed("end_user=bob") == [bob["id"]] and listed("end_user=nobody") == []
    assert listed("rating=dislike") == [alice["id"]] and listed("rating=like") == []
    assert listed("rating=none") == [bob["id"]] and listed("rating=any") == [alice["id"]]
    assert listed("status=error") == [bob["id"]]
    assert listed("start=2000-01-01&end=2000-01-02") == []
    today = rows(app, Conversation)[0].created_at.strftime("%Y-%m-%d")
    assert len(listed(f"start={today}&end={today}")) == 2  # the end day is included
    page = text_of(console.get("/console/conversations"))
    assert "where is my parcel" in page and "1 disliked" in page and "alice" in page
    transcript = console.get(f"/console/conversations/{alice['id']}")
    text = text_of(transcript)
    assert "Hi" in text and "where is my parcel" in text and "Echo: where is my parcel" in text
    assert 'aria-pressed="true">Dislike' in transcript.get_data(as_text=True)
    failed = text_of(console.get(f"/console/conversations/{bob['id']}"))
    assert "error" in failed and "Provider openai/gpt failed: timeout" in failed
    resp = console.post(f"/console/conversations/{alice['id']}/messages/{turn['message']['id']}/rating",
                        {"rating": "like", "next": "conversation"})
    assert resp.headers["Location"].startswith(f"/console/conversations/{alice['id']}")
    assert rows(app, Message, Message.id == turn["message"]["id"])[0].rating == "like"


@pytest.mark.parametrize("query, field", [("start=someday", "start"), ("end=2026-02-30", "end"),
                                          ("start=2026-05-02&end=2026-05-01", "end"), ("rating=meh", "rating"),
                                          ("status=fine", "status"), ("page=0", "page"), ("page=x", "page")])
def test_bad_conversation_filters_show_on_the_form(console, query, field):
    resp = console.get(f"/console/conversations?{query}")
    assert resp.status_code == 400 and (field_error(resp, field) or field == "page"), text_of(resp)


def test_an_unknown_conversation_is_a_404_page(console):
    resp = console.get("/console/conversations/no-such-conversation")
    assert resp.status_code == 404 and "not found" in text_of(resp)

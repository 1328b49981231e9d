"""The chatport command through Flask's CliRunner."""
import json

import pytest

from app.storage.db import db
from app.storage.models import ApiKey, Bot

from .conftest import Api, run_cli

COMMANDS = [[], ["init"], ["serve"], ["db"], ["db", "upgrade"], ["keys"], ["keys", "create"],
            ["keys", "list"], ["keys", "disable"], ["keys", "enable"], ["keys", "delete"],
            ["bots"], ["bots", "create"], ["bots", "list"], ["bots", "show"], ["channels"],
            ["channels", "create"], ["channels", "list"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "chatport")
def test_help(sqlite_app, cmd):
    result = run_cli(sqlite_app, *cmd, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def test_init_prints_key_once(app):
    first = run_cli(app, "init")
    assert first.exit_code == 0, first.output
    key = [line.strip() for line in first.output.splitlines() if line.strip().startswith("cp_")][0]
    assert Api(app.test_client(), key).get("/api/v1/bots").get_json()["pagination"]["total"] == 1
    second = run_cli(app, "init")
    assert second.exit_code == 0 and "cp_" not in second.output
    assert "Already initialised" in second.output
    again = json.loads(run_cli(app, "init", "--json").output)
    assert again["admin_key"] is None and again["demo_bot"] is None
    with app.app_context(), db.connection_context():
        assert ApiKey.select().count() == 1 and Bot.select().count() == 1


def test_keys_commands(app):
    created = json.loads(run_cli(app, "keys", "create", "--name", "ci", "--json").output)
    assert created["kind"] == "client" and created["key"].startswith("cp_")
    admin = json.loads(run_cli(app, "keys", "create", "--admin", "--json").output)
    assert admin["kind"] == "admin"
    listed = json.loads(run_cli(app, "keys", "list", "--json").output)
    assert {k["id"] for k in listed} == {created["id"], admin["id"]}
    assert all("key" not in k for k in listed)
    assert created["key"] not in run_cli(app, "keys", "list").output
    assert run_cli(app, "keys", "disable", admin["id"]).exit_code == 0
    assert Api(app.test_client(), admin["key"]).get("/api/v1/account").status_code == 401
    assert run_cli(app, "keys", "enable", admin["id"]).exit_code == 0
    assert Api(app.test_client(), admin["key"]).get("/api/v1/account").status_code == 200
    assert run_cli(app, "keys", "delete", admin["id"]).exit_code == 0
    missing = run_cli(app, "keys", "delete", admin["id"])
    assert missing.exit_code != 0 and "not found" in missing.output
    bad = run_cli(app, "keys", "create", "--bot", "nope")
    assert bad.exit_code != 0 and "unknown" in bad.output


def test_bots_and_channels_commands(app):
    bot = json.loads(run_cli(app, "bots", "create", "--name", "Helper", "--instructions", "Be kind",
                             "--json").output)
    assert bot["name"] == "Helper" and bot["model"] == app.config["DEFAULT_MODEL"]
    assert [b["id"] for b in json.loads(run_cli(app, "bots", "list", "--json").output)] == [bot["id"]]
    shown = json.loads(run_cli(app, "bots", "show", "Helper").output)
    assert shown["instructions"] == "Be kind"
    assert run_cli(app, "bots", "show", "nope").exit_code != 0
    channel = json.loads(run_cli(app, "channels", "create", bot["id"], "--json").output)
    assert channel["secret"].startswith("cps_")
    listed = json.loads(run_cli(app, "channels", "list", bot["id"], "--json").output)
    assert [c["id"] for c in listed] == [channel["id"]] and "secret" not in listed[0]
    assert run_cli(app, "channels", "create", "nope").exit_code != 0


def test_demo_bot_answers_from_its_knowledge(app):
    from app.providers.llm import registry
    from app.services import chat

    result = json.loads(run_cli(app, "init", "--json").output)
    with app.app_context(), db.connection_context():
        bot = Bot.get_by_id(result["demo_bot"])
        assert bot.model == "extractive/extractive"  # no LLM credentials in tests
        conv = chat.start_conversation(bot)
        done = chat.prepare_turn(registry=registry(), config=app.config, bot=bot, conversation=conv,
                                 content="Which database does chatport use to scale out?").run()
    assert "PostgreSQL" in done.content

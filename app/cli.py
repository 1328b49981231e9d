"""The ``chatport`` command (click, through Flask's CLI)."""
import json
import math
import os
import shutil

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from app.storage.db import db


def _create_app():
    from app import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def main():
    """chatport: LLM chatbots and prompt automations behind your own REST API.

    Start with `chatport init`, then `chatport serve`. Every command reads the
    same configuration as the server (instance/config.py, CHATPORT_* variables).
    """


def _emit(as_json, payload, human):
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(human)


def _dump(schema_cls, obj, many=False):
    return schema_cls().dump(obj, many=many)


# ---------------------------------------------------------------- init / serve


@main.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def init_command(as_json):
    """Create the database, a first admin key (printed once), a demo bot and the instance's
    secret key (``secret_key``, which signs console sessions).

    Safe to run again: an initialised instance is left as it is and no new
    key is printed.
    """
    from app.console import instance_secret_key
    from app.services import keys
    from app.storage.migrations import upgrade
    from app.storage.models import ApiKey, Bot

    upgrade()
    if not current_app.config.get("SECRET_KEY"):
        instance_secret_key(current_app.instance_path)
    result = {"database": current_app.config["DATABASE_URL"], "admin_key": None, "demo_bot": None}
    with db.connection_context():
        if not ApiKey.select().where(ApiKey.kind == "admin").exists():
            row, plaintext = keys.create_key(kind="admin", name="first admin key")
            result["admin_key"] = plaintext
        if not Bot.select().exists():
            result["demo_bot"] = _create_demo_bot().id
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"Database: {result['database']}")
    if result["admin_key"]:
        click.echo("Admin API key (shown once, store it now):")
        click.echo(f"  {result['admin_key']}")
    else:
        click.echo("Already initialised: existing admin key kept (no new key printed).")
    if result["demo_bot"]:
        click.echo(f"Demo bot created: {result['demo_bot']}")


DEMO_KNOWLEDGE = [
    {"name": "What chatport is", "tags": ["about"], "content":
     "# chatport\n\nchatport is a self-hosted API server for LLM chatbots and prompt automations. "
     "It runs bots, conversations and multi-step automations behind your own REST API."},
    {"name": "Dialects", "tags": ["api"], "content":
     "# Dialects\n\nchatport speaks several wire formats at once: its own documented API, an "
     "OpenAI-compatible API at /v1/chat/completions, and the APIs of hosted chatbot platforms."},
    {"name": "Models", "tags": ["models"], "content":
     "# Models\n\nModels come from provider plugins: openai for any OpenAI-compatible server, "
     "anthropic, echo for tests, and extractive, which answers from knowledge without an LLM."},
    {"name": "Storage", "tags": ["ops"], "content":
     "# Storage\n\nchatport stores everything in SQLite by default and runs on PostgreSQL to scale "
     "out behind a load balancer."},
]


def _create_demo_bot():
    """The demo bot: an LLM when credentials are configured, else `extractive` over demo knowledge."""
    from app.providers.helpers import setting
    from app.services import bots, knowledge

    config = current_app.config
    has_llm = setting(config, "OPENAI_API_KEY", env="OPENAI_API_KEY") or \
        setting(config, "ANTHROPIC_API_KEY", env="ANTHROPIC_API_KEY")
    model = config.get("DEMO_MODEL") or (config["DEFAULT_MODEL"] if has_llm else "extractive/extractive")
    bot = bots.create_bot(
        name="Demo bot", model=model,
        instructions="You are chatport's demo bot. Answer briefly, from your knowledge when it helps.",
        greeting="Hello! I am chatport's demo bot. Ask me what chatport is or which models it supports.",
    )
    source = knowledge.create_source(name="About chatport", type="MANUAL", bot_ids=[bot.id])
    knowledge.add_rows(source, DEMO_KNOWLEDGE)
    knowledge.sync_source(source.id)
    return bot


def serve_settings():
    """The served app's configuration (the same layers as the workers read) and instance folder."""
    from app import config, configured_flask

    flask_app = configured_flask()
    try:
        config.check(flask_app.config)
    except ValueError as exc:  # said once here, not by every worker failing to boot
        raise click.ClickException(str(exc))
    return flask_app.config, flask_app.instance_path


def serve_grace_seconds(settings):
    """Seconds gunicorn gives a worker's streams to finish on a reload or stop: the served
    app's ``STREAM_TIMEOUT``."""
    return max(1, math.ceil(float(settings["STREAM_TIMEOUT"])))


def fresh_metrics_dir(instance_path, port):
    """An empty ``<instance>/metrics/<port>`` for this server's workers' metric files
    (``PROMETHEUS_MULTIPROC_DIR``): a restart starts from zero, as Prometheus expects of a
    restarted target, and two servers of one instance on two ports keep theirs apart."""
    path = os.path.join(instance_path, "metrics", str(port))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=int,
              help="gunicorn worker processes (each holds thousands of streams).")
@click.option("--worker-connections", default=4096, show_default=True, type=int,
              help="Concurrent connections per worker.")
@click.option("--stream-timeout", default=None, type=click.IntRange(min=1),
              help="Longest a stream may run, in seconds; reloads wait this long for streams. "
                   "Overrides STREAM_TIMEOUT (instance config.py or CHATPORT_STREAM_TIMEOUT; "
                   "default 600).")
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve_command(host, port, workers, worker_connections, stream_timeout, gunicorn_args):
    """Serve chatport with gunicorn and the gevent worker (no preload).

    Anything after `--` is passed to gunicorn, e.g.
    `chatport serve -- --no-control-socket --access-logfile -`.
    """
    if stream_timeout is not None:
        # The workers read their configuration from scratch: the flag reaches them as the
        # environment variable, which outranks instance/config.py.
        os.environ["CHATPORT_STREAM_TIMEOUT"] = str(stream_timeout)
    settings, instance_path = serve_settings()
    graceful = serve_grace_seconds(settings)
    # One metrics view across the workers (app.observe.metrics): they inherit the variable.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = fresh_metrics_dir(instance_path, port)
    # gunicorn's hooks by file, not by module name: the master then imports nothing of chatport
    # (the workers import it, after gevent has patched). Where there is no source file (a frozen
    # build), by module name.
    hooks = os.path.join(os.path.dirname(os.path.abspath(__file__)), "observe", "gunicorn_hooks.py")
    from app import serve

    args = serve.gunicorn_args(host=host, port=port, workers=workers,
                               worker_connections=worker_connections, graceful_timeout=graceful,
                               extra=("--config", hooks if os.path.exists(hooks) else "python:app.observe.gunicorn_hooks",
                                      *gunicorn_args))
    click.echo(f"chatport serving on http://{host}:{port} ({workers} gevent worker(s))", err=True)
    # A fresh process of this program runs gunicorn's master in-process (app/serve.py); the
    # same pid, so a service manager's or a test's pid is the master's.
    command = serve.self_command()
    os.execv(command[0], [*command, serve.COMMAND, *args])


# ---------------------------------------------------------------- knowledge


@main.group("knowledge")
def knowledge_group():
    """Knowledge sources."""


@knowledge_group.command("sync-due")
@click.option("--json", "as_json", is_flag=True, help="Print the synced source ids as JSON.")
@with_appcontext
def knowledge_sync_due(as_json):
    """Sync every source whose sync interval (day, week, month) is due. For cron.

    Safe to run from several machines at once: each source is claimed by one.
    """
    from app.services import knowledge

    with db.connection_context():
        done = knowledge.sync_due(fetch_options=knowledge.fetch_options(current_app.config))
    _emit(as_json, done, f"Synced {len(done)} due source(s).")


# ---------------------------------------------------------------- db


@main.group("db")
def db_group():
    """Database commands: the schema, backups and restores, the copy to PostgreSQL."""


@db_group.command("upgrade")
@with_appcontext
def db_upgrade_command():
    """Upgrade the database schema in place to this version of chatport."""
    from app.storage.migrations import upgrade

    before, after = upgrade()
    if before == after:
        click.echo(f"Schema already at version {after}.")
    elif before is None:
        click.echo(f"Created schema at version {after}.")
    else:
        click.echo(f"Upgraded schema from version {before} to {after}.")


def _data_op(fn, *args, **kw):
    """Run a ``dataops`` function; its refusals become the command's error message."""
    from app.storage.dataops import DataOpError

    try:
        return fn(*args, **kw)
    except DataOpError as exc:
        raise click.ClickException(str(exc))


@db_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@with_appcontext
def db_backup_command(file):
    """Write a consistent copy of the SQLite database to FILE (a new file), safe while the
    server serves. On PostgreSQL use pg_dump."""
    from app.storage import dataops

    version = _data_op(dataops.backup, file)
    click.echo(f"Backed up {current_app.config['DATABASE_URL']} to {file} (schema version {version}).")


@db_group.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--yes", is_flag=True, help="Replace a database that has data (bots, keys, conversations...).")
@with_appcontext
def db_restore_command(file, yes):
    """Replace the instance's SQLite database with the backup FILE, upgraded to this version's
    schema. Stop the server first."""
    from app.storage import dataops

    version, after = _data_op(dataops.restore, file, replace=yes)
    upgraded = f", upgraded to {after}" if after != version else ""
    click.echo(f"Restored {current_app.config['DATABASE_URL']} from {file} (schema version {version}{upgraded}).")


@db_group.command("copy")
@click.option("--to", "to_url", required=True, metavar="postgresql://...",
              help="The PostgreSQL database to copy this SQLite instance into.")
@click.option("--replace", is_flag=True, help="Drop the chatport data the target already has.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows copied per table as JSON.")
@with_appcontext
def db_copy_command(to_url, replace, as_json):
    """Copy this SQLite instance (every table, ids kept) into PostgreSQL, in one transaction.
    Then point DATABASE_URL at the target."""
    from app.storage import dataops

    counts = _data_op(dataops.copy_to, to_url, replace=replace)
    _emit(as_json, counts,
          f"Copied {sum(counts.values())} rows in {len(counts)} tables; search index rebuilt.\n"
          "Set DATABASE_URL (or CHATPORT_DATABASE_URL) to the target and restart chatport.")


# ---------------------------------------------------------------- export / import


@main.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@with_appcontext
def export_command(file):
    """Write the instance's bots, knowledge sources (with their rows), tables (with their records)
    and automations to FILE as JSON (`-` for standard output). Keys, channels and conversations
    are not included."""
    from app.services import transfer

    with db.connection_context():
        doc = transfer.export()
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if file == "-":
        click.echo(text, nl=False)
        return
    partial = file + ".partial"
    with open(partial, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(partial, file)
    click.echo(f"Exported {len(doc['bots'])} bot(s), {len(doc['knowledge_sources'])} knowledge source(s), "
               f"{len(doc['tables'])} table(s) ({sum(len(t['records']) for t in doc['tables'])} record(s)), "
               f"{len(doc['automations'])} automation(s) to {file}.")


@main.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--replace", is_flag=True,
              help="Overwrite bots, sources, tables and automations of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print what was created and replaced as JSON.")
@with_appcontext
def import_command(file, replace, as_json):
    """Create the bots, knowledge sources, tables (with their records) and automations of an
    export FILE (`chatport export`), all or nothing."""
    from app.errors import ApiError
    from app.providers.llm import registry
    from app.services import transfer

    try:
        doc = json.load(file)
    except ValueError as exc:
        raise click.ClickException(f"{file.name} is not JSON: {exc}")
    with db.connection_context():
        try:
            report = transfer.import_document(doc, registry=registry(), config=current_app.config,
                                              replace=replace)
        except ApiError as exc:
            raise click.ClickException(f"nothing imported: {exc.message}")
    lines = [f"{verb.capitalize()} {kind.replace('_', ' ')}: {', '.join(names)}"
             for verb in ("created", "replaced") for kind, names in report[verb].items() if names]
    _emit(as_json, report, "\n".join(lines) or "The export was empty: nothing imported.")


# ---------------------------------------------------------------- keys


@main.group("keys")
def keys_group():
    """Create and manage API keys."""


@keys_group.command("create")
@click.option("--name", default="", help="A label for the key.")
@click.option("--admin", "kind", flag_value="admin", help="An admin key (manages everything).")
@click.option("--client", "kind", flag_value="client", default=True,
              help="A client key (uses bots and automations). The default.")
@click.option("--bot", "bot_ids", multiple=True, help="Limit a client key to this bot id (repeatable).")
@click.option("--credit-quota", type=int, default=None, help="Credits per calendar month.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def keys_create(name, kind, bot_ids, credit_quota, as_json):
    """Create an API key and print it once (only its hash is stored)."""
    from app.api.keys import KeyCreated
    from app.errors import ApiError
    from app.services import keys

    with db.connection_context():
        try:
            row, plaintext = keys.create_key(kind=kind, name=name, bot_ids=bot_ids,
                                             credit_quota=credit_quota)
        except ApiError as exc:
            raise click.ClickException(exc.message)
        row.key = plaintext
        _emit(as_json, _dump(KeyCreated, row),
              f"{row.kind} key {row.id} created. Store it now, it is not shown again:\n  {plaintext}")


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def keys_list(as_json):
    """List API keys (prefix and last 4 characters only)."""
    from app.api.keys import KeyOut
    from app.services import keys

    with db.connection_context():
        rows = list(keys.all_keys())
        lines = [f"{r.id}  {r.kind:6}  {r.prefix}…{r.last4}  {'enabled ' if r.enabled else 'disabled'}  {r.name}"
                 for r in rows]
        _emit(as_json, _dump(KeyOut, rows, many=True), "\n".join(lines) or "No keys.")


def _key_action(action, key_id):
    from app.errors import ApiError
    from app.services import keys

    with db.connection_context():
        try:
            if action == "delete":
                keys.delete_key(key_id)
            else:
                keys.set_enabled(key_id, action == "enable")
        except ApiError as exc:
            raise click.ClickException(exc.message)
    click.echo(f"Key {key_id} {action}d.")


@keys_group.command("disable")
@click.argument("key_id")
@with_appcontext
def keys_disable(key_id):
    """Disable a key: its calls get 401 until it is enabled again."""
    _key_action("disable", key_id)


@keys_group.command("enable")
@click.argument("key_id")
@with_appcontext
def keys_enable(key_id):
    """Enable a disabled key."""
    _key_action("enable", key_id)


@keys_group.command("delete")
@click.argument("key_id")
@with_appcontext
def keys_delete(key_id):
    """Delete a key for good."""
    _key_action("delete", key_id)


# ---------------------------------------------------------------- databases


@main.group("databases")
def databases_group():
    """Database API tables (structured records that bots answer from)."""


@databases_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def databases_list(as_json):
    """List tables."""
    from app.api.databases import TableOut
    from app.services import databases

    with db.connection_context():
        rows = list(databases.tables_query().order_by(databases.DataTable.created_at, databases.DataTable.id))
        lines = [f"{t.id}  {len(t.spec):3} field(s)  {t.name}" for t in rows]
        _emit(as_json, _dump(TableOut, rows, many=True), "\n".join(lines) or "No tables.")


@databases_group.command("create")
@click.option("--name", required=True, help="The table's name.")
@click.option("--field", "field_specs", multiple=True, required=True,
              help="NAME[:TYPE][:searchable], TYPE text|number|boolean|date (default text); repeatable.")
@click.option("--description", default="", help="What the table holds.")
@click.option("--bot", "bot_ids", multiple=True, help="A bot id to attach the table to; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def databases_create(name, field_specs, description, bot_ids, as_json):
    """Create a table, e.g. --field store:text:searchable --field opening_hours."""
    from app.api.databases import TableOut
    from app.errors import ApiError
    from app.services import databases

    fields = []
    for spec in field_specs:
        parts = spec.split(":")
        fields.append({"name": parts[0], "type": parts[1] if len(parts) > 1 and parts[1] else "text",
                       "searchable": "searchable" in parts[2:]})
    with db.connection_context():
        try:
            table = databases.create_table(name=name, description=description, fields=fields,
                                           bot_ids=list(bot_ids), config=current_app.config)
        except ApiError as exc:
            raise click.ClickException(exc.message)
        _emit(as_json, _dump(TableOut, table), f"Table {table.id} created ({len(table.spec)} field(s)).")


@databases_group.command("import")
@click.argument("table_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def databases_import(table_id, file):
    """Import records into TABLE_ID from FILE (.csv with a header of field names, else a JSON
    array); prints the report {created, rejected} as JSON."""
    from app.errors import ApiError
    from app.services import databases

    with open(file, encoding="utf-8-sig") as handle:
        text = handle.read()
    with db.connection_context():
        try:
            table = databases.get_table(table_id)
            if file.lower().endswith(".csv"):
                report = databases.import_records(table, config=current_app.config, csv_text=text)
            else:
                try:
                    items = json.loads(text)
                except ValueError as exc:
                    raise click.ClickException(f"{file} is not JSON: {exc}")
                report = databases.import_records(table, config=current_app.config, items=items)
        except ApiError as exc:
            raise click.ClickException(exc.message)
    click.echo(json.dumps(report, indent=2))


# ---------------------------------------------------------------- bots


@main.group("bots")
def bots_group():
    """Create and inspect bots."""


@bots_group.command("create")
@click.option("--name", required=True, help="The bot's name.")
@click.option("--model", default=None, help="provider/model, e.g. echo/echo or openai/gpt-4o-mini.")
@click.option("--instructions", default="", help="System prompt.")
@click.option("--greeting", default="", help="First message of a new conversation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def bots_create(name, model, instructions, greeting, as_json):
    """Create a bot."""
    from app.api.bots import BotOut
    from app.errors import ApiError
    from app.services import bots

    with db.connection_context():
        try:
            bot = bots.create_bot(name=name, model=model, instructions=instructions, greeting=greeting,
                                  default_model=current_app.config["DEFAULT_MODEL"])
        except ApiError as exc:
            raise click.ClickException(exc.message)
        _emit(as_json, _dump(BotOut, bot), f"Bot {bot.id} created ({bot.model}).")


@bots_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def bots_list(as_json):
    """List bots."""
    from app.api.bots import BotOut
    from app.storage.models import Bot

    with db.connection_context():
        rows = list(Bot.select().order_by(Bot.created_at, Bot.id))
        lines = [f"{b.id}  {b.model:24}  {'enabled ' if b.enabled else 'disabled'}  {b.name}" for b in rows]
        _emit(as_json, _dump(BotOut, rows, many=True), "\n".join(lines) or "No bots.")


@bots_group.command("show")
@click.argument("bot_id")
@with_appcontext
def bots_show(bot_id):
    """Show one bot as JSON."""
    from app.api.bots import BotOut
    from app.errors import ApiError
    from app.services import bots

    with db.connection_context():
        try:
            bot = bots.find_bot(bot_id)
        except ApiError as exc:
            raise click.ClickException(exc.message)
        click.echo(json.dumps(_dump(BotOut, bot), indent=2))


# ---------------------------------------------------------------- channels


@main.group("channels")
def channels_group():
    """Create and list a bot's API channels (the channel API)."""


@channels_group.command("create")
@click.argument("bot_id")
@click.option("--name", default="API", help="A label for the channel.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def channels_create(bot_id, name, as_json):
    """Create an API channel for a bot and print its secret once."""
    from app.api.bots import ChannelWithSecret
    from app.errors import ApiError
    from app.services import channels

    with db.connection_context():
        try:
            row, secret = channels.create_channel(bot_id, name=name)
        except ApiError as exc:
            raise click.ClickException(exc.message)
        row.secret = secret
        _emit(as_json, _dump(ChannelWithSecret, row),
              f"Channel {row.id} created. Secret (shown once):\n  {secret}")


@channels_group.command("list")
@click.argument("bot_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def channels_list(bot_id, as_json):
    """List a bot's API channels."""
    from app.api.bots import ChannelOut
    from app.storage.models import Channel

    with db.connection_context():
        rows = list(Channel.select().where(Channel.bot == bot_id).order_by(Channel.created_at, Channel.id))
        lines = [f"{c.id}  {c.secret_prefix}…  {'enabled ' if c.enabled else 'disabled'}  {c.name}" for c in rows]
        _emit(as_json, _dump(ChannelOut, rows, many=True), "\n".join(lines) or "No channels.")


# ---------------------------------------------------------------- models


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def models_command(as_json):
    """List every registered model with its provider, plugin and aliases."""
    from app.services import models

    items = models.list_models()
    if as_json:
        click.echo(json.dumps({"data": items, "aliases": models.aliases()}, indent=2))
        return
    for item in items:
        aliases = f"  aliases: {', '.join(item['aliases'])}" if item["aliases"] else ""
        kind = "" if item["kind"] == "chat" else f"  [{item['kind']}]"
        click.echo(f"{item['id']}  (plugin {item['plugin']}){kind}{aliases}")
    if not items:
        click.echo("No models. Configure a provider (see README, Providers).")


if __name__ == "__main__":  # python -m app.cli
    main()

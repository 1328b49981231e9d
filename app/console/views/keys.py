"""API keys and bot channels: create (the secret shown once, with a copy button and a curl
line), enable/disable, delete, rotate a channel's secret."""
import json
import shlex

from flask import current_app, redirect, request, url_for

from app.api.bots import ChannelCreate
from app.api.keys import KeyCreate
from app.console import bp, forms
from app.console.views.common import flash, invalid, key, page
from app.errors import ApiError
from app.services import bots, channels, keys

PAGE = "console/keys.html"


def _base():
    return request.host_url.rstrip("/")


def key_curl(plaintext, kind, bot_ids):
    """A command that works with the new key: an admin key lists bots, a client key starts a
    conversation with its (first) bot."""
    api = _base() + current_app.config["API_PREFIX"]
    auth = shlex.quote(f"Authorization: Bearer {plaintext}")
    if kind == "admin":
        return f"curl -s {api}/bots -H {auth}"
    body = shlex.quote(json.dumps({"bot_id": bot_ids[0] if bot_ids else "BOT_ID"}))
    return f"curl -s -X POST {api}/conversations -H {auth} -H 'Content-Type: application/json' -d {body}"


def channel_curl(channel_id, secret):
    url = f"{_base()}{current_app.config['CHANNEL_API_PREFIX']}/{channel_id}/1.0/message"
    return (f"curl -s -X POST {url} -H {shlex.quote('X-API-Secret-Key: ' + secret)} "
            f"-H 'Content-Type: application/json' -d '{{\"message\": \"Hello\"}}'")


def _context():
    all_bots = bots.all_bots(key())
    plans = sorted(current_app.config.get("RATE_LIMIT_PLANS") or {})
    return {"keys": list(keys.all_keys()), "bot_options": [(b.id, b.name) for b in all_bots],
            "plan_options": [(p, p) for p in plans], "bot_names": {b.id: b.name for b in all_bots},
            "current_key_id": key().id}


@bp.get("/keys")
def keys_page():
    return page(PAGE, values={"kind": "client", "bot_ids": []}, **_context())


@bp.post("/keys")
def key_create():
    values = {"name": forms.text("name"), "kind": forms.text("kind", "client"), "bot_ids": forms.many("bot_ids"),
              "plan": forms.text("plan"), "credit_quota": forms.text("credit_quota")}
    data = {"name": values["name"], "kind": values["kind"], "bot_ids": values["bot_ids"],
            "plan": values["plan"].strip() or None, "credit_quota": values["credit_quota"].strip() or None}
    if not data["name"]:
        data.pop("name")
    try:
        fields = forms.load(KeyCreate, data)
        row, plaintext = keys.create_key(**fields)
    except (forms.Invalid, ApiError) as exc:
        return invalid(PAGE, forms.Invalid.of(exc), values, **_context())
    flash(f"Key {row.name or row.prefix} created. Copy it now: it is shown this once.", "secret",
          secret=plaintext, curl=key_curl(plaintext, row.kind, row.bot_ids))
    return redirect(url_for("console.keys_page"))


@bp.post("/keys/<key_id>/enable")
def key_enable(key_id):
    row = keys.set_enabled(key_id, True)
    flash(f"Key {row.name or row.prefix} enabled.")
    return redirect(url_for("console.keys_page"))


@bp.post("/keys/<key_id>/disable")
def key_disable(key_id):
    row = keys.set_enabled(key_id, False)
    flash(f"Key {row.name or row.prefix} disabled: its calls get 401.")
    return redirect(url_for("console.keys_page"))


@bp.post("/keys/<key_id>/delete")
def key_delete(key_id):
    row = keys.get_key(key_id)
    keys.delete_key(row.id)
    flash(f"Key {row.name or row.prefix} deleted.")
    return redirect(url_for("console.keys_page"))


# ---------------------------------------------------------------- channels (on the bot's page)


def _back(bot_id):
    return redirect(url_for("console.bot_edit", bot_id=bot_id) + "#channels")


@bp.post("/bots/<bot_id>/channels")
def channel_create(bot_id):
    bot = bots.get_bot(bot_id, key())
    data = {"name": forms.text("channel_name")} if forms.text("channel_name") else {}
    try:
        fields = forms.load(ChannelCreate, data)
        row, secret = channels.create_channel(bot.id, key=key(), **fields)
    except (forms.Invalid, ApiError) as exc:
        err = forms.Invalid.of(exc)
        flash(f"Channel not created: {'; '.join(err.fields.values()) or err.message}", "error")
        return _back(bot.id)
    flash(f"Channel {row.name} created. Copy its secret now: it is shown this once.", "secret",
          secret=secret, curl=channel_curl(row.id, secret))
    return _back(bot.id)


@bp.post("/bots/<bot_id>/channels/<channel_id>/<action>")
def channel_action(bot_id, channel_id, action):
    if action == "enable" or action == "disable":
        row = channels.set_enabled(bot_id, channel_id, action == "enable", key())
        flash(f"Channel {row.name} {action}d.")
    elif action == "rotate":
        row, secret = channels.rotate_secret(bot_id, channel_id, key())
        flash(f"Channel {row.name} has a new secret; the old one stopped working. Copy it now.", "secret",
              secret=secret, curl=channel_curl(row.id, secret))
    elif action == "delete":
        row = channels.get_channel(bot_id, channel_id, key())
        channels.delete_channel(bot_id, channel_id, key())
        flash(f"Channel {row.name} deleted.")
    else:
        from app.errors import NotFound

        raise NotFound(f"No channel action {action}")
    return _back(bot_id)

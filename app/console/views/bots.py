"""Bots: list, create, edit (instructions, model, temperature, greeting, allowed models,
knowledge sources, retrieval settings, the tables' lookup tool), enable/disable, delete."""
from flask import current_app, redirect, request, url_for

from app.api.bots import BotCreate, BotUpdate
from app.console import bp, forms
from app.console.views.common import flash, invalid, key, page
from app.errors import ApiError
from app.services import bots, channels, knowledge, models

FORM = "console/bot_form.html"
RETRIEVAL = ("top_k", "max_chars", "context_messages", "records")


def model_choices(current=None):
    """The chat models (and aliases) a bot may use: the registry's, plus ``current`` when the
    registry no longer has it (so an edit need not change it)."""
    ids = [m["id"] for m in models.list_models(configuration=False) if m["kind"] == "chat"]
    ids += [alias for alias in models.aliases() if alias not in ids]
    if current and current not in ids:
        ids.append(current)
    return ids


def _values(bot=None, from_form=None):
    """The form's values: from the request on POST, else from ``bot`` (or the defaults)."""
    if from_form if from_form is not None else request.method == "POST":
        values = {name: forms.text(name) for name in
                  ("name", "instructions", "model", "temperature", "max_tokens", "greeting") + RETRIEVAL}
        values.update(allowed_models=forms.many("allowed_models"), source_ids=forms.many("source_ids"),
                      enabled=forms.checked("enabled"), tables_tool=forms.checked("tables_tool"))
        return values
    if bot is None:
        return {"model": current_app.config["DEFAULT_MODEL"], "enabled": True, "allowed_models": [],
                "source_ids": [], "tables_tool": False}
    settings = bot.knowledge or {}
    return {"name": bot.name, "instructions": bot.instructions, "model": bot.model,
            "temperature": "" if bot.temperature is None else f"{bot.temperature:g}",
            "max_tokens": bot.max_tokens or "", "greeting": bot.greeting,
            **{k: settings.get(k, "") for k in RETRIEVAL}, "tables_tool": bool(settings.get("tables_tool")),
            "allowed_models": list(bot.allowed_models or []), "source_ids": knowledge.source_ids_of_bot(bot),
            "enabled": bot.enabled}


def _fields(values, schema, choices, editing):
    """The service's fields from the form's values, checked by the API's schema. Raises Invalid."""
    data = {name: values[name] for name in ("name", "instructions", "model", "greeting")}
    data["temperature"] = values["temperature"].strip() or None
    data["max_tokens"] = values["max_tokens"].strip() or None
    retrieval = {k: values[k].strip() for k in RETRIEVAL if values[k].strip()}
    if values["tables_tool"]:
        retrieval["tables_tool"] = True
    if retrieval or editing:
        data["knowledge"] = retrieval
    data["allowed_models"] = values["allowed_models"]
    if editing:
        data["enabled"] = values["enabled"]
    fields = forms.load(schema, data)
    forms.one_of(fields["model"], choices, "model", "Pick one of this server's models.")
    for name in fields["allowed_models"]:
        forms.one_of(name, choices, "allowed_models", f"{name} is not a model of this server.")
    return fields


def _context(bot=None):
    sources = sorted(knowledge.sources_query(), key=lambda s: (s.name.lower(), s.id))
    chans = channels.list_channels(bot.id, key(), limit=current_app.config["PAGE_MAX"])[0] if bot else []
    return {"bot": bot, "model_options": [(m, m) for m in model_choices(bot.model if bot else None)],
            "source_options": [(s.id, s.name) for s in sources], "channels": chans}


@bp.get("/bots")
def bots_list():
    return page("console/bots.html", bots=bots.all_bots(key()))


@bp.route("/bots/new", methods=["GET", "POST"])
def bot_new():
    values = _values()
    if request.method == "GET":
        return page(FORM, values=values, **_context())
    try:
        fields = _fields(values, BotCreate, model_choices(), editing=False)
        bot = bots.save_bot(None, key(), source_ids=values["source_ids"],
                            default_model=current_app.config["DEFAULT_MODEL"], **fields)
    except (forms.Invalid, ApiError) as exc:
        return invalid(FORM, forms.Invalid.of(exc), values, **_context())
    flash(f"Bot {bot.name} created.")
    return redirect(url_for("console.bot_edit", bot_id=bot.id))


@bp.route("/bots/<bot_id>", methods=["GET", "POST"])
def bot_edit(bot_id):
    bot = bots.get_bot(bot_id, key())
    values = _values(bot)
    if request.method == "GET":
        return page(FORM, values=values, **_context(bot))
    try:
        fields = _fields(values, BotUpdate, model_choices(bot.model), editing=True)
        bot = bots.save_bot(bot.id, key(), source_ids=values["source_ids"], **fields)
    except (forms.Invalid, ApiError) as exc:
        return invalid(FORM, forms.Invalid.of(exc), values, **_context(bot))
    flash(f"Bot {bot.name} saved.")
    return redirect(url_for("console.bot_edit", bot_id=bot.id))


@bp.post("/bots/<bot_id>/enable")
def bot_enable(bot_id):
    bot = bots.update_bot(bot_id, key(), enabled=True)
    flash(f"Bot {bot.name} enabled.")
    return redirect(url_for("console.bots_list"))


@bp.post("/bots/<bot_id>/disable")
def bot_disable(bot_id):
    bot = bots.update_bot(bot_id, key(), enabled=False)
    flash(f"Bot {bot.name} disabled: its conversations and channels answer 404 until it is enabled.")
    return redirect(url_for("console.bots_list"))


@bp.post("/bots/<bot_id>/delete")
def bot_delete(bot_id):
    bot = bots.get_bot(bot_id, key())
    if forms.text("confirm").strip() != bot.name:
        return invalid(FORM, forms.Invalid(fields={"confirm": "Type the bot's name to delete it."}),
                       _values(bot, from_form=False) | {"confirm": forms.text("confirm")}, **_context(bot))
    bots.delete_bot(bot.id, key())
    flash(f"Bot {bot.name} deleted, with its channels and conversations.")
    return redirect(url_for("console.bots_list"))

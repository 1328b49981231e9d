"""Knowledge: sources with their sync state (live while a sync runs), rows added as text or
uploaded files (.md, .markdown, .txt: UTF-8 text, one row per file), URL sources with a sync
interval, sync now, delete rows and sources, and a search box that shows ranked passages as a
bot would get them."""
import os

from flask import current_app, redirect, request, url_for

from app.api.knowledge import RowIn, SearchIn, SourceCreate, SourceUpdate
from app.console import bp, forms
from app.console.views.common import flash, invalid, key, page
from app.errors import ApiError, NotFound
from app.services import bots, knowledge

UPLOAD_TYPES = (".md", ".markdown", ".txt")
LIST = "console/knowledge.html"
SOURCE = "console/source.html"
INTERVAL_OPTIONS = [("", "never (sync by hand)"), ("day", "every day"), ("week", "every week"),
                    ("month", "every month")]


def _limits():
    config = current_app.config
    return {"max_row_chars": config["KNOWLEDGE_MAX_ROW_CHARS"], "quota": config["KNOWLEDGE_MAX_CHARS"]}


def _bot_options():
    return [(b.id, b.name) for b in bots.all_bots(key())]


def _sources():
    return sorted(knowledge.sources_query(), key=lambda s: (s.name.lower(), s.id))


def _list_context(values=None):
    query = request.args.get("q", "").strip()
    chosen = request.args.getlist("source_id")
    passages, search_error = [], None
    if query:
        try:
            args = forms.load(SearchIn, {"query": query, "source_ids": chosen,
                                         "top_k": request.args.get("top_k") or 5})
            passages = knowledge.search_for(args["query"], source_refs=args["source_ids"], top_k=args["top_k"])
        except (forms.Invalid, ApiError) as exc:
            err = forms.Invalid.of(exc)
            search_error = "; ".join(err.fields.values()) or err.message
    sources = _sources()
    names = {s.id: s.name for s in sources}
    return {"sources": sources, "bots_of": {s.id: knowledge.bots_of(s) for s in sources},
            "bot_names": dict(_bot_options()), "bot_options": _bot_options(), "interval_options": INTERVAL_OPTIONS,
            "query": query, "chosen": chosen, "passages": passages, "search_error": search_error,
            "source_names": names, "top_k": request.args.get("top_k", "5")}


@bp.get("/knowledge")
def knowledge_page():
    return page(LIST, values={"type": "MANUAL", "bot_ids": []}, **_list_context())


@bp.post("/knowledge")
def source_create():
    values = {"name": forms.text("name"), "type": forms.text("type", "MANUAL"), "url": forms.text("url"),
              "text": forms.text("text"), "sync_interval": forms.text("sync_interval"),
              "bot_ids": forms.many("bot_ids")}
    data = {"name": values["name"], "type": values["type"], "bot_ids": values["bot_ids"],
            "sync_interval": values["sync_interval"] or None}
    for name in ("url", "text"):
        if values[name].strip():
            data[name] = values[name].strip() if name == "url" else values[name]
    try:
        fields = forms.load(SourceCreate, data)
        if fields["type"] == "TEXT" and not fields.get("text"):
            raise forms.Invalid(fields={"text": "A text source needs its text."})
        source = knowledge.create_source(**fields, **_limits())
    except (forms.Invalid, ApiError) as exc:
        return invalid(LIST, forms.Invalid.of(exc), values, **_list_context())
    flash(f"Source {source.name} created." + (" Sync it to make it searchable." if source.type != "URL"
                                              else " Sync it to fetch the page."))
    return redirect(url_for("console.source_page", source_id=source.id))


def _source_context(source):
    rows, _ = knowledge.list_rows(source, limit=current_app.config["PAGE_MAX"])
    return {"source": source, "rows": rows, "row_tags": {r.id: knowledge.row_tags(r) for r in rows},
            "bot_options": _bot_options(), "interval_options": INTERVAL_OPTIONS,
            "upload_types": ", ".join(UPLOAD_TYPES)}


def _source_values(source):
    return {"name": source.name, "sync_interval": source.sync_interval or "", "bot_ids": knowledge.bots_of(source)}


@bp.get("/knowledge/<source_id>")
def source_page(source_id):
    source = knowledge.get_source(source_id)
    return page(SOURCE, values=_source_values(source), **_source_context(source))


@bp.get("/knowledge/<source_id>/state")
def source_state(source_id):
    """The sync state, for the page's live view (console.js polls it while a sync runs)."""
    source = knowledge.get_source(source_id)
    return {"state": source.status, "error": source.error,
            "last_sync": source.last_sync.isoformat() if source.last_sync else None}


@bp.post("/knowledge/<source_id>")
def source_update(source_id):
    source = knowledge.get_source(source_id)
    values = {"name": forms.text("name"), "sync_interval": forms.text("sync_interval"),
              "bot_ids": forms.many("bot_ids")}
    try:
        fields = forms.load(SourceUpdate, {"name": values["name"], "sync_interval": values["sync_interval"] or None,
                                           "bot_ids": values["bot_ids"]})
        knowledge.update_source(source, bot_ids=fields.pop("bot_ids"), **fields)
    except (forms.Invalid, ApiError) as exc:
        return invalid(SOURCE, forms.Invalid.of(exc), values, **_source_context(source))
    flash(f"Source {source.name} saved.")
    return redirect(url_for("console.source_page", source_id=source.id))


def _row_values():
    return {"row_name": forms.text("row_name"), "content": forms.text("content"), "tags": forms.text("tags")}


@bp.post("/knowledge/<source_id>/rows")
def rows_add(source_id):
    source = knowledge.get_source(source_id)
    values = _row_values()
    tags = [t.strip() for t in values["tags"].split(",") if t.strip()]
    try:
        if source.type != "MANUAL":
            raise forms.Invalid(f"A {source.type} source's rows come from its {'text' if source.type == 'TEXT' else 'URL'}: "
                                "add rows to a manual source.")
        row = forms.load(RowIn, {"name": values["row_name"], "content": values["content"], "tags": tags})
        knowledge.add_rows(source, [row], **_limits())
    except (forms.Invalid, ApiError) as exc:
        err = forms.Invalid.of(exc)
        err.fields = {("row_name" if k == "name" else k): v for k, v in err.fields.items()}
        return invalid(SOURCE, err, {**_source_values(source), **values}, **_source_context(source))
    flash("Row added. Sync the source to make it searchable.")
    return redirect(url_for("console.source_page", source_id=source.id))


@bp.post("/knowledge/<source_id>/upload")
def rows_upload(source_id):
    source = knowledge.get_source(source_id)
    files = [f for f in request.files.getlist("files") if f.filename]
    try:
        if source.type != "MANUAL":
            raise forms.Invalid("Files become rows of a manual source.")
        if not files:
            raise forms.Invalid(fields={"files": "Choose one or more files."})
        rows = []
        for f in files:
            name = os.path.basename(f.filename)
            if not name.lower().endswith(UPLOAD_TYPES):
                raise forms.Invalid(fields={"files": f"{name}: only {', '.join(UPLOAD_TYPES)} files are read."})
            try:
                content = f.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.Invalid(fields={"files": f"{name} is not UTF-8 text."}) from None
            rows.append(forms.load(RowIn, {"name": name[:500], "content": content}))
        knowledge.add_rows(source, rows, **_limits())
    except (forms.Invalid, ApiError) as exc:
        err = forms.Invalid.of(exc)
        if "content" in err.fields:
            err.fields = {"files": "A file is empty."}
        return invalid(SOURCE, err, _source_values(source), **_source_context(source))
    flash(f"{len(rows)} file(s) added as rows. Sync the source to make them searchable.")
    return redirect(url_for("console.source_page", source_id=source.id))


@bp.post("/knowledge/<source_id>/rows/delete")
def rows_delete(source_id):
    source = knowledge.get_source(source_id)
    ids = forms.many("row_ids")
    if not ids:
        flash("No row chosen: nothing deleted.", "error")
        return redirect(url_for("console.source_page", source_id=source.id))
    try:
        knowledge.delete_rows(source, ids)
    except NotFound as exc:
        flash(f"Nothing deleted: {exc.message}", "error")
        return redirect(url_for("console.source_page", source_id=source.id))
    flash(f"{len(ids)} row(s) deleted.")
    return redirect(url_for("console.source_page", source_id=source.id))


@bp.post("/knowledge/<source_id>/sync")
def source_sync(source_id):
    source = knowledge.get_source(source_id)
    try:
        knowledge.sync_in_background(source.id, knowledge.fetch_options(current_app.config))
    except ApiError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Syncing {source.name}…")
    return redirect(url_for("console.source_page", source_id=source.id))


@bp.post("/knowledge/<source_id>/delete")
def source_delete(source_id):
    source = knowledge.get_source(source_id)
    if forms.text("confirm").strip() != source.name:
        return invalid(SOURCE, forms.Invalid(fields={"confirm": "Type the source's name to delete it."}),
                       {**_source_values(source), "confirm": forms.text("confirm")}, **_source_context(source))
    knowledge.delete_source(source)
    flash(f"Source {source.name} deleted with its rows.")
    return redirect(url_for("console.knowledge_page"))

"""Automations: list, create and edit (inputs, steps with their prompt templates and models,
returns, endpoint), delete; run with inputs and watch each step's output stream; run logs with
per-step detail and ratings.

The form's field names are the service's own dotted names (``inputs.0.name``,
``steps.1.prompt``, ``returns``...), so a template error the service raises at save
(``BadRequest`` with ``fields``) shows under the field it names. Rows left blank (an input
without a name, a step without a prompt) are dropped; the form always offers one blank input
and one blank step to add, and a Remove box per step.

``POST /console/api/automations/<id>/run`` runs it: with ``stream`` (what console.js asks for)
it answers server-sent events (``step_start``, ``delta`` of every step, ``step_finish``, then
``done`` or ``error``); without it (no JavaScript) the run goes to the end and the page of its
log follows. Runs are metered like the API's under the signed-in admin key (dialect
``console``, category ``workflow``).
"""
import re

from flask import current_app, redirect, request, url_for
from marshmallow import ValidationError

from app import metering
from app.api.automations import AutomationCreate, AutomationUpdate, RateRun
from app.api.sse import sse, stream_response
from app.console import bp, forms
from app.console.views.bots import model_choices
from app.console.views.common import flash, invalid, key, page
from app.console.views.playground import _meter_as_the_session_key
from app.errors import ApiError, BadRequest
from app.providers.llm import registry
from app.services import automations, knowledge

FORM = "console/automation_form.html"
RUN = "console/automation_run.html"
PAGE_SIZE = 20
STEP_FIELDS = ("name", "prompt", "model", "output", "result_type", "temperature", "max_tokens", "top_k", "tags")
INPUT_FIELDS = ("name", "default", "description")
RESULT_TYPES = [("text", "text"), ("list", "a list (one item a line, or a JSON array)")]
STAR_OPTIONS = [(str(n), "★" * n + "☆" * (5 - n) + f" ({n})") for n in range(5, 0, -1)]
_INDEXED = re.compile(r"^(inputs|steps)\.(\d+)\.(\w+)$")  # a row's field in the form


# ---------------------------------------------------------------- the form


def _count(prefix):
    """How many ``prefix.N.*`` rows the form sent (the highest N + 1)."""
    indexes = [int(m.group(2)) for m in map(_INDEXED.match, request.form) if m and m.group(1) == prefix]
    return max(indexes) + 1 if indexes else 0


def _values(automation=None, from_form=None):
    """The form's values keyed by field name, with ``input_rows``/``step_rows`` (how many rows
    to show, a blank one included): from the request on POST, else from ``automation``."""
    if from_form if from_form is not None else request.method == "POST":
        values = {name: forms.text(name) for name in ("name", "description", "endpoint", "returns")}
        values["api_enabled"] = forms.checked("api_enabled")
        rows = {"inputs": [], "steps": []}
        for prefix, names in (("inputs", INPUT_FIELDS), ("steps", STEP_FIELDS)):
            for i in range(_count(prefix)):
                row = {n: forms.text(f"{prefix}.{i}.{n}") for n in names}
                if prefix == "steps":
                    row["sources"] = forms.many(f"steps.{i}.sources")
                    row["remove"] = forms.checked(f"steps.{i}.remove")
                rows[prefix].append(row)
    elif automation is None:
        values = {"name": "", "description": "", "endpoint": "", "returns": "", "api_enabled": True}
        rows = {"inputs": [], "steps": []}
    else:
        values = {"name": automation.name, "description": automation.description,
                  "endpoint": automation.endpoint or "", "returns": ", ".join(automation.returns or []),
                  "api_enabled": automation.api_enabled}
        rows = {"inputs": [{"name": i["name"], "default": "" if i.get("default") is None else str(i["default"]),
                            "description": i.get("description", "")} for i in automation.inputs],
                "steps": _step_rows(automations.steps_of(automation))}
    return _flat(values, rows)


def _step_rows(steps):
    """Saved steps as form rows. A name or output that is its position's default (``stepN``;
    ``response`` for the last step) shows blank, so a step added after the last one makes the
    old last step's output ``stepN`` again, as the hint says."""
    rows = []
    for step in steps:
        default_output = "response" if step.position == len(steps) else f"step{step.position}"
        row = _step_row(step)
        if row["output"] == default_output:
            row["output"] = ""
        if row["name"] == f"step{step.position}":
            row["name"] = ""
        rows.append(row)
    return rows


def _step_row(step):
    opts, context = step.options or {}, step.context or {}
    return {"name": step.name, "prompt": step.prompt, "model": step.model, "output": step.output,
            "result_type": step.result_type,
            "temperature": "" if opts.get("temperature") is None else f"{opts['temperature']:g}",
            "max_tokens": str(opts.get("max_tokens") or ""), "top_k": str(context.get("top_k", "")) if step.context else "",
            "tags": ", ".join(context.get("tags") or []), "sources": list(context.get("sources") or []),
            "remove": False}


def _flat(values, rows):
    """Rows into dotted names, plus a blank row of each to add one."""
    inputs = [r for r in rows["inputs"] if any(r.values())]
    steps = rows["steps"]
    for i, row in enumerate(inputs + [dict.fromkeys(INPUT_FIELDS, "")]):
        values.update({f"inputs.{i}.{n}": v for n, v in row.items()})
    blank = dict.fromkeys(STEP_FIELDS, "") | {"sources": [], "remove": False}
    if not steps or any(_filled(s) for s in steps[-1:]):
        steps = steps + [blank]
    for i, row in enumerate(steps):
        values.update({f"steps.{i}.{n}": v for n, v in row.items()})
    values["input_rows"], values["step_rows"] = len(inputs) + 1, len(steps)
    return values


def _filled(step):
    return bool(step.get("prompt", "").strip() or step.get("name", "").strip())


def _split(text):
    return [part.strip() for part in re.split(r"[,\s]+", text or "") if part.strip()]


def _data(values, schema):
    """The service's fields from the form's values, checked by the API's schema; and
    ``{service index: form index}`` of the steps kept. Raises Invalid."""
    data = {"name": values["name"].strip(), "description": values["description"],
            "endpoint": values["endpoint"].strip() or None, "api_enabled": values["api_enabled"]}
    returns = _split(values["returns"])
    if returns:
        data["returns"] = returns
    inputs = []
    for i in range(values["input_rows"]):
        name = values[f"inputs.{i}.name"].strip()
        if not name and not values[f"inputs.{i}.default"] and not values[f"inputs.{i}.description"]:
            continue
        item = {"name": name, "description": values[f"inputs.{i}.description"]}
        if values[f"inputs.{i}.default"] != "":
            item["default"] = values[f"inputs.{i}.default"]  # blank: no default (the run must give it)
        inputs.append((i, item))
    steps = []
    for i in range(values["step_rows"]):
        row = {n: values[f"steps.{i}.{n}"] for n in STEP_FIELDS}
        if values[f"steps.{i}.remove"] or not _filled(row):
            continue
        step = {"prompt": row["prompt"], "model": row["model"], "result_type": row["result_type"] or "text"}
        if row["name"].strip():
            step["name"] = row["name"].strip()
        if row["output"].strip():
            step["output"] = row["output"].strip()
        options = {k: row[k].strip() for k in ("temperature", "max_tokens") if row[k].strip()}
        if options:
            step["options"] = options
        sources, tags = values[f"steps.{i}.sources"], _split(row["tags"])
        if sources or tags or row["top_k"].strip():
            step["context"] = {"sources": sources, "tags": tags}
            if row["top_k"].strip():
                step["context"]["top_k"] = row["top_k"].strip()
        steps.append((i, step))
    if not steps:
        raise forms.Invalid(fields={"steps.0.prompt": "An automation needs at least one step: write its prompt."})
    data["inputs"] = [item for _, item in inputs]
    data["steps"] = [step for _, step in steps]
    renames = {"inputs": {n: i for n, (i, _) in enumerate(inputs)}, "steps": {n: i for n, (i, _) in enumerate(steps)}}
    try:
        loaded = schema().load(data)
    except ValidationError as exc:
        raise forms.Invalid(fields=_form_fields(_dotted(exc.messages), renames)) from None
    return loaded, renames


def _dotted(messages, prefix=""):
    """Marshmallow's nested messages as ``{"steps.0.prompt": "text"}``."""
    out = {}
    for name, value in messages.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_dotted(value, dotted + "."))
        else:
            out[dotted] = " ".join(value) if isinstance(value, list) else str(value)
    return out


def _form_name(name, renames):
    """A field name of the service's data (its N-th step, ``steps.N.options.temperature``) as
    the form's (the row it came from, ``steps.M.temperature``)."""
    match = re.match(r"^(inputs|steps)(?:\.(\d+))?(?:\.(.+))?$", name)
    if not match:
        return name.split(".")[0]  # returns.0: the returns field
    prefix, n, rest = match.groups()
    index = renames[prefix].get(int(n), int(n)) if n else 0
    known = INPUT_FIELDS if prefix == "inputs" else STEP_FIELDS + ("sources",)
    parts = [part for part in (rest or "").split(".") if part in known]
    return f"{prefix}.{index}.{parts[-1] if parts else ('name' if prefix == 'inputs' else 'prompt')}"


def _form_fields(fields, renames):
    out = {}
    for name, text in fields.items():
        out.setdefault(_form_name(name, renames), text)
    return out


def _service_error(exc, renames):
    """A service's ApiError as the form's Invalid: the field it names gets the message (less
    the field's name it starts with), under the form row the field came from."""
    err = forms.Invalid.of(exc)
    fields = {}
    for name, short in err.fields.items():
        detail = err.message[len(name) + 2:] if err.message.startswith(name + ": ") else err.message
        fields[name] = detail if len(err.fields) == 1 else short
    return forms.Invalid("Not saved: " + err.message if fields else err.message,
                         _form_fields(fields, renames), status=err.status)


def _context(automation=None, values=None):
    current = {values.get(f"steps.{i}.model") for i in range(values["step_rows"])} if values else set()
    choices = model_choices()
    choices += sorted(m for m in current if m and m not in choices)
    sources = sorted(knowledge.sources_query(), key=lambda s: (s.name.lower(), s.id))
    return {"automation": automation, "model_options": [(m, m) for m in choices],
            "result_options": RESULT_TYPES, "source_options": [(s.id, s.name) for s in sources],
            "default_model": current_app.config["DEFAULT_MODEL"]}


def _save(automation=None):
    values = _values(automation)
    renames = {"inputs": {}, "steps": {}}
    try:
        data, renames = _data(values, AutomationUpdate if automation else AutomationCreate)
        saved = automations.save(data, registry=registry(), automation=automation)
    except forms.Invalid as exc:
        return invalid(FORM, exc, values, **_context(automation, values))
    except ApiError as exc:
        return invalid(FORM, _service_error(exc, renames), values, **_context(automation, values))
    flash(f"Automation {saved.name} {'saved' if automation else 'created'}.")
    return redirect(url_for("console.automation_edit", automation_id=saved.id))


@bp.get("/automations")
def automations_list():
    items, _ = automations.list_automations(key(), limit=current_app.config["PAGE_MAX"])
    return page("console/automations.html", automations=items,
                steps={a.id: automations.steps_of(a) for a in items})


@bp.route("/automations/new", methods=["GET", "POST"])
def automation_new():
    if request.method == "POST":
        return _save()
    values = _values()
    values["steps.0.model"] = current_app.config["DEFAULT_MODEL"]
    return page(FORM, values=values, **_context(None, values))


@bp.route("/automations/<automation_id>", methods=["GET", "POST"])
def automation_edit(automation_id):
    automation = automations.get(automation_id, key())
    if request.method == "POST":
        return _save(automation)
    values = _values(automation)
    return page(FORM, values=values, **_context(automation, values))


@bp.post("/automations/<automation_id>/delete")
def automation_delete(automation_id):
    automation = automations.get(automation_id, key())
    if forms.text("confirm").strip() != automation.name:
        values = _values(automation, from_form=False) | {"confirm": forms.text("confirm")}
        return invalid(FORM, forms.Invalid(fields={"confirm": "Type the automation's name to delete it."}),
                       values, **_context(automation, values))
    automations.delete(automation)
    flash(f"Automation {automation.name} deleted (its run logs stay).")
    return redirect(url_for("console.automations_list"))


# ---------------------------------------------------------------- running


def _run_values(automation):
    """The run form's values: ``inputs.<name>`` from the request, else blank (the page names
    each default; a blank field runs with it, keeping its type: a default set through the API
    may be a number or a list)."""
    if request.method == "POST":
        return {f"inputs.{i['name']}": forms.text(f"inputs.{i['name']}") for i in automation.inputs}
    return {}


def _run_inputs(automation):
    """The inputs the form gave (a blank field is not given: its default applies)."""
    return {i["name"]: forms.text(f"inputs.{i['name']}") for i in automation.inputs
            if forms.text(f"inputs.{i['name']}") != ""}


def _run_page(automation, status=200, values=None, exc=None):
    context = {"automation": automation, "steps": automations.steps_of(automation)}
    if exc is not None:
        fields = {f"inputs.{name}": "Required: this input has no default." if text == "missing" else text
                  for name, text in exc.fields.items()}
        return page(RUN, status=exc.status, values=values, errors=fields, form_error=exc.message, **context)
    return page(RUN, status=status, values=values or _run_values(automation), **context)


@bp.get("/automations/<automation_id>/run")
def automation_run_page(automation_id):
    return _run_page(automations.get(automation_id, key()))


@bp.post("/api/automations/<automation_id>/run")
def automation_run(automation_id):
    streamed = forms.checked("stream")
    automation = automations.get(automation_id, key())
    inputs = _run_inputs(automation)
    try:
        _meter_as_the_session_key()
        automations.prepare(automation, inputs, key=key())  # 4xx before anything runs
    except ApiError as exc:
        if streamed:
            raise
        return _run_page(automation, values=_run_values(automation), exc=forms.Invalid.of(exc))
    kwargs = dict(registry=registry(), config=current_app.config, key=key(), dialect="console",
                  on_finish=metering.meter_for(automation))
    if streamed:
        events = automations.execute(automation, inputs, stream_steps=True, **kwargs)
        return stream_response(_events(events, metering.current(),
                                       url_for("console.run_detail", run_id="RUN_ID")))
    try:
        result = automations.run(automation, inputs, **kwargs)
    except ApiError as exc:
        metering.current().status = exc.status
        flash(f"The run failed: {exc.message}", "error")
        return redirect(url_for("console.runs", automation_id=automation.id), 303)
    return redirect(url_for("console.run_detail", run_id=result.log_id), 303)


def _events(events, meter, run_url):
    """The run as server-sent events; a delta names the step it belongs to. (The stream is
    sent after the view returns: ``meter`` and ``run_url`` are taken before.)"""
    step = None
    try:
        for kind, *payload in events:
            if kind == "step_start":
                step = payload[0]
                yield sse({"step": step, "name": payload[1]}, "step_start")
            elif kind == "delta":
                yield sse({"step": step, "text": payload[0]}, "delta")
            elif kind == "step_finish":
                yield sse({"step": payload[0], "output": payload[1]}, "step_finish")
            elif kind == "done":
                r = payload[0]
                yield sse({"log_id": r.log_id, "outputs": r.outputs, "result": r.result, "credits": r.credits,
                           "url": run_url.replace("RUN_ID", r.log_id)}, "done")
    except ApiError as err:
        meter.status = err.status
        yield sse({"step": step, "error": {"code": err.code, "message": err.message}}, "error")


# ---------------------------------------------------------------- run logs


@bp.get("/runs")
def runs():
    values = {name: request.args.get(name, "") for name in ("automation_id", "status", "page")}
    items, _ = automations.list_automations(key(), limit=current_app.config["PAGE_MAX"])
    context = {"automation_options": [(a.id, a.name) for a in items], "names": {a.id: a.name for a in items},
               "status_options": [("succeeded", "succeeded"), ("failed", "failed")]}
    try:
        page_no = int(values["page"] or 1)
        if page_no < 1:
            raise ValueError
        if values["status"] not in ("", "succeeded", "failed"):
            raise BadRequest("status must be succeeded or failed", fields={"status": "succeeded or failed"})
    except ValueError:
        exc = BadRequest("page must be a number from 1", fields={"page": "a number from 1"})
        return page("console/runs.html", status=400, values=values, errors=exc.fields, form_error=exc.message,
                    items=[], total=0, page_no=1, pages=1, **context)
    except ApiError as exc:
        return page("console/runs.html", status=400, values=values, errors=exc.fields, form_error=exc.message,
                    items=[], total=0, page_no=1, pages=1, **context)
    found, total = automations.recent_runs(key(), values["automation_id"] or None, status=values["status"] or None,
                                           page=page_no, size=PAGE_SIZE)
    return page("console/runs.html", values=values, items=found, total=total, page_no=page_no,
                pages=max(1, -(-total // PAGE_SIZE)), **context)


def _run_detail(run, status=200, **extra):
    try:
        automation = automations.get(run.automation_id, key()) if run.automation_id else None
    except ApiError:
        automation = None
    return page("console/run.html", status=status, run=run, automation=automation, star_options=STAR_OPTIONS,
                **extra)


@bp.get("/runs/<run_id>")
def run_detail(run_id):
    run = automations.get_run(run_id, key())
    values = {"rating": str(run.rating or ""), "comment": run.rating_comment or ""}
    return _run_detail(run, values=values)


@bp.post("/runs/<run_id>/rating")
def run_rate(run_id):
    run = automations.get_run(run_id, key())
    values = {"rating": forms.text("rating"), "comment": forms.text("comment")}
    try:
        data = forms.load(RateRun, {"rating": values["rating"], "comment": values["comment"] or None})
        automations.rate(run.id, data["rating"], data.get("comment"), key())
    except (forms.Invalid, ApiError) as exc:
        err = forms.Invalid.of(exc)
        return _run_detail(run, status=err.status, values=values, errors=err.fields, form_error=err.message)
    flash(f"Run rated {data['rating']} of 5.")
    return redirect(url_for("console.run_detail", run_id=run.id) + "#rating", 303)

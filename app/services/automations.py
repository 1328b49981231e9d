"""Automations (flows): prompt templates with {{ variables }}, run step by step.

Templates are Jinja2 in a sandbox with strict undefined: errors are caught
when an automation is saved; request values are data, never template code.
Each step sees the inputs and every earlier step's output. Every run leaves
one ``AutomationRun`` log row, written at the end (never holding a
transaction across a model call).
"""
import json
import re
import time
from dataclasses import dataclass, field

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from app import clock
from app.errors import ApiError, BadRequest, Conflict, NotFound
from app.ids import is_uuid, new_id
from app.metering import credits as credit_rules
from app.providers.llm import ChatRequest, Usage, estimate_tokens
from app.services import keys, templates
from app.storage.db import db
from app.storage.models import Automation, AutomationRun, AutomationStep
from app.storage.pagination import paginate

ENV = templates.ENV  # the sandbox, with the size and time bounds of templates.render
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_STEPS = 20


# ---------------------------------------------------------------- validation


def _private_access(tree):
    """Names of private attributes a template reaches for (``''.__class__`` and friends)."""
    found = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr = getattr(node, "attr", None)
        if attr is None and isinstance(getattr(node, "arg", None), nodes.Const):
            attr = node.arg.value
        if isinstance(attr, str) and attr.startswith("_"):
            found.append(attr)
    return found


def template_variables(source, where):
    """Variables a template uses. Raises BadRequest for syntax errors and private attributes."""
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise BadRequest(f"{where}: template error on line {exc.lineno}: {exc.message}",
                         fields={where: "template error"})
    private = _private_access(tree)
    if private:
        raise BadRequest(f"{where}: templates may not use private attributes ({', '.join(private)})",
                         fields={where: "unsafe template"})
    return meta.find_undeclared_variables(tree)


def _clean_steps(steps, inputs, registry):
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise BadRequest(f"steps must be a list of 1 to {MAX_STEPS} steps", fields={"steps": "invalid"})
    known = {i["name"] for i in inputs}
    clean = []
    for pos, step in enumerate(steps, start=1):
        where = f"steps.{pos - 1}"
        last = pos == len(steps)
        output = step.get("output") or ("response" if last else f"step{pos}")
        if not NAME.match(output):
            raise BadRequest(f"{where}.output must be an identifier", fields={f"{where}.output": "invalid"})
        registry.get(step.get("model") or "", field_name=f"{where}.model")
        used = template_variables(step.get("prompt") or "", f"{where}.prompt")
        if not (step.get("prompt") or "").strip():
            raise BadRequest(f"{where}.prompt must not be empty", fields={f"{where}.prompt": "empty"})
        unknown = sorted(used - known)
        if unknown:
            raise BadRequest(f"{where}.prompt uses undeclared variable(s): {', '.join(unknown)} "
                             f"(declare them as inputs or outputs of earlier steps)",
                             fields={f"{where}.prompt": "undeclared variables"})
        if step.get("result_type", "text") not in ("text", "list"):
            raise BadRequest(f"{where}.result_type must be text or list", fields={f"{where}.result_type": "invalid"})
        clean.append({"position": pos, "name": step.get("name") or f"step{pos}", "prompt": step["prompt"],
                      "model": step["model"], "options": step.get("options") or {}, "output": output,
                      "result_type": step.get("result_type", "text"), "context": step.get("context")})
        known.add(output)
    return clean, known


def save(data, *, registry, automation=None):
    """Create or replace an automation (steps included). Raises BadRequest, Conflict."""
    inputs = data.get("inputs", automation.inputs if automation else [])
    for i, item in enumerate(inputs):
        if not NAME.match(item.get("name", "")):
            raise BadRequest(f"inputs.{i}.name must be an identifier", fields={f"inputs.{i}.name": "invalid"})
    steps_in = data.get("steps")
    if steps_in is None and automation is not None:
        steps_in = [{"name": s.name, "prompt": s.prompt, "model": s.model, "options": s.options, "output": s.output,
                     "result_type": s.result_type, "context": s.context}
                    for s in automation.steps.order_by(AutomationStep.position)]
    steps, known = _clean_steps(steps_in, inputs, registry)
    returns = data.get("returns") or (automation.returns if automation else None) or [steps[-1]["output"]]
    unknown = [r for r in returns if r not in known]
    if unknown:
        raise BadRequest(f"returns names unknown variable(s): {', '.join(unknown)}", fields={"returns": "unknown"})
    endpoint = data.get("endpoint", automation.endpoint if automation else None)
    if endpoint is not None and not SLUG.match(endpoint):
        raise BadRequest("endpoint must be lower-case letters, digits, - and _ (URL-safe)",
                         fields={"endpoint": "invalid"})
    if endpoint is not None:
        clash = Automation.select().where(Automation.endpoint == endpoint)
        if automation is not None:
            clash = clash.where(Automation.id != automation.id)
        if clash.exists():
            raise Conflict(f"endpoint {endpoint!r} is already used", fields={"endpoint": "taken"})
    fields_ = {"name": data.get("name", automation.name if automation else None),
               "description": data.get("description", automation.description if automation else ""),
               "endpoint": endpoint, "inputs": inputs, "returns": returns,
               "api_enabled": data.get("api_enabled", automation.api_enabled if automation else True)}
    if not fields_["name"]:
        raise BadRequest("name is required", fields={"name": "missing"})
    with db.atomic():
        if automation is None:
            automation = Automation.create(**fields_)
        else:
            for k, v in fields_.items():
                setattr(automation, k, v)
            automation.updated_at = clock.now()
            automation.save()
            if data.get("steps") is None:
                return automation  # steps unchanged (still valid against the new inputs: checked above)
            AutomationStep.delete().where(AutomationStep.automation == automation).execute()
        for step in steps:
            AutomationStep.create(automation=automation, **step)
    return automation


def scoped(key=None):
    query = Automation.select()
    key = keys.scope_of(key)
    if key is not None and key.automation_ids:
        query = query.where(Automation.id.in_(key.automation_ids))
    return query


def list_automations(key=None, *, limit=None, cursor=None):
    """One page of the automations ``key`` may use, oldest first: ``(items, {"total", "last"})``."""
    return paginate(scoped(key), Automation, limit=limit, cursor=cursor)


def get(ref, key=None):
    """By id (or endpoint slug). Raises NotFound outside the key's scope."""
    row = scoped(key).where((Automation.id == ref) | (Automation.endpoint == ref)).first()
    if row is None:
        raise NotFound(f"Automation {ref} not found")
    return row


def by_endpoint(endpoint, key=None):
    """An API-enabled automation by endpoint slug. Raises NotFound (also when disabled)."""
    row = scoped(key).where(Automation.endpoint == endpoint).first()
    if row is None or not row.api_enabled:
        raise NotFound(f"No automation endpoint {endpoint!r}")
    return row


def delete(automation):
    automation.delete_instance()


def steps_of(automation):
    return list(automation.steps.order_by(AutomationStep.position))


# ---------------------------------------------------------------- runs


@dataclass
class RunResult:
    log_id: str
    outputs: dict
    result: object
    credits: int
    prompt_length: int
    usage: Usage = field(default_factory=Usage)


def _parse_list(text):
    text = text.strip()
    try:
        value = json.loads(text)
        if isinstance(value, list):
            return value
    except ValueError:
        pass
    items = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip()
        if line:
            items.append(line)
    return items


def _refs(refs):
    """(ids, names) of a list of source or tag references."""

    refs = [r for r in refs or [] if isinstance(r, str)]
    return [r for r in refs if is_uuid(r)], [r for r in refs if not is_uuid(r)]


def override_scope(automation, key):
    """Source ids a request's step override may name, or None (no bound: an admin key or a
    key that may use every bot).

    A key scoped to some bots may name the sources attached to those bots (it can search
    them anyway) and the sources the automation's own steps are configured with (running
    the automation reads them already); nothing else.
    """
    from app.services import knowledge

    allowed = knowledge.source_ids_in_scope(keys.bot_scope(key))
    if allowed is None:
        return None
    for step in steps_of(automation):
        ids, names = _refs((step.context or {}).get("sources"))
        if ids or names:
            try:
                allowed |= set(knowledge.resolve_source_ids(ids, names))
            except NotFound:  # a configured source deleted since: the step itself reports it
                pass
    return allowed


def _override(step_contexts, step):
    return (step_contexts.get(step.name) or step_contexts.get(f"step{step.position}") or {}).get("context")


def _context_ids(context, override, scope=None):
    """(source_ids, tag_ids) for a step: the request's override wins; empty lists mean all,
    and for an override "all" is bounded by ``scope`` (see ``override_scope``), which also
    bounds what it may name (outside it: NotFound, as for an unknown source)."""
    from app.services import knowledge

    if override is not None:
        if not isinstance(override, dict):
            raise BadRequest("a step's context must be an object", fields={"steps": "invalid"})
        folders, tags = override.get("folders") or {}, override.get("tags") or {}
        if not isinstance(folders, dict) or not isinstance(tags, dict):
            raise BadRequest("context.folders and context.tags must be objects", fields={"steps": "invalid"})
        return (knowledge.resolve_source_ids(folders.get("ids") or (), folders.get("names") or (), within=scope),
                knowledge.resolve_tag_ids(tags.get("ids") or (), tags.get("names") or ()))
    sources, tags = _refs(context.get("sources")), _refs(context.get("tags"))
    return knowledge.resolve_source_ids(*sources), knowledge.resolve_tag_ids(*tags)


def _resolve_overrides(automation, steps, step_contexts, key):
    """Every step override resolved before anything runs: ``{position: (source_ids, tag_ids)}``.
    Raises NotFound (unknown or out-of-scope source, unknown tag), BadRequest."""
    step_contexts = step_contexts or {}
    overrides = {step.position: _override(step_contexts, step) for step in steps}
    if all(o is None for o in overrides.values()):
        return {}
    scope = override_scope(automation, key)
    return {pos: _context_ids({}, o, scope) for pos, o in overrides.items() if o is not None}


def prepare(automation, inputs, *, max_inputs=50, step_contexts=None, key=None):
    """Validate inputs and step overrides; return (steps, variables, overrides).

    Raises BadRequest naming every missing variable, NotFound for an override naming a
    source outside ``key``'s scope (see ``override_scope``) or an unknown tag.
    """
    if not isinstance(inputs, dict):
        raise BadRequest("inputs must be a JSON object", fields={"inputs": "not an object"})
    if len(inputs) > max_inputs:
        raise BadRequest(f"at most {max_inputs} inputs", fields={"inputs": "too many"})
    variables = {i["name"]: i["default"] for i in automation.inputs if "default" in i}
    declared = {i["name"] for i in automation.inputs}
    # Extra variables are ignored (kept in the run log) so callers may send more than a flow uses.
    variables.update({k: v for k, v in inputs.items() if k in declared})
    missing = sorted(declared - set(variables))
    if missing:
        raise BadRequest(f"Missing variable(s): {', '.join(missing)}", fields={m: "missing" for m in missing})
    if step_contexts is not None and not isinstance(step_contexts, dict):
        raise BadRequest("steps must be an object like {\"step1\": {\"context\": {...}}}", fields={"steps": "invalid"})
    if step_contexts and not all(isinstance(v, dict) for v in step_contexts.values()):
        raise BadRequest("each step override must be an object like {\"context\": {...}}", fields={"steps": "invalid"})
    steps = steps_of(automation)
    return steps, variables, _resolve_overrides(automation, steps, step_contexts, key)


def execute(automation, inputs, *, registry, config, key=None, end_user=None, dialect="api",
            step_contexts=None, stream_last=False, stream_steps=False, on_finish=None):
    """Run the automation, yielding ("step_start"|"delta"|"step_finish", ...) and finally
    ("done", RunResult). Raises the step's ApiError after logging the run as failed.
    Deltas are yielded for the last step with ``stream_last``, for every step with
    ``stream_steps`` (the console shows each step's output as it comes); a delta belongs to
    the step of the ``step_start`` before it.
    ``on_finish(usage_totals, token_credits)`` runs at the end, success or not."""
    steps, variables, overrides = prepare(automation, inputs, max_inputs=config.get("MAX_AUTOMATION_INPUTS", 50),
                                          step_contexts=step_contexts, key=key)
    log_id, started = new_id(), time.monotonic()
    step_logs, totals, token_credits, prompt_length = [], Usage(), 0, 0
    status, error = "failed", None
    prices = config.get("MODEL_PRICES")
    if not db.is_closed() and not db.in_transaction():
        db.close()
    try:
        for index, step in enumerate(steps):
            t0 = time.monotonic()
            yield ("step_start", step.position, step.name)
            try:
                prompt = templates.render(step.prompt, variables, max_output=config.get("TEMPLATE_MAX_OUTPUT"),
                                          timeout=config.get("TEMPLATE_TIMEOUT"))
            except (UndefinedError, SecurityError) as exc:
                raise BadRequest(f"{step.name}: {exc}", fields={step.name: "template"})
            except templates.TemplateLimit as exc:
                raise BadRequest(f"{step.name}: {exc} ({exc.setting})", fields={step.name: "template too large or slow"})
            except Exception as exc:  # noqa: BLE001 - only the template runs here: 1 // 0, 'a' + 1, ...
                raise BadRequest(f"{step.name}: the template failed: {type(exc).__name__}: {exc}",
                                 fields={step.name: "template"})
            passages = []
            if step.context or step.position in overrides:
                from app.services import knowledge

                with db.connection_context():
                    source_ids, tag_ids = overrides.get(step.position) or _context_ids(step.context, None)
                    passages = knowledge.search(prompt, source_ids=source_ids, tag_ids=tag_ids,
                                                top_k=int((step.context or {}).get("top_k", 4)))
            if passages:
                prompt = "Context:\n" + "\n\n".join(p["content"] for p in passages) + "\n\n" + prompt
            prompt_length += len(prompt)
            model = registry.get(step.model)
            opts = step.options or {}
            live = stream_steps or (stream_last and index == len(steps) - 1)
            request = ChatRequest(messages=[{"role": "user", "content": prompt}], temperature=opts.get("temperature"),
                                  max_tokens=int(opts["max_tokens"]) if opts.get("max_tokens") else None,
                                  user=end_user, extra={"passages": passages}, stream=live)
            parts, usage = [], None
            source = model.stream(request)
            try:
                for delta in source:
                    if isinstance(delta, Usage):
                        usage = delta
                    else:
                        parts.append(delta)
                        if live:
                            yield ("delta", delta)
            finally:
                source.close()
            text = "".join(parts)
            usage = usage or Usage(estimate_tokens(prompt), estimate_tokens(text), estimated=True)
            totals.prompt_tokens += usage.prompt_tokens
            totals.completion_tokens += usage.completion_tokens
            totals.estimated = totals.estimated or usage.estimated
            token_credits += credit_rules.token_credits(prices, model.name, usage.prompt_tokens, usage.completion_tokens)
            value = _parse_list(text) if step.result_type == "list" else text
            variables[step.output] = value
            step_logs.append({"step": step.name, "model": model.name, "prompt_length": len(prompt),
                              "output": value, "prompt_tokens": usage.prompt_tokens,
                              "completion_tokens": usage.completion_tokens, "passages": [p["chunk_id"] for p in passages],
                              "duration_ms": round((time.monotonic() - t0) * 1000, 1)})
            yield ("step_finish", step.position, value)
        status = "succeeded"
    except ApiError as exc:
        error = exc
        raise
    except GeneratorExit:
        error = ApiError("the client went away", status=499, code="client_closed")
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin bug fails the run, not the worker
        error = ApiError(f"step failed: {type(exc).__name__}", status=502, code="provider_error")
        raise error from exc
    finally:
        outputs = {r: variables.get(r) for r in automation.returns} if status == "succeeded" else {}
        run_credits = credit_rules.CALL_CREDITS + token_credits
        with db.connection_context():
            AutomationRun.create(
                id=log_id, automation=automation.id, api_key=key.id if key else None, end_user=end_user,
                dialect=dialect, inputs=inputs, outputs=outputs, steps=step_logs, status=status,
                error=error.message if error else None, prompt_length=prompt_length,
                prompt_tokens=totals.prompt_tokens, completion_tokens=totals.completion_tokens,
                credits=run_credits, duration_ms=int((time.monotonic() - started) * 1000), finished_at=clock.now())
        if on_finish is not None:
            on_finish(totals, token_credits)
    last_output = step_logs[-1]["output"] if step_logs else None
    yield ("done", RunResult(log_id, outputs, last_output, run_credits, prompt_length, totals))


def run(automation, inputs, **kw):
    """Drain ``execute``: return the RunResult or raise the run's error."""
    result = None
    for kind, *payload in execute(automation, inputs, **kw):
        if kind == "done":
            result = payload[0]
    return result


def rate(run_id, stars, comment=None, key=None):
    """Rate a run 1-5 stars. Raises NotFound, BadRequest."""
    if not isinstance(stars, int) or not 1 <= stars <= 5:
        raise BadRequest("rating must be 1 to 5 stars", fields={"rating": "out of range"})
    row = get_run(run_id, key)
    row.rating, row.rating_comment = stars, comment
    row.save()
    return row


def get_run(run_id, key=None):
    """A run within the key's scope. Raises NotFound."""
    row = runs_query(key).where(AutomationRun.id == run_id).first()
    if row is None:
        raise NotFound(f"Run {run_id} not found")
    return row


def runs_query(key=None, automation_id=None):
    query = AutomationRun.select()
    key = keys.scope_of(key)
    if key is not None:
        if key.automation_ids:
            query = query.where(AutomationRun.automation.in_(key.automation_ids))
        query = query.where(AutomationRun.api_key == key.id)
    if automation_id:
        query = query.where(AutomationRun.automation == automation_id)
    return query


def list_runs(key=None, automation_id=None, *, limit=None, cursor=None):
    """One page of runs, oldest first, scoped as ``runs_query``: ``(items, {"total", "last"})``."""
    return paginate(runs_query(key, automation_id), AutomationRun, limit=limit, cursor=cursor)


def recent_runs(key=None, automation_id=None, *, status=None, page=1, size=20):
    """One page of runs, newest first, scoped as ``runs_query`` (``status``: succeeded or
    failed): ``(items, total)`` (the console's run log)."""
    query = runs_query(key, automation_id)
    if status:
        query = query.where(AutomationRun.status == status)
    total = query.count()
    items = list(query.order_by(AutomationRun.created_at.desc(), AutomationRun.id.desc()).paginate(page, size))
    return items, total

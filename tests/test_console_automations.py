"""The console's Automations pages through the Flask client: create and edit an automation
(inputs, steps with prompt templates and models), template errors shown under the field at
save with nothing saved, a run streamed step by step (and without JavaScript), run logs with
per-step detail and ratings; every page signed in, every form CSRF-checked."""
import json

import pytest
from markupsafe import escape

from app.storage.db import db
from app.storage.models import Automation, AutomationRun, AutomationStep, Usage

from .conftest import create_key, make_app
from .console_client import Console, field_error, text_of


@pytest.fixture
def app(tmp_path):
    """The rules are the automations service's (tested on both databases there): SQLite here."""
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


def steps_of(app, automation_id):
    return sorted(rows(app, AutomationStep, AutomationStep.automation == automation_id), key=lambda s: s.position)


# Two steps: the second uses the first's output and the input.
GOOD = {
    "name": "Summarise", "description": "Two steps", "endpoint": "", "returns": "", "api_enabled": "on",
    "inputs.0.name": "topic", "inputs.0.default": "", "inputs.0.description": "What about",
    "inputs.1.name": "tone", "inputs.1.default": "dry", "inputs.1.description": "",
    "steps.0.name": "draft", "steps.0.model": "echo/echo", "steps.0.prompt": "Write about {{ topic }}",
    "steps.0.output": "notes", "steps.0.result_type": "text", "steps.0.temperature": "0.5",
    "steps.0.max_tokens": "", "steps.0.top_k": "", "steps.0.tags": "",
    "steps.1.name": "", "steps.1.model": "echo/echo", "steps.1.prompt": "Make {{ notes }} {{ tone }}",
    "steps.1.output": "", "steps.1.result_type": "text", "steps.1.temperature": "", "steps.1.max_tokens": "",
    "steps.1.top_k": "", "steps.1.tags": "",
    # the blank step the form offers: dropped
    "steps.2.name": "", "steps.2.model": "echo/echo", "steps.2.prompt": "", "steps.2.output": "",
}


def create(app, console, **changes):
    console.get("/console/automations/new")
    resp = console.post("/console/automations/new", {**GOOD, **changes})
    assert resp.status_code == 302, text_of(resp)
    (automation,) = rows(app, Automation)
    return automation


def _sse(resp):
    events, event = [], None
    for line in resp.get_data(as_text=True).splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:])))
    return events


# ---------------------------------------------------------------- pages need a session


@pytest.mark.parametrize("path", ["/console/automations", "/console/automations/new", "/console/runs"])
def test_the_pages_need_a_session(app, path):
    resp = Console(app.test_client()).get(path)
    assert resp.status_code == 302 and "/console/sign-in" in resp.headers["Location"]


def test_a_signed_out_run_is_refused_and_runs_nothing(app, console):
    automation = create(app, console)
    signed_out = Console(app.test_client())
    resp = signed_out.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": "x", "stream": "on"})
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"
    for path in (f"/console/automations/{automation.id}", f"/console/automations/{automation.id}/run"):
        assert "/console/sign-in" in signed_out.get(path).headers["Location"]
    assert rows(app, AutomationRun) == []


# ---------------------------------------------------------------- create, list, edit, delete


def test_an_automation_is_created_listed_and_edited(app, console):
    page = console.get("/console/automations/new")
    assert page.status_code == 200 and 'id="f-steps.0.prompt"' in page.get_data(as_text=True)
    automation = create(app, console)
    assert (automation.name, automation.description, automation.endpoint) == ("Summarise", "Two steps", None)
    assert automation.inputs == [{"name": "topic", "description": "What about"},
                                 {"name": "tone", "default": "dry", "description": ""}]
    assert automation.returns == ["response"]
    first, second = steps_of(app, automation.id)
    assert (first.name, first.output, first.model, first.options) == ("draft", "notes", "echo/echo",
                                                                        {"temperature": 0.5})
    assert (second.name, second.output, second.prompt) == ("step2", "response", "Make {{ notes }} {{ tone }}")
    page = console.get(f"/console/automations/{automation.id}")
    assert "Automation Summarise created." in text_of(page)
    listing = text_of(console.get("/console/automations"))
    assert "Summarise" in listing and "topic, tone" in listing and "draft (echo/echo) → step2" in listing
    body = page.get_data(as_text=True)
    assert 'value="notes"' in body and "Write about {{ topic }}</textarea>" in body
    assert 'id="f-steps.2.prompt"' in body  # a blank step to add one

    edit = {**GOOD, "name": "Summary", "endpoint": "summary", "returns": "notes, response",
            "steps.0.remove": "on",  # drop the first step: the second may no longer use notes
            "steps.1.prompt": "Be {{ tone }} about {{ topic }}"}
    resp = console.post(f"/console/automations/{automation.id}", edit)
    assert resp.status_code == 400  # returns names notes, which no step makes any more
    assert "unknown variable" in field_error(resp, "returns")
    assert rows(app, Automation)[0].name == "Summarise" and len(steps_of(app, automation.id)) == 2
    resp = console.post(f"/console/automations/{automation.id}", {**edit, "returns": ""})
    assert resp.status_code == 302
    (automation,) = rows(app, Automation)
    assert (automation.name, automation.endpoint) == ("Summary", "summary")
    (only,) = steps_of(app, automation.id)
    assert (only.position, only.prompt, only.output) == (1, "Be {{ tone }} about {{ topic }}", "response")


def test_a_step_added_after_the_last_one_uses_its_output(app, console):
    one_step = {k: v for k, v in GOOD.items() if not k.startswith(("steps.1.", "steps.2."))}
    automation = create(app, console, **{"steps.0.output": "", "steps.0.name": "", "steps.1.prompt": ""})
    assert [s.output for s in steps_of(app, automation.id)] == ["response"]
    body = console.get(f"/console/automations/{automation.id}").get_data(as_text=True)
    assert 'id="f-steps.0.output" name="steps.0.output" type="text" value=""' in body  # the default: blank
    assert 'id="f-steps.1.prompt"' in body  # a blank step offered
    resp = console.post(f"/console/automations/{automation.id}", one_step | {
        "steps.0.output": "", "steps.0.name": "", "steps.1.model": "echo/echo", "steps.1.prompt": "Sum up {{ step1 }}"})
    assert resp.status_code == 302, text_of(resp)
    assert [s.output for s in steps_of(app, automation.id)] == ["step1", "response"]


@pytest.mark.parametrize("changes, field, says", [
    ({"steps.1.prompt": "Make {{ notes }"}, "steps.1.prompt", "template error on line 1"),
    ({"steps.1.prompt": "Make {{ nothing_declared }}"}, "steps.1.prompt", "undeclared variable(s): nothing_declared"),
    ({"steps.0.prompt": "{{ ''.__class__ }}"}, "steps.0.prompt", "private attributes"),
    ({"steps.0.prompt": "{{ notes }} first"}, "steps.0.prompt", "undeclared variable(s): notes"),
    ({"steps.1.model": "nobody/nothing"}, "steps.1.model", "nobody/nothing"),
    ({"steps.0.temperature": "hot"}, "steps.0.temperature", "number"),
    ({"steps.0.output": "not an identifier"}, "steps.0.output", "identifier"),
    ({"inputs.0.name": "1topic"}, "inputs.0.name", "identifier"),
    ({"name": ""}, "name", "length"),
    ({"endpoint": "Not A Slug"}, "endpoint", "URL-safe"),
    ({"steps.0.prompt": "", "steps.0.name": "", "steps.1.prompt": ""}, "steps.0.prompt", "at least one step"),
])
def test_a_bad_template_or_field_shows_under_it_and_saves_nothing(app, console, changes, field, says):
    console.get("/console/automations/new")
    resp = console.post("/console/automations/new", {**GOOD, **changes})
    assert resp.status_code == 400
    shown = field_error(resp, field)
    assert shown and says.lower() in shown.lower(), (shown, text_of(resp))
    body = resp.get_data(as_text=True)
    assert f'id="f-{field}"' in body and f'aria-describedby="{field}-error"' in body or f'{field}-error' in body
    assert all(str(escape(v)) in body for v in changes.values() if v)  # what was typed is kept
    assert rows(app, Automation) == [] and rows(app, AutomationStep) == []


def test_a_bad_template_in_an_edit_changes_nothing(app, console):
    automation = create(app, console)
    console.get(f"/console/automations/{automation.id}")
    resp = console.post(f"/console/automations/{automation.id}",
                        {**GOOD, "name": "Renamed", "steps.1.prompt": "{% if tone %}no end"})
    assert resp.status_code == 400 and "template error" in field_error(resp, "steps.1.prompt")
    assert rows(app, Automation)[0].name == "Summarise"
    assert [s.prompt for s in steps_of(app, automation.id)] == ["Write about {{ topic }}", "Make {{ notes }} {{ tone }}"]


def test_forms_without_the_csrf_token_are_refused_and_change_nothing(app, console):
    console.get("/console/automations/new")
    resp = console.post("/console/automations/new", GOOD, csrf=False)
    assert resp.status_code == 400 and rows(app, Automation) == []
    automation = create(app, console)
    for path, data in ((f"/console/automations/{automation.id}", {**GOOD, "name": "Renamed"}),
                       (f"/console/automations/{automation.id}/delete", {"confirm": "Summarise"})):
        assert console.post(path, data, csrf=False).status_code == 400
        assert console.post(path, data, csrf="forged").status_code == 400
    assert rows(app, Automation)[0].name == "Summarise"
    resp = console.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": "x", "stream": "on"},
                        csrf=False)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "csrf_refused"
    assert rows(app, AutomationRun) == []
    run_id = _sse(console.post(f"/console/api/automations/{automation.id}/run",
                               {"inputs.topic": "x", "stream": "on"}))[-1][1]["log_id"]
    assert console.post(f"/console/runs/{run_id}/rating", {"rating": "5"}, csrf=False).status_code == 400
    assert rows(app, AutomationRun)[0].rating is None


def test_an_automation_is_deleted_by_name_and_its_logs_stay(app, console):
    automation = create(app, console)
    console.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": "x"})
    console.get(f"/console/automations/{automation.id}")
    resp = console.post(f"/console/automations/{automation.id}/delete", {"confirm": "Summ"})
    assert resp.status_code == 400 and "Type the automation's name" in field_error(resp, "confirm")
    assert len(rows(app, Automation)) == 1
    resp = console.post(f"/console/automations/{automation.id}/delete", {"confirm": "Summarise"})
    assert resp.status_code == 302 and rows(app, Automation) == []
    assert "deleted" in text_of(console.get(resp.headers["Location"]))
    (run,) = rows(app, AutomationRun)
    assert "deleted automation" in text_of(console.get("/console/runs"))
    assert "a deleted automation" in text_of(console.get(f"/console/runs/{run.id}"))


# ---------------------------------------------------------------- running


def test_a_run_streams_every_steps_output_and_is_logged(app, console):
    automation = create(app, console)
    page = console.get(f"/console/automations/{automation.id}/run")
    body = page.get_data(as_text=True)
    assert 'id="f-inputs.topic"' in body and "What about Required." in text_of(page)
    assert "Blank: dry (the default)." in text_of(page)
    assert 'id="step-out-1"' in body and 'id="step-out-2"' in body
    resp = console.post(f"/console/api/automations/{automation.id}/run",
                        {"inputs.topic": "owls", "inputs.tone": "dry", "stream": "on"})
    assert resp.mimetype == "text/event-stream"
    events = _sse(resp)
    kinds = [e for e, _ in events]
    assert kinds[0] == "step_start" and kinds[-1] == "done"
    assert [d["step"] for e, d in events if e == "step_start"] == [1, 2]
    first = "".join(d["text"] for e, d in events if e == "delta" and d["step"] == 1)
    second = "".join(d["text"] for e, d in events if e == "delta" and d["step"] == 2)
    assert first == "Echo: Write about owls"  # the first step streams too, not only the last
    assert second == "Echo: Make Echo: Write about owls dry"
    assert [d["output"] for e, d in events if e == "step_finish"] == [first, second]
    done = events[-1][1]
    assert done["outputs"] == {"response": second} and done["url"] == f"/console/runs/{done['log_id']}"
    (run,) = rows(app, AutomationRun)
    assert (run.id, run.status, run.dialect, run.inputs) == (done["log_id"], "succeeded", "console",
                                                             {"topic": "owls", "tone": "dry"})
    assert [s["step"] for s in run.steps] == ["draft", "step2"]
    (usage,) = rows(app, Usage)  # one metered call, under the session's key
    assert (usage.dialect, usage.category, usage.automation_id) == ("console", "workflow", automation.id)
    assert usage.completion_tokens > 0


def test_a_run_works_without_javascript_and_defaults_apply(app, console):
    automation = create(app, console)
    console.get(f"/console/automations/{automation.id}/run")
    resp = console.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": "owls", "inputs.tone": ""})
    (run,) = rows(app, AutomationRun)
    assert resp.status_code == 303 and resp.headers["Location"] == f"/console/runs/{run.id}"
    assert run.inputs == {"topic": "owls"} and run.outputs == {"response": "Echo: Make Echo: Write about owls dry"}
    page = text_of(console.get(resp.headers["Location"]))
    assert "succeeded" in page and "draft · echo/echo" in page and "Echo: Write about owls" in page
    assert "Echo: Make Echo: Write about owls dry" in page


def test_a_missing_input_shows_on_the_run_form_and_runs_nothing(app, console):
    automation = create(app, console)
    console.get(f"/console/automations/{automation.id}/run")
    resp = console.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": "", "inputs.tone": "x"})
    assert resp.status_code == 400 and "Required" in field_error(resp, "inputs.topic")
    assert ">x</textarea>" in resp.get_data(as_text=True)  # what was typed is kept
    resp = console.post(f"/console/api/automations/{automation.id}/run", {"inputs.tone": "x", "stream": "on"})
    assert resp.status_code == 400 and resp.get_json()["error"]["fields"] == {"topic": "missing"}
    assert rows(app, AutomationRun) == []


def test_a_failing_step_streams_its_error_and_logs_the_run_failed(app, console):
    # A template that parses but fails when it runs: the error names the step.
    automation = create(app, console, **{"steps.1.prompt": "{{ notes + 1 }}"})
    events = _sse(console.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": "x", "stream": "on"}))
    assert events[-1][0] == "error" and events[-1][1]["step"] == 2
    assert "step2" in events[-1][1]["error"]["message"]
    (run,) = rows(app, AutomationRun)
    assert run.status == "failed" and run.error and [s["step"] for s in run.steps] == ["draft"]
    resp = console.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": "x"})
    assert resp.status_code == 303 and resp.headers["Location"] == f"/console/runs?automation_id={automation.id}"
    assert "The run failed" in text_of(console.get(resp.headers["Location"]))
    assert text_of(console.get(f"/console/runs?automation_id={automation.id}&status=failed")).count("failed") >= 2


# ---------------------------------------------------------------- run logs and ratings


def test_run_logs_are_filtered_and_rated(app, console):
    automation = create(app, console)
    for topic in ("owls", "bats"):
        console.post(f"/console/api/automations/{automation.id}/run", {"inputs.topic": topic})
    page = text_of(console.get("/console/runs"))
    assert "2 run(s)." in page and "Summarise" in page
    assert "0 run(s)." in text_of(console.get("/console/runs?status=failed"))
    assert "2 run(s)." in text_of(console.get(f"/console/runs?automation_id={automation.id}"))
    resp = console.get("/console/runs?page=zero")
    assert resp.status_code == 400 and field_error(resp, "page") is None and "page must be" in text_of(resp)
    assert console.get("/console/runs?status=running").status_code == 400
    run = sorted(rows(app, AutomationRun), key=lambda r: r.created_at)[-1]
    console.get(f"/console/runs/{run.id}")
    resp = console.post(f"/console/runs/{run.id}/rating", {"rating": "9", "comment": "great"})
    assert resp.status_code == 400 and field_error(resp, "rating")
    assert rows(app, AutomationRun, AutomationRun.id == run.id)[0].rating is None
    resp = console.post(f"/console/runs/{run.id}/rating", {"rating": "4", "comment": "good owls"})
    assert resp.status_code == 303
    saved = rows(app, AutomationRun, AutomationRun.id == run.id)[0]
    assert (saved.rating, saved.rating_comment) == (4, "good owls")
    page = text_of(console.get(f"/console/runs/{run.id}"))
    assert "Run rated 4 of 5." in page and "Rated ★★★★☆ (4 of 5): good owls" in page
    assert "★★★★" in text_of(console.get("/console/runs"))


def test_an_unknown_automation_or_run_is_a_404_page(console):
    for path in ("/console/automations/nope", "/console/automations/nope/run", "/console/runs/nope"):
        resp = console.get(path)
        assert resp.status_code == 404 and resp.mimetype == "text/html"

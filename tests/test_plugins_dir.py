"""The plugins folder (``PLUGINS_DIR``): plain modules loaded as plugins besides the entry
points, filtered by ``CHATPORT_PLUGINS``, a broken one logged and skipped; on a live server."""
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import requests

from app.providers import loading
from app.providers.llm import ModelRegistry

from .servers import ROOT, chatport_server

# A plugin as a binary user writes it: one file, importing only from app.providers.
WHISPER = textwrap.dedent('''
    from app.providers import Model, Usage, hookimpl


    class Whisper(Model):
        provider = "whisper"
        model_id = "soft"

        def stream(self, request):
            text = request.messages[-1]["content"]
            yield text.lower() + "..."
            yield Usage(len(text.split()), 1)


    @hookimpl
    def register_models(register):
        register(Whisper())
''')


@pytest.fixture
def fresh_plugins(monkeypatch):
    """A plugin manager loaded anew, forgotten afterwards (so the folder's models leave)."""
    monkeypatch.delenv("CHATPORT_PLUGINS", raising=False)
    loading.reset()
    yield monkeypatch
    loading.reset()


def _folder(tmp_path, **modules):
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    return folder


def test_a_folder_module_is_a_plugin_named_by_its_stem(tmp_path, fresh_plugins):
    folder = _folder(tmp_path, whisper=WHISPER)
    reg = ModelRegistry({"PLUGINS_DIR": str(folder)})
    assert reg.plugins["whisper/soft"] == "whisper"
    assert reg.plugins["echo/echo"] == "echo"  # the entry points still load
    loading.reset()
    assert "whisper/soft" not in ModelRegistry({"PLUGINS_DIR": str(tmp_path / "none")}).models


def test_chatport_plugins_filters_the_folder_too(tmp_path, fresh_plugins):
    folder = _folder(tmp_path, whisper=WHISPER, other=WHISPER.replace('"whisper"', '"other"'))
    fresh_plugins.setenv("CHATPORT_PLUGINS", "echo,other")
    reg = ModelRegistry({"PLUGINS_DIR": str(folder)})
    assert set(reg.plugins.values()) == {"echo", "other"}
    assert "whisper/soft" not in reg.models and "other/soft" in reg.models


def test_a_module_that_fails_to_import_is_logged_and_skipped(tmp_path, fresh_plugins, caplog):
    folder = _folder(tmp_path, broken="import no_such_module_anywhere\n", whisper=WHISPER,
                     _private="raise SystemExit('never imported')\n")
    (folder / "notes.txt").write_text("not a module")
    with caplog.at_level(logging.ERROR, logger="app.providers.loading"):
        reg = ModelRegistry({"PLUGINS_DIR": str(folder)})
    assert "whisper/soft" in reg.models
    assert "broken" not in {name for name, _ in loading.get_plugin_manager().list_name_plugin()}
    failed = [r for r in caplog.records if "broken" in r.getMessage()]
    assert failed and failed[0].exc_info and "no_such_module_anywhere" in str(failed[0].exc_info[1])


def test_a_folder_module_does_not_replace_a_loaded_plugin_of_its_name(tmp_path, fresh_plugins):
    folder = _folder(tmp_path, echo=WHISPER)
    reg = ModelRegistry({"PLUGINS_DIR": str(folder)})
    assert "whisper/soft" not in reg.models and reg.plugins["echo/echo"] == "echo"


def test_the_default_folder_is_plugins_in_the_instance_folder(tmp_path, monkeypatch):
    from app import configured_flask

    monkeypatch.delenv("CHATPORT_PLUGINS_DIR", raising=False)
    monkeypatch.setenv("CHATPORT_INSTANCE_PATH", str(tmp_path / "inst"))
    assert configured_flask().config["PLUGINS_DIR"] == str(tmp_path / "inst" / "plugins")
    monkeypatch.setenv("CHATPORT_PLUGINS_DIR", "extra")  # relative: to the instance folder
    assert configured_flask().config["PLUGINS_DIR"] == str(tmp_path / "inst" / "extra")
    monkeypatch.setenv("CHATPORT_PLUGINS_DIR", str(tmp_path / "abs"))
    assert configured_flask().config["PLUGINS_DIR"] == str(tmp_path / "abs")


def test_without_an_app_the_folder_comes_from_the_same_configuration(tmp_path, fresh_plugins):
    instance = tmp_path / "inst"
    instance.mkdir()
    _folder(instance, whisper=WHISPER)
    fresh_plugins.setenv("CHATPORT_INSTANCE_PATH", str(instance))
    fresh_plugins.delenv("CHATPORT_PLUGINS_DIR", raising=False)
    names = {name for name, _ in loading.get_plugin_manager().list_name_plugin()}
    assert {"whisper", "echo"} <= names


def test_cli_lists_and_a_live_server_answers_with_a_folder_plugin(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    _folder(instance, whisper=WHISPER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env["CHATPORT_INSTANCE_PATH"] = str(instance)
    out = subprocess.run([sys.executable, "-m", "app.cli", "models", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = {m["id"]: m for m in json.loads(out.stdout)["data"]}
    assert listed["whisper/soft"]["plugin"] == "whisper"

    with chatport_server(instance) as base:
        admin = json.loads((instance / "init.json").read_text())["admin_key"]
        resp = requests.post(base + "/v1/chat/completions", timeout=30,
                             headers={"Authorization": f"Bearer {admin}"},
                             json={"model": "whisper/soft",
                                   "messages": [{"role": "user", "content": "QUIET PLEASE"}]})
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "quiet please..."

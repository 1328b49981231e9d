"""Plugin loading and discovery, aliases, unknown models, the hooks, the
README's example plugin, and the model listings (API and CLI)."""
import json
import os
import re
import subprocess
import sys
import types

import pytest

from app import errors
from app.cli import main as cli_main
from app.providers import hookspecs
from app.providers import loading as plugins
from app.providers.llm import ChatRequest, EmbeddingModel, Model, ModelRegistry, Usage, collect
from app.providers.loading import get_plugin_manager

from .conftest import Api, create_key, make_app
from .fakes import FakeOpenAI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def fresh_plugins():
    """A plugin manager loaded anew (CHATPORT_PLUGINS is read at load), reset afterwards."""
    plugins.reset()
    yield
    plugins.reset()


class ScriptedModel(Model):
    provider = "scripted"
    model_id = "one"

    def stream(self, request):
        yield "scripted"
        yield Usage(1, 1)


class TinyEmbedder(EmbeddingModel):
    provider = "scripted"
    model_id = "embed"
    dimensions = 2

    def embed(self, texts):
        return [[float(len(t)), 1.0] for t in texts]


def registered(name, **hooks):
    """A throwaway plugin object implementing ``hooks``."""
    plugin = types.SimpleNamespace(**{k: hookspecs.hookimpl(v) for k, v in hooks.items()})
    get_plugin_manager().register(plugin, name=name)
    return plugin


# ---------------------------------------------------------------- the hooks


def test_hook_register_models():
    seen = {}

    def register_models(register, config):
        seen["config"] = config
        register(ScriptedModel())

    registered("scripted-chat", register_models=register_models)
    try:
        reg = ModelRegistry({"X": 1})
        assert seen["config"]["X"] == 1
        assert reg.plugins["scripted/one"] == "scripted-chat"
        assert collect(reg.get("scripted/one").stream(ChatRequest(HELLO))) == ("scripted", Usage(1, 1))
    finally:
        get_plugin_manager().unregister(name="scripted-chat")
    assert "scripted/one" not in ModelRegistry({}).models


def test_hook_register_embedding_models():
    def register_embedding_models(register):  # fewer arguments than the spec is fine
        register(TinyEmbedder())

    registered("scripted-embed", register_embedding_models=register_embedding_models)
    try:
        reg = ModelRegistry({})
        assert reg.embedding_models["scripted/embed"].embed(["abc"]) == [[3.0, 1.0]]
        from app.services.models import list_models

        item = next(i for i in list_models(reg) if i["id"] == "scripted/embed")
        assert (item["kind"], item["dimensions"], item["plugin"]) == ("embedding", 2, "scripted-embed")
    finally:
        get_plugin_manager().unregister(name="scripted-embed")


def _hookspec_names():
    return sorted(name for name, fn in vars(hookspecs).items()
                  if callable(fn) and hasattr(fn, "chatport_spec"))


def test_every_hook_has_a_test_and_is_documented():
    names = _hookspec_names()
    assert names == ["register_embedding_models", "register_models"]
    readme = open(README).read()
    import inspect

    for name in names:
        assert f"test_hook_{name}" in globals(), f"no test named test_hook_{name}"
        signature = f"{name}{inspect.signature(getattr(hookspecs, name))}".replace("'", "")
        assert signature in readme, f"README does not document {signature}"


# ---------------------------------------------------------------- loading


def test_builtin_plugins_load_from_entry_points(fresh_plugins):
    names = {name for name, _ in get_plugin_manager().list_name_plugin()}
    assert {"echo", "openai", "anthropic"} <= names


def test_chatport_plugins_restricts_what_loads(fresh_plugins, monkeypatch):
    monkeypatch.setenv("CHATPORT_PLUGINS", "echo, anthropic")
    names = {name for name, _ in get_plugin_manager().list_name_plugin()}
    assert names == {"echo", "anthropic"}
    reg = ModelRegistry({"OPENAI_API_KEY": "k", "OPENAI_MODELS": ["m"]})
    assert "openai/m" not in reg.models
    assert "echo/echo" in reg.models


def test_aliases_resolve_through_chains():
    reg = ModelRegistry({"MODEL_ALIASES": {"fast": "cheap", "cheap": "echo/echo"}})
    assert reg.get("fast") is reg.models["echo/echo"]
    assert reg.aliases_of("echo/echo") == ["cheap", "fast"]


def test_unknown_model_is_a_bad_request_listing_models_and_aliases():
    reg = ModelRegistry({"MODEL_ALIASES": {"fast": "echo/echo", "broken": "nope/nope"}})
    for name in ("nope/model", "broken", "", None):
        with pytest.raises(errors.BadRequest) as info:
            reg.get(name)
        err = info.value
        assert (err.status, err.code) == (400, "model_not_found")
        assert "echo/echo" in err.message and "fast" in err.message
        assert err.fields == {"model": "unknown model"}


# ---------------------------------------------------------------- README example


def readme_block(language, after="## Writing a provider plugin"):
    text = open(README).read()
    section = text[text.index(after):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_readme_example_plugin_streams():
    source = readme_block("python")
    module = types.ModuleType("chatport_shout")
    exec(compile(source, "README.md:chatport_shout", "exec"), module.__dict__)
    pm = get_plugin_manager()
    pm.register(module, name="shout")
    try:
        reg = ModelRegistry({"SHOUT_SUFFIX": "?!"})
        model = reg.get("shout/loud")
        items = list(model.stream(ChatRequest([{"role": "system", "content": "x"}, *HELLO])))
        assert items[:-1] == ["HELLO", " THERE?!"]
        assert items[-1] == Usage(prompt_tokens=4, completion_tokens=2)
        with pytest.raises(errors.ProviderBadRequest):
            collect(model.stream(ChatRequest([{"role": "system", "content": "x"}])))
    finally:
        pm.unregister(name="shout")


def test_third_party_distribution_is_discovered_without_code_change(tmp_path):
    """Build the README's plugin as its own distribution, install it with
    ``pip --target`` and let a fresh chatport process find it."""
    src = tmp_path / "chatport-shout"
    src.mkdir()
    (src / "chatport_shout.py").write_text(readme_block("python"))
    (src / "pyproject.toml").write_text(readme_block("toml"))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    # Offline first (needs setuptools>=70.1 or wheel in this venv), else pip's isolated build.
    built = subprocess.run([*pip, "--no-index", "--no-build-isolation", str(src)],
                           capture_output=True, timeout=120)
    if built.returncode != 0:
        built = subprocess.run([*pip, str(src)], capture_output=True, text=True, timeout=180)
        assert built.returncode == 0, built.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env.update(PYTHONPATH=os.pathsep.join([str(target), ROOT]),
               CHATPORT_INSTANCE_PATH=str(tmp_path / "instance"))
    # One fresh process: `chatport models --json`, then a stream from the plugin's model.
    script = ("import sys\nfrom app.cli import main\n"
              "main(['models', '--json'], standalone_mode=False)\nsys.stdout.write('\\x1e')\n"
              "from app import create_app\nfrom app.providers.llm import registry, collect, ChatRequest\n"
              "app = create_app()\nwith app.app_context():\n"
              "    print(collect(registry().get('shout/loud').stream("
              "ChatRequest([{'role': 'user', 'content': 'psst'}])))[0])\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listing, streamed = out.stdout.split("\x1e")
    listed = {m["id"]: m for m in json.loads(listing)["data"]}
    assert listed["shout/loud"]["plugin"] == "shout"
    assert "echo/echo" in listed
    assert streamed.strip() == "PSST!"


# ---------------------------------------------------------------- listings


@pytest.fixture
def fake_openai():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def models_app(database_url, tmp_path, fake_openai):
    from app.storage.db import db

    application = make_app(database_url, tmp_path, OPENAI_BASE_URL=fake_openai.base_url,
                           OPENAI_MODELS=["gpt-test"],
                           OPENAI_COMPATIBLE={"ollama": {"base_url": fake_openai.base_url,
                                                         "models": ["llama3"]}},
                           MODEL_ALIASES={"fast": "openai/gpt-test", "demo": "echo/echo"})
    yield application
    if not db.is_closed():
        db.close()


def test_models_api_lists_models_with_provider_and_aliases(models_app, fake_openai):
    key = create_key(models_app, kind="admin", name="admin")
    resp = Api(models_app.test_client(), key).get("/api/v1/models")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["openai/gpt-test"] == {
        "id": "openai/gpt-test", "kind": "chat", "provider": "openai", "model_id": "gpt-test",
        "plugin": "openai", "aliases": ["fast"],
        "description": f"OpenAI-compatible model at {fake_openai.base_url}"}
    assert (by_id["ollama/llama3"]["provider"], by_id["ollama/llama3"]["plugin"]) == ("ollama", "openai")
    assert by_id["echo/echo"]["aliases"] == ["demo"]
    assert body["aliases"] == {"demo": "echo/echo", "fast": "openai/gpt-test"}
    kinds = [m["kind"] for m in body["data"]]
    assert kinds == sorted(kinds, key=("chat", "embedding").index)  # chat models, then embedding models
    for kind in ("chat", "embedding"):
        ids = [m["id"] for m in body["data"] if m["kind"] == kind]
        assert ids == sorted(ids)
    assert by_id["echo/embed"]["dimensions"] == 64


def test_client_keys_see_the_models_without_how_or_where_they_are_served(models_app, fake_openai):
    client = models_app.test_client()
    admin = Api(client, create_key(models_app, kind="admin", name="admin")).get("/api/v1/models").get_json()
    assert fake_openai.base_url in json.dumps(admin)
    resp = Api(client, create_key(models_app, kind="client", name="client")).get("/api/v1/models")
    assert resp.status_code == 200, resp.get_json()
    assert fake_openai.base_url not in resp.get_data(as_text=True)
    assert "127.0.0.1" not in resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["data"] == [{k: v for k, v in m.items() if k not in ("plugin", "description")}
                            for m in admin["data"]]
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["openai/gpt-test"] == {"id": "openai/gpt-test", "kind": "chat", "provider": "openai",
                                        "model_id": "gpt-test", "aliases": ["fast"]}
    assert body["aliases"] == admin["aliases"] == {"demo": "echo/echo", "fast": "openai/gpt-test"}


def test_models_api_needs_a_valid_key(models_app):
    client = models_app.test_client()
    for api in (Api(client), Api(client, "cp_not_a_real_key")):
        resp = api.get("/api/v1/models")
        assert resp.status_code == 401
        assert resp.get_json()["error"] == "unauthorized"


def test_models_cli(models_app):
    runner = models_app.test_cli_runner()
    result = runner.invoke(cli_main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert "ollama/llama3" in [m["id"] for m in body["data"]]
    assert body["aliases"]["fast"] == "openai/gpt-test"
    human = runner.invoke(cli_main, ["models"])
    assert human.exit_code == 0
    assert "openai/gpt-test  (plugin openai)  aliases: fast" in human.output
    assert "echo/echo  (plugin echo)  aliases: demo" in human.output


def test_provider_settings_from_chatport_environment(tmp_path, monkeypatch, fake_openai):
    monkeypatch.setenv("CHATPORT_OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("CHATPORT_OPENAI_MODELS", "a,b")
    monkeypatch.setenv("CHATPORT_OPENAI_COMPATIBLE",
                       json.dumps({"vllm": {"base_url": fake_openai.base_url, "models": ["m"]}}))
    monkeypatch.setenv("CHATPORT_MODEL_ALIASES", json.dumps({"fast": "vllm/m"}))
    application = make_app(f"sqlite:///{tmp_path}/c.db", tmp_path)
    from app.providers.llm import registry

    with application.app_context():
        reg = registry()
        assert {"openai/a", "openai/b", "vllm/m"} <= set(reg.models)
        assert collect(reg.get("fast").stream(ChatRequest(HELLO)))[0] == "Hello from the fake upstream."
    assert fake_openai.last.body["model"] == "m"


def test_later_plugin_replaces_a_model_of_the_same_name():
    class LoudEcho(ScriptedModel):
        provider, model_id = "echo", "echo"

    registered("echo-override", register_models=lambda register: register(LoudEcho()))
    try:
        reg = ModelRegistry({})
        assert reg.plugins["echo/echo"] == "echo-override"
        assert collect(reg.get("echo/echo").stream(ChatRequest(HELLO)))[0] == "scripted"
    finally:
        get_plugin_manager().unregister(name="echo-override")


def test_provider_errors_render_with_their_status_and_retry_after(models_app):
    from app.api.errors import render_chatport
    from app.errors import (
        ProviderAuthError,
        ProviderBadRequest,
        ProviderRateLimited,
        ProviderTimeout,
        ProviderUnavailable,
    )

    cases = [(ProviderAuthError(), 502), (ProviderBadRequest(), 400), (ProviderUnavailable(), 502),
             (ProviderTimeout(), 504), (ProviderRateLimited(headers={"Retry-After": "7"}), 429)]
    with models_app.test_request_context("/api/v1/models"):
        for err, status in cases:
            body, code, headers = render_chatport(err)
            assert (code, body["code"], body["error"]) == (status, status, err.code)
    assert headers == {"Retry-After": "7"}


def test_sse_data_follows_the_event_stream_format():
    from app.providers.helpers import sse_data

    lines = [": keep-alive comment", "event: message_start", 'data: {"a": 1}', "", "",
             "data:no-space", "id: 7", "retry: 10", "", "data: line one", "data: line two", "",
             "data: [DONE]"]
    assert list(sse_data(lines)) == ['{"a": 1}', "no-space", "line one\nline two", "[DONE]"]


def test_byte_lines_splits_any_chunking_like_the_line_endings_say():
    import re

    from app.providers.helpers import byte_lines

    raw = 'data: {"a": "é"}\r\n\r\nevent: x\rdata: ünï\n\ndata: [DONE]\r\n: tail'.encode()
    expected = re.split(r"\r\n|\r|\n", raw.decode())
    # every way to cut the stream in two or three pieces, including inside CRLF and inside "é"
    for i in range(len(raw) + 1):
        assert list(byte_lines([raw[:i], raw[i:]])) == expected, i
        for j in range(i, len(raw) + 1, 3):
            assert list(byte_lines([raw[:i], raw[i:j], raw[j:]])) == expected, (i, j)
    assert list(byte_lines(bytes([b]) for b in raw)) == expected
    assert list(byte_lines([b"data: x\r"])) == ["data: x"]
    assert list(byte_lines([])) == []


def test_lazy_client_is_created_once_per_process_and_again_after_fork():
    from app.providers.helpers import LazyClient

    made = []
    lazy = LazyClient(lambda: made.append(object()) or made[-1])
    assert not lazy.created and made == []
    first = lazy.get()
    assert lazy.get() is first and len(made) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a forked worker must not reuse the parent's client
        try:
            os.write(write, b"new" if lazy.get() is not first and len(made) == 2 else b"same")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 10) == b"new"
    os.close(read)
    assert lazy.get() is first


@pytest.mark.server
def test_served_instance_lists_models_configured_by_environment(tmp_path, fake_openai):
    """``chatport serve`` (gunicorn + gevent) reads provider settings from CHATPORT_* JSON."""
    import requests

    from .servers import chatport_server

    env = {"CHATPORT_ADMIN_KEY": "cp_admin_" + "x" * 40,
           "CHATPORT_OPENAI_COMPATIBLE": json.dumps(
               {"vllm": {"base_url": fake_openai.base_url, "models": ["llama-8b"]}}),
           "CHATPORT_MODEL_ALIASES": json.dumps({"local": "vllm/llama-8b"})}
    with chatport_server(tmp_path / "inst", env=env) as base:
        resp = requests.get(base + "/api/v1/models", timeout=10,
                            headers={"Authorization": f"Bearer {env['CHATPORT_ADMIN_KEY']}"})
    assert resp.status_code == 200, resp.text
    by_id = {m["id"]: m for m in resp.json()["data"]}
    assert by_id["vllm/llama-8b"]["aliases"] == ["local"]
    assert by_id["vllm/llama-8b"]["plugin"] == "openai"


def test_sse_batches_group_the_events_each_chunk_completes():
    from app.providers.helpers import byte_lines, sse_batches, sse_data

    raw = b'data: {"a": 1}\n\ndata: b\r\n\r\ndata:c\n: comment\n\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n'
    expected = list(sse_data(byte_lines([raw])))
    assert list(sse_batches([raw])) == [expected]  # one chunk: all its events together
    for i in range(len(raw) + 1):  # any split: the same events, in order, each in the chunk that ends it
        batches = list(sse_batches([raw[:i], raw[i:]]))
        assert [data for batch in batches for data in batch] == expected, i
        assert 1 <= len(batches) <= 2
    assert list(sse_batches(bytes([b]) for b in raw)) == [[data] for data in expected]
    assert list(sse_batches([b"data: tail without blank line"])) == [["tail without blank line"]]
    assert list(sse_batches([b": only a comment\n\n"])) == []


def test_body_chunks_reads_raw_bytes_and_decodes_a_content_coding():
    import gzip

    import httpx

    from app.providers.helpers import body_chunks

    raw = b"data: plain\n\n"
    assert b"".join(body_chunks(httpx.Response(200, content=raw))) == raw
    packed = httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=gzip.compress(raw))
    assert b"".join(body_chunks(packed)) == raw  # decoded, not the gzip bytes


def test_sse_texts_joins_each_read_stops_at_the_end_and_keeps_text_before_a_failure():
    import pytest

    from app.providers.helpers import SSE_END, sse_texts

    def on_event(data):
        if data == "[DONE]":
            return SSE_END
        if data == "boom":
            raise ValueError("bad event")
        return None if data == "skip" else data

    reads = [b"data: a\n\ndata: skip\n\ndata: b\n\n", b"data: c\n\n", b"data: d\n\ndata: [DONE]\n\ndata: e\n\n"]
    assert list(sse_texts(reads, on_event)) == ["ab", "c", "d"]  # one piece per read; nothing after the end
    got = []
    with pytest.raises(ValueError, match="bad event"):
        for text in sse_texts([b"data: x\n\n", b"data: y\n\ndata: boom\n\ndata: z\n\n"], on_event):
            got.append(text)
    assert got == ["x", "y"]  # the text before the failure in its read came out first


def test_sse_texts_passes_other_deltas_in_their_place_between_joined_texts():
    import pytest

    from app.providers.helpers import SSE_END, sse_texts
    from app.providers.llm import Chunk

    calls = Chunk(tool_calls=[{"index": 0, "id": "c1", "name": "f", "arguments": ""}])
    finish = Chunk(finish_reason="tool_calls")

    def on_event(data):
        if data == "[DONE]":
            return SSE_END
        if data == "boom":
            raise ValueError("bad event")
        return {"call": [calls], "text+call": ["y", calls], "finish": [finish]}.get(data, data)

    reads = [b"data: a\n\ndata: b\n\ndata: call\n\ndata: c\n\n",
             b"data: text+call\n\ndata: d\n\ndata: finish\n\ndata: [DONE]\n\n"]
    assert list(sse_texts(reads, on_event)) == ["ab", calls, "c", "y", calls, "d", finish]
    got = []
    with pytest.raises(ValueError, match="bad event"):
        for delta in sse_texts([b"data: x\n\ndata: call\n\ndata: z\n\ndata: boom\n\n"], on_event):
            got.append(delta)
    assert got == ["x", calls, "z"]  # everything before the failure in its read, in order

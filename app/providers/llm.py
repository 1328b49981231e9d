"""What a provider model is, and how the core finds one.

A model turns a ``ChatRequest`` into an iterator of deltas (``str`` text of
the first choice; ``Chunk`` for tool calls, logprobs, other choices and the
finish reason) that ends with one ``Usage``. Non-streaming callers drain the same iterator
(``collect``): one shape, no "result or generator" union. Providers raise
the ``app.errors.Provider*`` taxonomy, never their SDK's exceptions.
"""
import logging
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

from app.errors import BadRequest

log = logging.getLogger("chatport.llm")


# The request fields beyond today's text turn, each named as the capability a model lists in
# ``Model.supports`` when it honours it. A request that sets one its model does not support is a
# 400 naming the field and the model (``Model.check``): nothing that changes the answer is dropped.
FEATURES = ("stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed", "logprobs",
            "top_logprobs", "n", "top_p", "presence_penalty", "frequency_penalty", "logit_bias",
            "reasoning_effort", "images", "audio", "files", "passthrough")


@dataclass
class ChatRequest:
    """What the core asks of a model.

    ``messages`` are in the OpenAI chat shape, the core's canonical one: a ``role``
    (``system``, ``developer``, ``user``, ``assistant``, ``tool``) and a ``content`` that is a
    string, a list of parts (``{"type": "text", "text"}``, ``{"type": "image_url", "image_url":
    {"url", "detail"}}``, ``input_audio``, ``file``) or None (an assistant message with
    ``tool_calls``: ``[{"id", "type": "function", "function": {"name", "arguments"}}]``);
    ``tool_call_id`` on ``tool`` messages; ``name``. ``content_text`` gives a message's text.

    ``stream`` is a hint: False means the caller will drain the iterator anyway (a JSON reply),
    so a provider may make one non-streaming upstream call and yield the whole reply once.
    ``tools`` are OpenAI function tools (``{"type": "function", "function": {"name",
    "description", "parameters", "strict"}}``); ``tool_choice`` is ``auto``, ``none``,
    ``required`` or ``{"type": "function", "function": {"name"}}``; ``response_format`` is
    ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}`` (None for text). ``passthrough`` holds request fields chatport does not model
    (vLLM's ``guided_json``, ``top_k``...), for OpenAI-compatible servers. ``extra`` is the
    core's (``passages``: the knowledge given to the model).
    """

    messages: list
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    stop: Optional[list] = None
    user: Optional[str] = None
    stream: bool = True
    extra: dict = field(default_factory=dict)
    tools: Optional[list] = None
    tool_choice: Union[str, dict, None] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[dict] = None
    seed: Optional[int] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = None
    n: int = 1
    top_p: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict] = None
    metadata: Optional[dict] = None
    reasoning_effort: Optional[str] = None
    passthrough: dict = field(default_factory=dict)

    def features(self):
        """The ``FEATURES`` this request uses (fields set to something but their default)."""
        used = set()
        for name in ("tools", "tool_choice", "parallel_tool_calls", "seed", "top_logprobs", "top_p",
                     "presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort", "stop"):
            if getattr(self, name) not in (None, [], {}):
                used.add(name)
        if self.response_format and self.response_format.get("type", "text") != "text":
            used.add("response_format")
        if self.logprobs:
            used.add("logprobs")
        if self.n and self.n > 1:
            used.add("n")
        if self.passthrough:
            used.add("passthrough")
        for message in self.messages:
            content = message.get("content")
            if message["role"] == "tool" or message.get("tool_calls"):
                used.add("tools")  # a history with tool calls needs a model that knows them
            if isinstance(content, list):
                for part in content:
                    kind = PART_FEATURES.get(part.get("type"))
                    if kind:
                        used.add(kind)
        return used


# Content part types beyond text, and the capability each needs.
PART_FEATURES = {"image_url": "images", "input_audio": "audio", "file": "files"}


def content_text(content):
    """The text of a message's ``content`` (a string, a list of parts, or None)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content if p.get("type") == "text")


IMAGE_TOKENS = 85  # what a low-detail image counts for in an estimate


def message_tokens(message):
    """An estimate of a message's prompt tokens: its text, tool calls and parts."""
    content = message.get("content")
    if isinstance(content, str):
        tokens = estimate_tokens(content)
    else:
        tokens = estimate_tokens(content_text(content))
        if content:
            tokens += IMAGE_TOKENS * sum(1 for p in content if p.get("type") != "text")
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        tokens += estimate_tokens((function.get("name") or "") + (function.get("arguments") or ""))
    return tokens


@dataclass
class Chunk:
    """A delta that is more than the first choice's text (a plain ``str`` delta is that).

    ``index`` is the choice (``n`` > 1); ``tool_calls`` are fragments ``{"index": i, "id",
    "name", "arguments"}`` (the id and name come with a call's first fragment, the arguments
    in pieces to concatenate); ``logprobs`` are OpenAI ``content`` entries (``{"token",
    "logprob", "bytes", "top_logprobs"}``) for this chunk's text; ``finish_reason`` is the
    provider's (``stop``, ``length``, ``tool_calls``, ``content_filter``), on the choice's last
    chunk."""

    text: str = ""
    index: int = 0
    tool_calls: Optional[list] = None
    logprobs: Optional[list] = None
    finish_reason: Optional[str] = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cached_tokens: int = 0  # of the prompt tokens, those the provider served from its cache
    reasoning_tokens: int = 0  # of the completion tokens, those spent reasoning

    @property
    def total_tokens(self):
        return self.prompt_tokens + self.completion_tokens


Delta = Union[str, Chunk, Usage]


class Model:
    """Base class for chat models. Subclasses set ``provider`` and ``model_id``.

    ``supports`` lists the ``FEATURES`` the model honours; ``temperature``, ``max_tokens`` and
    ``user`` are always accepted."""

    provider: str = ""
    model_id: str = ""
    description: str = ""
    supports: frozenset = frozenset({"stop"})

    @property
    def name(self):
        return f"{self.provider}/{self.model_id}"

    def check(self, request: ChatRequest):
        """Raise BadRequest naming the first field of ``request`` this model cannot honour."""
        missing = request.features() - self.supports
        if missing:
            name = next(f for f in FEATURES if f in missing)
            field_name = {"images": "messages", "audio": "messages", "files": "messages"}.get(name, name)
            what = {"images": "image content parts", "audio": "audio content parts",
                    "files": "file content parts"}.get(name, name)
            if name == "passthrough":
                field_name = sorted(request.passthrough)[0]
                what = f"the parameter {field_name!r}"
            raise BadRequest(f"Model {self.name} does not support {what}", code="unsupported_parameter",
                             fields={field_name: f"not supported by {self.name}"})

    def stream(self, request: ChatRequest) -> Iterator[Delta]:
        """Yield deltas (``str`` for the first choice's text, ``Chunk`` for anything more), then
        exactly one ``Usage``. Close upstream on ``GeneratorExit``."""
        raise NotImplementedError


@dataclass
class EmbeddingRequest:
    """What the core asks of an embedding model: ``inputs`` are strings or token arrays
    (lists of ints); ``dimensions`` asks for shorter vectors where the model can give them."""

    inputs: list
    dimensions: Optional[int] = None
    user: Optional[str] = None


@dataclass
class Embeddings:
    """One vector (a list of floats) per input, and the usage (prompt tokens)."""

    vectors: list
    usage: Usage


class EmbeddingModel:
    """Base class for embedding models (the second kind of model).

    ``supports`` may hold ``dimensions`` (shorter vectors on request) and ``tokens`` (token
    array inputs)."""

    provider: str = ""
    model_id: str = ""
    description: str = ""
    dimensions: int = 0
    supports: frozenset = frozenset()

    @property
    def name(self):
        return f"{self.provider}/{self.model_id}"

    def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Embed ``request.inputs``. Raises Provider* errors."""
        raise NotImplementedError


def estimate_tokens(text):
    """Rough token count (~4 characters a token) for providers that report none."""
    return max(1, (len(text) + 3) // 4) if text else 0


def add_tool_fragment(calls, fragment):
    """Join one streamed tool-call fragment (an item of ``Chunk.tool_calls``) into ``calls``:
    ``{index: {"id", "name", "arguments": [pieces]}}``. Returns the call it belongs to."""
    index = fragment.get("index", len(calls))
    call = calls.get(index)
    if call is None:
        call = calls[index] = {"id": None, "name": None, "arguments": []}
    if fragment.get("id"):
        call["id"] = fragment["id"]
    if fragment.get("name"):
        call["name"] = fragment["name"]
    if fragment.get("arguments"):
        call["arguments"].append(fragment["arguments"])
    return call


def joined_tool_calls(calls):
    """``calls`` (as ``add_tool_fragment`` joins them) in the canonical shape, by index:
    ``[{"id", "type": "function", "function": {"name", "arguments"}}]``, or None."""
    if not calls:
        return None
    return [{"id": call["id"], "type": "function",
             "function": {"name": call["name"] or "", "arguments": "".join(call["arguments"])}}
            for _, call in sorted(calls.items())]


def collect(deltas):
    """Drain a delta iterator into ``(text of the first choice, usage)``."""
    parts, usage = [], None
    for delta in deltas:
        if isinstance(delta, Usage):
            usage = delta
        elif isinstance(delta, Chunk):
            if delta.index == 0 and delta.text:
                parts.append(delta.text)
        else:
            parts.append(delta)
    return "".join(parts), usage


class ModelRegistry:
    """The models one app can use, built once from the loaded plugins.

    ``models`` / ``embedding_models`` map ``provider/model`` to the model;
    ``plugins`` maps each name to the plugin that registered it; ``aliases``
    comes from config ``MODEL_ALIASES``. On a name clash the plugin
    registered later wins (a ``tryfirst`` implementation over all others)
    and a warning is logged.
    """

    def __init__(self, config):
        from app.providers.loading import get_plugin_manager

        self.config = config
        self.models = {}
        self.embedding_models = {}
        self.plugins = {}
        pm = get_plugin_manager(config)
        self._call(pm.hook.register_models, self.models)
        self._call(pm.hook.register_embedding_models, self.embedding_models)
        self.aliases = dict(config.get("MODEL_ALIASES") or {})

    def _call(self, hook, target):
        """Call each implementation with its own ``register``, to know who registered what."""
        for impl in hook.get_hookimpls():  # trylast, then registration order, then tryfirst
            if impl.hookwrapper or impl.wrapper:
                continue

            def register(model, _plugin=impl.plugin_name):
                if model.name in target:
                    log.warning("model %s from plugin %s replaces the one from %s",
                                model.name, _plugin, self.plugins.get(model.name))
                target[model.name] = model
                self.plugins[model.name] = _plugin

            available = {"register": register, "config": self.config}
            impl.function(**{name: available[name] for name in impl.argnames})

    def aliases_of(self, name):
        """Aliases that resolve to ``name``."""
        return sorted(a for a in self.aliases if self.resolve_name(a) == name)

    def resolve_name(self, name):
        """Alias → ``provider/model``."""
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def get(self, name, field_name="model", kind="chat"):
        """The model of ``kind`` (``chat`` or ``embedding``) for ``name`` (or an alias).
        Raises BadRequest listing the models of that kind."""
        models = self.models if kind == "chat" else self.embedding_models
        resolved = self.resolve_name(name or "")
        model = models.get(resolved)
        if model is None:
            known = sorted(models) + sorted(a for a in self.aliases if self.resolve_name(a) in models)
            raise BadRequest(
                f"Unknown model {name!r}. Available: {', '.join(known) or 'none'}",
                code="model_not_found", fields={field_name: "unknown model"},
            )
        return model


def registry(app=None):
    """The current app's ModelRegistry (created on first use)."""
    from flask import current_app

    app = app or current_app
    reg = app.extensions.get("chatport_models")
    if reg is None:
        reg = app.extensions["chatport_models"] = ModelRegistry(app.config)
    return reg

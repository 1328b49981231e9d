"""What a provider model is, and how the core finds one.

A model turns a ``ChatRequest`` into an iterator of text deltas (``str``)
that ends with one ``Usage``. Non-streaming callers drain the same iterator
(``collect``): one shape, no "result or generator" union. Providers raise
the ``app.errors.Provider*`` taxonomy, never their SDK's exceptions.
"""
import logging
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

from app.errors import BadRequest

log = logging.getLogger("chatport.llm")


@dataclass
class ChatRequest:
    """What the core asks of a model.

    ``stream`` is a hint: False means the caller will drain the iterator
    anyway (a JSON reply), so a provider may make one non-streaming upstream
    call and yield the whole text once. The iterator's shape is the same.
    """

    messages: list  # [{"role": "system"|"user"|"assistant", "content": str}]
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    stop: Optional[list] = None
    user: Optional[str] = None
    stream: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self):
        return self.prompt_tokens + self.completion_tokens


Delta = Union[str, Usage]


class Model:
    """Base class for chat models. Subclasses set ``provider`` and ``model_id``."""

    provider: str = ""
    model_id: str = ""
    description: str = ""

    @property
    def name(self):
        return f"{self.provider}/{self.model_id}"

    def stream(self, request: ChatRequest) -> Iterator[Delta]:
        """Yield text deltas, then exactly one ``Usage``. Close upstream on ``GeneratorExit``."""
        raise NotImplementedError


class EmbeddingModel:
    """Base class for embedding models (optional second kind of model)."""

    provider: str = ""
    model_id: str = ""
    description: str = ""
    dimensions: int = 0

    @property
    def name(self):
        return f"{self.provider}/{self.model_id}"

    def embed(self, texts: list) -> list:
        """Return one vector (list of floats) per text."""
        raise NotImplementedError


def estimate_tokens(text):
    """Rough token count (~4 characters a token) for providers that report none."""
    return max(1, (len(text) + 3) // 4) if text else 0


def collect(deltas):
    """Drain a delta iterator into ``(text, usage)``."""
    parts, usage = [], None
    for delta in deltas:
        if isinstance(delta, Usage):
            usage = delta
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
        pm = get_plugin_manager()
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

    def get(self, name, field_name="model"):
        """The model for ``name`` (or an alias). Raises BadRequest listing what exists."""
        resolved = self.resolve_name(name or "")
        model = self.models.get(resolved)
        if model is None:
            known = sorted(self.models) + sorted(self.aliases)
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

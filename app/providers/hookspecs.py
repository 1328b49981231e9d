"""Plugin hooks (pluggy project ``chatport``).

Hooks named ``register_*`` receive a ``register`` callback instead of
returning lists, so the core can add keyword arguments later without
breaking plugins. Implementations may accept fewer arguments than listed.
"""
from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("chatport")
hookimpl = HookimplMarker("chatport")


@hookspec
def register_models(register, config):
    """Register chat models: call ``register(model)`` with ``app.providers.llm.Model`` instances."""


@hookspec
def register_embedding_models(register, config):
    """Register embedding models: call ``register(model)`` with ``app.providers.llm.EmbeddingModel`` instances."""

"""What models this chatport offers (for ``GET /api/v1/models`` and ``chatport models``)."""
from app.providers.llm import registry


def list_models(reg=None, *, configuration=True):
    """Every registered model, sorted by name: chat models, then embedding models.

    Each item: id (``provider/model``), kind, provider, model_id, aliases (those resolving to
    it), dimensions (embeddings); with ``configuration`` (operators, admin keys) also plugin and
    description, which say how and where the model is served (a provider's base URL).
    """
    reg = reg or registry()
    items = []
    for kind, models in (("chat", reg.models), ("embedding", reg.embedding_models)):
        for name in sorted(models):
            model = models[name]
            item = {"id": name, "kind": kind, "provider": model.provider,
                    "model_id": model.model_id, "aliases": reg.aliases_of(name)}
            if configuration:
                item["plugin"] = reg.plugins.get(name)
                item["description"] = model.description or ""
            if kind == "embedding":
                item["dimensions"] = model.dimensions
            items.append(item)
    return items


def aliases(reg=None):
    """Configured aliases ``{alias: provider/model}`` (targets may be unknown models)."""
    reg = reg or registry()
    return dict(sorted(reg.aliases.items()))

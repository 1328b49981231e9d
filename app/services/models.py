"""What models this chatport offers (for ``GET /api/v1/models`` and ``chatport models``)."""
from app.providers.llm import registry


def list_models(reg=None):
    """Every registered model, sorted by name: chat models, then embedding models.

    Each item: id (``provider/model``), kind, provider, model_id, plugin,
    description, aliases (those resolving to it), dimensions (embeddings).
    """
    reg = reg or registry()
    items = []
    for kind, models in (("chat", reg.models), ("embedding", reg.embedding_models)):
        for name in sorted(models):
            model = models[name]
            item = {"id": name, "kind": kind, "provider": model.provider,
                    "model_id": model.model_id, "plugin": reg.plugins.get(name),
                    "description": model.description or "", "aliases": reg.aliases_of(name)}
            if kind == "embedding":
                item["dimensions"] = model.dimensions
            items.append(item)
    return items


def aliases(reg=None):
    """Configured aliases ``{alias: provider/model}`` (targets may be unknown models)."""
    reg = reg or registry()
    return dict(sorted(reg.aliases.items()))

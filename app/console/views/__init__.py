"""The console's pages, one module per page group; each registers its routes on ``bp``."""
from app.console.views import (  # noqa: F401
    auth,
    automations,
    bots,
    conversations,
    keys,
    knowledge,
    overview,
    playground,
    usage,
)

"""The console's pages, one module per page group; each registers its routes on ``bp``."""
from app.console.views import auth, bots, keys, knowledge, overview, playground, usage  # noqa: F401

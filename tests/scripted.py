"""A scripted provider model registered through the real plugin manager."""
from contextlib import contextmanager

from app.providers.hookspecs import hookimpl
from app.providers.llm import Model
from app.providers.loading import get_plugin_manager


class ScriptedModel(Model):
    provider = "scripted"

    def __init__(self, model_id, script):
        self.model_id = model_id
        self.script = script
        self.requests = []
        self.closed = False

    def stream(self, request):
        self.requests.append(request)
        try:
            yield from self.script(request)
        finally:
            self.closed = True


@contextmanager
def scripted(app, script, model_id="test"):
    """Register ``scripted/<model_id>`` whose stream is ``script(request)``; yield the model."""
    model = ScriptedModel(model_id, script)

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(model)

    pm = get_plugin_manager()
    name = f"scripted-{model_id}"
    pm.register(Plugin(), name=name)
    app.extensions.pop("chatport_models", None)
    try:
        yield model
    finally:
        pm.unregister(name=name)
        app.extensions.pop("chatport_models", None)

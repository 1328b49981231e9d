"""The usage meter of the current request (one usage row per API call).

Views and streaming generators describe the call on the meter; the usage
issue's request hook turns it into a ``Usage`` row when the response is
closed (after the last byte of a stream). Capture ``meter = current()``
before returning a streaming generator and update that object from it.
"""
from dataclasses import dataclass, field

from flask import g


@dataclass
class UsageMeter:
    dialect: str = "chatport"
    category: str = "account"
    key_id: str = None
    bot_id: str = None
    automation_id: str = None
    model: str = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    extra_credits: int = 0
    # Set when a call used several models (automations): token credits already priced per model.
    token_credits: int = None
    status: int = 0
    details: dict = field(default_factory=dict)

    def add_tokens(self, usage, model=None):
        """Add an ``app.providers.llm.Usage`` (or None) for a model call."""
        if model:
            self.model = model
        if usage is None:
            return
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.tokens_estimated = self.tokens_estimated or usage.estimated


def current():
    """This request's meter (created on first use)."""
    if "usage_meter" not in g:
        g.usage_meter = UsageMeter()
    return g.usage_meter


def meter_for(automation):
    """Set the request's meter for a run; return the ``on_finish`` callback for ``execute``."""
    meter = current()
    meter.automation_id = automation.id

    def on_finish(totals, token_credits):
        meter.prompt_tokens += totals.prompt_tokens
        meter.completion_tokens += totals.completion_tokens
        meter.tokens_estimated = meter.tokens_estimated or totals.estimated
        meter.token_credits = (meter.token_credits or 0) + token_credits

    return on_finish

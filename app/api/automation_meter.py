"""Metering shared by the three automation surfaces (hooks, flows, chatport API)."""
from .. import metering


def meter_for(automation):
    """Set the request's meter for a run; return the ``on_finish`` callback for ``execute``."""
    meter = metering.current()
    meter.automation_id = automation.id

    def on_finish(totals, token_credits):
        meter.prompt_tokens += totals.prompt_tokens
        meter.completion_tokens += totals.completion_tokens
        meter.tokens_estimated = meter.tokens_estimated or totals.estimated
        meter.token_credits = (meter.token_credits or 0) + token_credits

    return on_finish

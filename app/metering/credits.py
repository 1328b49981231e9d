"""Credits: one per API call, success or not, plus token credits per model.

``MODEL_PRICES`` maps a model name (``provider/model``, or ``*`` for the
default) to credits per 1,000 prompt and completion tokens, e.g.
``{"openai/gpt-4o": {"prompt": 5, "completion": 15}, "*": {"prompt": 1, "completion": 1}}``.
Token credits round up, so any model call costs at least what it used.
"""
import math

CALL_CREDITS = 1
DEFAULT_PRICE = {"prompt": 0, "completion": 0}


def token_credits(prices, model, prompt_tokens, completion_tokens):
    """Credits for a model call's tokens under the price table ``prices``."""
    prices = prices or {}
    price = prices.get(model) or prices.get("*") or DEFAULT_PRICE
    raw = (prompt_tokens * price.get("prompt", 0) + completion_tokens * price.get("completion", 0)) / 1000.0
    return int(math.ceil(raw - 1e-9)) if raw > 0 else 0


def call_credits(prices, model, prompt_tokens, completion_tokens):
    """Total credits for one API call: the call itself plus its tokens."""
    return CALL_CREDITS + token_credits(prices, model, prompt_tokens, completion_tokens)

"""Sampling options every dialect accepts alike: one range and one message for each."""
from app.errors import BadRequest

TEMPERATURE_MIN = 0
TEMPERATURE_MAX = 2
TEMPERATURE_RULE = f"must be a number between {TEMPERATURE_MIN} and {TEMPERATURE_MAX}"


def check_temperature(value):
    """Return ``value`` when it is a temperature (None: the bot's or the model's default
    applies). Raises BadRequest otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not TEMPERATURE_MIN <= value <= TEMPERATURE_MAX:
        raise BadRequest(f"temperature {TEMPERATURE_RULE}", fields={"temperature": TEMPERATURE_RULE})
    return value

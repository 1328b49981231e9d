"""Built-in ``echo`` provider: deterministic replies, no credentials.

The reply repeats the last user message (``Echo: <text>``), one word per
delta. For tests and benchmarks a stream can be shaped:
- config ``ECHO_TOKEN_DELAY`` (seconds between deltas) and ``ECHO_TOKENS``
  (reply of exactly N tokens ``t1 t2 ...``);
- per request, when ``ECHO_DIRECTIVES`` is on, a directive in the last user
  message: ``[echo tokens=50 delay=0.02]``. With it off the directive is text
  like any other and is echoed.

Every reply is bounded, whatever asked for it: at most ``ECHO_MAX_TOKENS``
tokens, at most ``ECHO_MAX_DELAY`` seconds between two deltas, and no delta
after ``ECHO_MAX_DURATION`` seconds. Words are produced one at a time, so a
large count costs nothing before it is cut.
"""
import re
import time

from app.providers import Model, Usage, estimate_tokens, hookimpl

DIRECTIVE = re.compile(r"\[echo(?:\s+tokens=(\d+))?(?:\s+delay=(\d+(?:\.\d*)?))?\s*\]")
WORD = re.compile(r"\S+")

DEFAULT_MAX_TOKENS = 1000
DEFAULT_MAX_DELAY = 0.5
DEFAULT_MAX_DURATION = 30.0


def _setting(config, name, default, kind):
    value = config.get(name)
    return default if value is None else kind(value)


class EchoModel(Model):
    provider = "echo"
    model_id = "echo"
    description = "Repeats the last user message; deterministic, for tests and demos."

    def __init__(self, config):
        self.default_delay = float(config.get("ECHO_TOKEN_DELAY") or 0)
        self.default_tokens = config.get("ECHO_TOKENS")
        self.directives = bool(config.get("ECHO_DIRECTIVES"))
        self.max_tokens = _setting(config, "ECHO_MAX_TOKENS", DEFAULT_MAX_TOKENS, int)
        self.max_delay = _setting(config, "ECHO_MAX_DELAY", DEFAULT_MAX_DELAY, float)
        self.max_duration = _setting(config, "ECHO_MAX_DURATION", DEFAULT_MAX_DURATION, float)

    def _shape(self, text):
        """(token count or None, delay) for a reply to ``text``, within the bounds."""
        delay, count = self.default_delay, self.default_tokens
        match = DIRECTIVE.search(text) if self.directives else None
        if match:
            if match.group(1):  # more digits than any bound: no int() of a huge string
                count = int(match.group(1)) if len(match.group(1)) <= 12 else self.max_tokens
            delay = float(match.group(2)) if match.group(2) else delay
        return count, max(0.0, min(delay, self.max_delay))

    def stream(self, request):
        last = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        count, delay = self._shape(last)
        if count:
            words = (f"t{i}" for i in range(1, int(count) + 1))
        else:
            words = (m.group() for m in WORD.finditer("Echo: " + last))
        limit = self.max_tokens
        if request.max_tokens:
            limit = min(limit, request.max_tokens)
        deadline = time.monotonic() + self.max_duration
        sent = 0
        for word in words:
            if sent >= limit:
                break
            if delay:
                if time.monotonic() + delay > deadline:
                    break
                time.sleep(delay)
            yield word if sent == 0 else " " + word
            sent += 1
        prompt = sum(estimate_tokens(m["content"]) for m in request.messages)
        yield Usage(prompt_tokens=prompt, completion_tokens=sent)


@hookimpl
def register_models(register, config):
    register(EchoModel(config))

"""Built-in ``echo`` provider: deterministic replies, no credentials.

The reply repeats the last user message (``Echo: <text>``), one word per
delta. For tests and benchmarks a stream can be shaped:
- config ``ECHO_TOKEN_DELAY`` (seconds between deltas) and ``ECHO_TOKENS``
  (reply of exactly N tokens ``t1 t2 ...``);
- or per request, a directive in the last user message:
  ``[echo tokens=50 delay=0.02]``.
"""
import re
import time

from app.providers import Model, Usage, estimate_tokens, hookimpl

DIRECTIVE = re.compile(r"\[echo(?:\s+tokens=(\d+))?(?:\s+delay=([0-9.]+))?\s*\]")


class EchoModel(Model):
    provider = "echo"
    model_id = "echo"
    description = "Repeats the last user message; deterministic, for tests and demos."

    def __init__(self, config):
        self.default_delay = float(config.get("ECHO_TOKEN_DELAY") or 0)
        self.default_tokens = config.get("ECHO_TOKENS")

    def stream(self, request):
        last = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        delay, count = self.default_delay, self.default_tokens
        match = DIRECTIVE.search(last)
        if match:
            count = int(match.group(1)) if match.group(1) else count
            delay = float(match.group(2)) if match.group(2) else delay
        if count:
            words = [f"t{i}" for i in range(1, int(count) + 1)]
        else:
            words = ("Echo: " + last).split()
        limit = request.max_tokens or len(words)
        sent = 0
        for i, word in enumerate(words[:limit]):
            if delay:
                time.sleep(delay)
            yield word if i == 0 else " " + word
            sent += 1
        prompt = sum(estimate_tokens(m["content"]) for m in request.messages)
        yield Usage(prompt_tokens=prompt, completion_tokens=sent)


@hookimpl
def register_models(register, config):
    register(EchoModel(config))

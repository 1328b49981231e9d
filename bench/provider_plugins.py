"""Per-request cost of the provider plugins over a bare HTTP client, against
the fake upstreams (in-process, c=1). Run from the repository root:

    .venv/bin/python bench/provider_plugins.py [seconds-per-case]

Prints p50 latency per case: plain ``requests`` to the fake, then the same
request through the openai / anthropic plugin (real SDKs, collect()).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from app.providers.llm import ChatRequest, ModelRegistry, collect  # noqa: E402
from tests.fakes import FakeAnthropic, FakeOpenAI  # noqa: E402


def measure(fn, seconds):
    fn()
    latencies, started = [], time.monotonic()
    while time.monotonic() - started < seconds:
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    return len(latencies), latencies[len(latencies) // 2] * 1000


def main(seconds=3.0):
    chunks = [f" t{i}" for i in range(50)]
    with FakeOpenAI(chunks=chunks) as oai, FakeAnthropic(chunks=chunks) as ant:
        reg = ModelRegistry({"OPENAI_BASE_URL": oai.base_url, "OPENAI_MODELS": ["m"],
                             "OPENAI_MAX_RETRIES": 0, "ANTHROPIC_API_KEY": "k",
                             "ANTHROPIC_BASE_URL": ant.url, "ANTHROPIC_MODELS": ["c"],
                             "ANTHROPIC_MAX_RETRIES": 0, "PROVIDER_ALLOWED_NETWORKS": ["127.0.0.0/8"]})
        msgs = [{"role": "user", "content": "hi"}]
        http = requests.Session()
        cases = [
            ("requests -> fake openai, JSON", lambda: http.post(
                oai.base_url + "/chat/completions", json={"model": "m", "messages": msgs}).json()),
            ("openai plugin, JSON", lambda: collect(
                reg.get("openai/m").stream(ChatRequest(msgs, stream=False)))),
            ("requests -> fake openai, 50-chunk stream", lambda: http.post(
                oai.base_url + "/chat/completions",
                json={"model": "m", "messages": msgs, "stream": True}).content),
            ("openai plugin, 50-chunk stream", lambda: collect(
                reg.get("openai/m").stream(ChatRequest(msgs)))),
            ("requests -> fake anthropic, 50-chunk stream", lambda: http.post(
                ant.url + "/v1/messages",
                json={"model": "c", "max_tokens": 100, "messages": msgs, "stream": True}).content),
            ("anthropic plugin, 50-chunk stream", lambda: collect(
                reg.get("anthropic/c").stream(ChatRequest(msgs)))),
        ]
        for label, fn in cases:
            count, p50 = measure(fn, seconds)
            print(f"{label:45} n={count:5}  p50={p50:.2f} ms")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)

"""The provider plugins under gevent (how ``chatport serve`` runs them):
many streams share one process and one SDK client without blocking each other."""
import json
import os
import subprocess
import sys

from .fakes import FakeAnthropic, FakeOpenAI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, sys, time
import gevent
from app.providers.llm import ChatRequest, ModelRegistry, collect

name, config = sys.argv[1], json.loads(sys.argv[2])
model = ModelRegistry(config).get(name)
request = ChatRequest([{"role": "user", "content": "hi"}])
started = time.monotonic()
jobs = [gevent.spawn(lambda: collect(model.stream(request))) for _ in range(40)]
gevent.joinall(jobs, raise_error=True)
texts = {job.value[0] for job in jobs}
print(json.dumps({"elapsed": time.monotonic() - started, "texts": sorted(texts),
                  "clients": len({id(model.client.get())})}))
"""


def run_concurrently(name, config):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env["PYTHONPATH"] = ROOT
    env["CHATPORT_PROVIDER_ALLOWED_NETWORKS"] = '["127.0.0.0/8"]'  # the fakes listen there
    out = subprocess.run([sys.executable, "-c", SCRIPT, name, json.dumps(config)], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_openai_streams_run_concurrently_under_gevent():
    # 40 streams of 10 deltas 50 ms apart: 0.5 s each, 20 s if they blocked each other.
    with FakeOpenAI(chunks=[f"t{i} " for i in range(10)], chunk_delay=0.05) as fake:
        result = run_concurrently("openai/m", {"OPENAI_BASE_URL": fake.base_url,
                                               "OPENAI_MODELS": ["m"], "OPENAI_MAX_RETRIES": 0})
    assert result["texts"] == ["".join(f"t{i} " for i in range(10))]
    assert result["elapsed"] < 5, result
    assert len(fake.requests) == 40


def test_anthropic_streams_run_concurrently_under_gevent():
    with FakeAnthropic(chunks=[f"t{i} " for i in range(10)], chunk_delay=0.05) as fake:
        result = run_concurrently("anthropic/c", {"ANTHROPIC_BASE_URL": fake.url,
                                                  "ANTHROPIC_API_KEY": "k",
                                                  "ANTHROPIC_MODELS": ["c"],
                                                  "ANTHROPIC_MAX_RETRIES": 0})
    assert result["texts"] == ["".join(f"t{i} " for i in range(10))]
    assert result["elapsed"] < 5, result


HEARTBEAT_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json
import gevent
from app.providers.llm import Usage
from app.providers.streaming import HEARTBEAT, with_heartbeats

produced = []

def quick():  # a token every 10 ms, with the usage record in the middle
    for w in ("a", "b", "c", Usage(1, 3), "d", "e", "f"):
        gevent.sleep(0.01)
        produced.append(w if isinstance(w, str) else "U")
        yield w

def late():  # silent for longer than the heartbeat interval, then three tokens at once
    gevent.sleep(0.15)
    yield "x"
    yield "y"
    yield "z"

def slow_then_fail():
    gevent.sleep(0.25)
    yield "x"
    raise ValueError("upstream broke")

def show(item):
    return "HB" if item is HEARTBEAT else item if isinstance(item, str) else repr(item)

out = {"busy": [], "ahead": [], "late": [], "paced": [], "fail": [], "error": None}
for item in with_heartbeats(quick(), 5):  # a consumer slower than the tokens (a slow client)
    out["busy"].append(show(item))
    out["ahead"].append(len(produced))
    gevent.sleep(0.035)
for item in with_heartbeats(late(), 0.1):
    out["late"].append(show(item))
    if item is HEARTBEAT:
        gevent.sleep(0.1)  # busy writing the heartbeat when the tokens come

def paced():  # the consumer keeps up: one item per delta, nothing held back
    for w in ("p", "q", "r"):
        gevent.sleep(0.02)
        yield w
out["paced"] = [show(i) for i in with_heartbeats(paced(), 5)]
try:
    for item in with_heartbeats(slow_then_fail(), 0.1):
        out["fail"].append(show(item))
except ValueError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def test_with_heartbeats_hands_items_over_in_order_and_joins_text_that_waited():
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", HEARTBEAT_SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # items in order, one per request of the consumer: the producer does not read ahead of a
    # busy consumer (the upstream connection holds the rest, as a relay would)
    busy = result["busy"]
    assert busy[:3] == ["a", "b", "c"] and busy[3].startswith("Usage(") and busy[4:] == ["d", "e", "f"], busy
    assert result["ahead"] == [1, 2, 3, 4, 5, 6, 7], result["ahead"]
    # text that came while the consumer was busy with a heartbeat is joined into one item
    assert result["late"] == ["HB", "xyz"], result["late"]
    assert result["paced"] == ["p", "q", "r"]
    assert result["fail"][:2] == ["HB", "HB"] and result["fail"][-1] == "x"
    assert result["error"] == "upstream broke"

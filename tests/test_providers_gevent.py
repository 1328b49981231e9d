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
from app.llm import ChatRequest, ModelRegistry, collect

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
from app.streaming import with_heartbeats

out = {}
timeline = []

def silent_then_more():
    timeline.append("a")
    yield "a"
    gevent.sleep(0.45)  # silent: beats go out meanwhile
    timeline.append("b")
    yield "b"

def beat():
    timeline.append("HB")

consumer = gevent.getcurrent()
def where():
    yield gevent.getcurrent() is consumer

out["same_greenlet"] = list(with_heartbeats(where(), 0.1, beat)) == [True]
out["items"] = list(with_heartbeats(silent_then_more(), 0.1, beat))
out["timeline"] = timeline[:]

# a beat still being written when the next item comes: the caller waits for it to finish
slow = []
def slow_beat():
    slow.append("beat start")
    gevent.sleep(0.3)
    slow.append("beat end")

def item_during_beat():
    gevent.sleep(0.2)  # the beat starts at ~0.1-0.15 s and ends ~0.3 s later
    yield "x"

for item in with_heartbeats(item_during_beat(), 0.1, slow_beat):
    slow.append("caller got " + item)
out["slow"] = slow

quiet = []
out["no_beat"] = list(with_heartbeats(silent_then_more(), 0.1, None))
try:
    def broken():
        yield "y"
        raise ValueError("upstream broke")
    list(with_heartbeats(broken(), 0.1, beat))
except ValueError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def test_with_heartbeats_beats_while_the_provider_is_silent_and_never_over_a_write():
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", HEARTBEAT_SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same_greenlet"]  # the provider is read in the caller's own greenlet
    assert result["items"] == ["a", "b"]
    timeline = result["timeline"]
    assert timeline[0] == "a" and timeline[-1] == "b"
    assert 2 <= timeline.count("HB") <= 5, timeline  # ~every 0.1 s of a 0.45 s silence
    assert result["slow"] == ["beat start", "beat end", "caller got x"], result["slow"]
    assert result["no_beat"] == ["a", "b"]
    assert result["error"] == "upstream broke"

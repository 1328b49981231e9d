"""TTFT under bursts of concurrent streams: the pass-through and chatport checkouts, interleaved.

    .venv/bin/python -m bench.bursts . [/path/to/other-checkout ...] [--rounds 3] [--streams 1000]
                                     [--warm] [--preload SECONDS]

Starts the slow fake OpenAI upstream (50 tokens, 20 ms apart) on 127.0.0.1. Each round, for
the pass-through and each checkout in turn: a fresh server (1 gevent worker), 5 single streams,
then ``--streams`` concurrent streams; the server is stopped by its pid before the next starts.
A fresh server opens a new upstream connection for every stream of the burst, as the gateway
benchmark's one burst does. With ``--warm`` the servers stay up across rounds, so from the
second round on the bursts reuse the connections of the one before. Prints, per target, the
median TTFT p50 (and its ratio to the pass-through's), the worker's CPU time per stream and the
errors. One burst is noisy on this machine: compare medians of several rounds.
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001

import argparse
import json
import os
import statistics
import tempfile
import time

from bench import ab
from bench import run_gateway as rg

MSG = [{"role": "user", "content": "hello"}]


def _start(procs, name, up_fast, up_slow):
    """``(port, body, headers, worker pid)`` of a fresh server for ``name``."""
    port = rg.free_port()
    if name == "pass-through":
        master = rg.start_passthrough(procs, port, up_slow)
        body, headers = json.dumps({"model": "gpt-bench", "stream": True, "messages": MSG}), {}
    else:
        master = rg.start_chatport(procs, tempfile.mkdtemp(prefix="chatport-bursts-"), port, up_fast, up_slow,
                                   root=os.path.abspath(name))
        rg.wait_up(port, "/healthz")
        body = json.dumps({"model": "slow/gpt-bench", "stream": True, "messages": MSG})
        headers = {"Authorization": f"Bearer {rg.KEY}"}
    for _ in range(5):
        rg.one_stream(port, "/v1/chat/completions", body, headers)
    return port, body, headers, ab._worker_pid(master)


def _preload(port, name, seconds):
    v1 = {"model": "gpt-bench" if name == "pass-through" else "openai/gpt-bench", "messages": MSG}
    headers = {} if name == "pass-through" else {"Authorization": f"Bearer {rg.KEY}"}
    rg.wrk(port, "/v1/chat/completions", json.dumps(v1), 16, seconds, headers)
    if name != "pass-through":
        path, body = ab._target(port, "bot")
        rg.wrk(port, path, json.dumps(body), 16, seconds, headers)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", help="directories holding a chatport checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--warm", action="store_true", help="keep the servers (and their connections) across rounds")
    parser.add_argument("--preload", type=int, default=0, metavar="SECONDS",
                        help="load each fresh server first, as the gateway benchmark has by its burst: "
                             "wrk c=16 for SECONDS of /v1 calls, then as long of bot turns (chatport)")
    args = parser.parse_args()

    procs = rg.Procs()
    up_fast, up_slow = rg.free_port(), rg.free_port()
    names = ["pass-through", *args.checkouts]
    results = {name: [] for name in names}
    kept = {}
    try:
        rg.start_upstreams(procs, up_fast, up_slow, 0.02)
        for _ in range(args.rounds):
            for name in names:
                servers = procs if args.warm else rg.Procs()
                if name not in kept:
                    kept[name] = _start(servers, name, up_fast, up_slow)
                    if args.preload:
                        _preload(kept[name][0], name, args.preload)
                port, body, headers, pid = kept[name]
                before = ab._cpu_seconds(pid)
                out = rg.streams(port, "/v1/chat/completions", body, headers, args.streams)
                used = ab._cpu_seconds(pid) - before
                results[name].append((out["ttft_p50"] or float("nan"), used * 1000 / args.streams, out["errors"]))
                if not args.warm:
                    servers.stop()
                    del kept[name]
                time.sleep(1)
        base = statistics.median(r[0] for r in results["pass-through"])
        for name, runs in results.items():
            ttft = statistics.median(r[0] for r in runs)
            print(f"{name}: TTFT p50 {ttft:.0f} ms ({ttft / base:.2f}x the pass-through's), "
                  f"runs {', '.join(f'{r[0]:.0f}' for r in runs)}; CPU {statistics.median(r[1] for r in runs):.2f} "
                  f"ms/stream; errors {sum(r[2] for r in runs)}")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()

"""CPU per request of two (or more) checkouts of chatport, measured in one run.

    apt-get install -y wrk
    .venv/bin/python -m bench.ab /path/to/checkout-a /path/to/checkout-b [--target v1|stream|bot] [--passthrough]
                                 [--rounds 5] [--duration 3] [--connections 16]

Starts the fast fake OpenAI upstream and one ``chatport serve`` (1 gevent worker, SQLite) from
each checkout, all on 127.0.0.1, then runs ``wrk`` against them in interleaved rounds and reads
each worker's CPU time from ``/proc/<pid>/stat`` around every run. Prints the median CPU
milliseconds per request and req/s of each. CPU per request is steadier than req/s on a machine
whose speed drifts, and interleaving exposes both checkouts to the same drift. Each checkout runs
with its own code (``python -m app.cli`` from its directory) and this checkout's Python.
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001

import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile

from bench import run_gateway as rg


def _worker_pid(master):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master.pid)], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def _cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _target(port, kind):
    auth = {"Authorization": f"Bearer {rg.KEY}", "Content-Type": "application/json"}
    if kind in ("v1", "stream"):
        return "/v1/chat/completions", {"model": "openai/gpt-bench", "stream": kind == "stream",
                                        "messages": [{"role": "user", "content": "hello"}]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/v1/bots", json.dumps({"name": "bench", "model": "openai/gpt-bench"}), auth)
    bot = json.loads(conn.getresponse().read())
    conn.request("POST", "/api/v1/conversations", json.dumps({"bot_id": bot["id"]}), auth)
    conv = json.loads(conn.getresponse().read())
    conn.close()
    return f"/api/v1/conversations/{conv['id']}/messages", {"content": "hello"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", help="directories holding a chatport checkout")
    parser.add_argument("--target", choices=("v1", "stream", "bot"), default="v1",
                        help="v1: POST /v1/chat/completions; stream: the same streamed (50 tokens sent "
                             "at once); bot: a persisted bot turn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--passthrough", action="store_true",
                        help="also measure the pass-through (bench/passthrough.py) on the same call")
    args = parser.parse_args()
    if args.passthrough and args.target == "bot":
        parser.error("the pass-through has no bot turns: use --target v1 or stream")

    procs = rg.Procs()
    up_fast, up_slow = rg.free_port(), rg.free_port()
    servers = []
    try:
        rg.start_upstreams(procs, up_fast, up_slow, 0.02)
        for checkout in args.checkouts:
            port = rg.free_port()
            master = rg.start_chatport(procs, tempfile.mkdtemp(prefix="chatport-ab-"), port, up_fast, up_slow,
                                       root=os.path.abspath(checkout))
            rg.wait_up(port, "/healthz")
            path, body = _target(port, args.target)
            headers = {"Authorization": f"Bearer {rg.KEY}"}
            rg.wrk(port, path, json.dumps(body), 4, 1, headers)  # warm up
            servers.append((checkout, port, path, json.dumps(body), headers, _worker_pid(master)))
        if args.passthrough:
            port = rg.free_port()
            master = rg.start_passthrough(procs, port, up_fast)
            path, body = _target(port, args.target)
            body = json.dumps({**body, "model": "gpt-bench"})
            rg.wrk(port, path, body, 4, 1, {})
            servers.append(("pass-through", port, path, body, {}, _worker_pid(master)))
        runs = {server[0]: [] for server in servers}
        for _ in range(args.rounds):
            for checkout, port, path, body, headers, pid in servers:
                before = _cpu_seconds(pid)
                result = rg.wrk(port, path, body, args.connections, args.duration, headers)
                used = _cpu_seconds(pid) - before
                runs[checkout].append((used * 1000 / (result["rps"] * args.duration), result["rps"]))
        for checkout, results in runs.items():
            print(f"{checkout}: CPU {statistics.median(r[0] for r in results):.3f} ms/request "
                  f"(runs {', '.join(f'{r[0]:.3f}' for r in results)}), "
                  f"{statistics.median(r[1] for r in results):.0f} req/s")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()

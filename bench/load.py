"""Load benchmark: one gevent worker holds 1,000 concurrent streams, then sustains a fixed
non-streaming request rate for minutes with zero errors and flat memory.

    .venv/bin/python -m bench.load [--minutes 5] [--fraction 0.8 | --rate 400] [--streams 1000]

Starts, on 127.0.0.1 and free ports: two fake OpenAI upstreams (bench/fake_upstream.py; one
fast, one that sends a token every ``--stream-delay`` seconds) and ``chatport serve`` with one
gevent worker (SQLite; models ``openai/gpt-bench`` and ``slow/gpt-bench`` on the openai plugin).
Then:

1. ``--streams`` concurrent 50-token streams through ``/v1/chat/completions``: all must finish
   with ``[DONE]``; the worker's RSS after them is recorded.
2. The closed-loop capacity at concurrency 16 (10 s), then ``--minutes`` of open-loop load at
   ``--rate`` requests/s, by default ``--fraction`` (0.8) of that capacity (a request is started every
   1/rate s whatever the answers do, so a slow server shows up as latency and errors, not as
   a lower rate): non-streaming ``/v1/chat/completions`` calls, each with API-key auth, rate
   limit check and a usage row. The worker's RSS is sampled every 10 s. Any non-200 answer,
   connection error or timeout is an error.
3. The streams again, to show memory returns to where it was.

Prints the figures as a table; every process it started is stopped by its pid.
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time

import gevent
from gevent.pool import Pool

from .run_gateway import KEY, Procs, free_port, one_stream, start_chatport, start_upstreams, wait_up, worker_rss_mb


def hold_streams(port, body, headers, count):
    started = time.perf_counter()
    jobs = [gevent.spawn(one_stream, port, "/v1/chat/completions", body, headers) for _ in range(count)]
    gevent.joinall(jobs, timeout=600)
    ok = [j.value for j in jobs if j.value]
    return {"ok": len(ok), "errors": count - len(ok), "seconds": time.perf_counter() - started,
            "ttft_p50_ms": statistics.median(r[0] for r in ok) * 1000 if ok else None}


class Caller:
    """One keep-alive connection per greenlet slot, reopened after an error."""

    def __init__(self, port, body, headers, timeout):
        self.port, self.body, self.timeout = port, body, timeout
        self.headers = {"Content-Type": "application/json", **headers}
        self.idle = []

    def __call__(self):
        started = time.perf_counter()
        reused = bool(self.idle)
        conn = self.idle.pop() if reused else self._new()
        try:
            result = self._send(conn)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if not reused:
                return False, type(exc).__name__, time.perf_counter() - started
            # the server closed an idle keep-alive connection (gunicorn's --keep-alive): as
            # every HTTP client does, send again once on a new connection
            conn = self._new()
            try:
                result = self._send(conn)
            except (OSError, http.client.HTTPException) as exc2:
                conn.close()
                return False, type(exc2).__name__, time.perf_counter() - started
        self.idle.append(conn)
        return (*result, time.perf_counter() - started)

    def _new(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def _send(self, conn):
        conn.request("POST", "/v1/chat/completions", self.body, self.headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status == 200 and b'"chat.completion"' in data, resp.status


def capacity(port, body, headers, seconds=10, concurrency=16):
    """Closed-loop requests/s at ``concurrency`` (what the gateway benchmark calls c=16)."""
    call = Caller(port, body, headers, 30)
    done, stop = [], time.perf_counter() + seconds

    def loop():
        while time.perf_counter() < stop:
            done.append(call()[0])

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(loop) for _ in range(concurrency)])
    return sum(done) / (time.perf_counter() - started), done.count(False)


def sustain(port, body, headers, rate, seconds, master_pid, max_in_flight=2000, timeout=30):
    call = Caller(port, body, headers, timeout)
    pool = Pool(max_in_flight)
    results, samples = [], []
    interval = 1.0 / rate
    started = time.perf_counter()
    next_sample = started
    n = 0
    while True:
        now = time.perf_counter()
        if now >= next_sample:
            samples.append((now - started, worker_rss_mb(master_pid)))
            next_sample += 10
        if now - started >= seconds:
            break
        due = started + n * interval
        if due > now:
            gevent.sleep(due - now)
        if pool.full():  # max_in_flight outstanding (the server fell ~5 s behind): an error, not queued
            results.append((False, "overload", 0.0))
        else:
            pool.spawn(lambda: results.append(call()))
        n += 1
    pool.join(timeout=timeout + 5)
    elapsed = time.perf_counter() - started
    samples.append((elapsed, worker_rss_mb(master_pid)))
    latencies = sorted(r[2] for r in results if r[0])
    errors = [r[1] for r in results if not r[0]]
    return {
        "sent": n, "ok": len(latencies), "errors": len(errors),
        "error_kinds": sorted({str(e) for e in errors})[:5],
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
        "rss": samples,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--rate", type=float, default=None,
                        help="non-streaming requests per second (default: --fraction of the c=16 "
                             "capacity measured in this run)")
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-delay", type=float, default=0.02, help="upstream seconds between tokens")
    args = parser.parse_args()

    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="chatport-load-")
    up_fast, up_slow, cp_port = free_port(), free_port(), free_port()
    try:
        start_upstreams(procs, up_fast, up_slow, args.stream_delay)
        cp = start_chatport(procs, tmp, cp_port, up_fast, up_slow)
        wait_up(cp_port, "/healthz")
        auth = {"Authorization": f"Bearer {KEY}"}
        msg = [{"role": "user", "content": "hello"}]
        sbody = json.dumps({"model": "slow/gpt-bench", "stream": True, "messages": msg})
        body = json.dumps({"model": "openai/gpt-bench", "messages": msg})

        rss_idle = worker_rss_mb(cp.pid)
        first = hold_streams(cp_port, sbody, auth, args.streams)
        rss_streams = worker_rss_mb(cp.pid)
        print("streams:", first, f"RSS {rss_streams:.0f} MB", flush=True)
        measured, cap_errors = capacity(cp_port, body, auth)
        rate = args.rate or round(measured * args.fraction)
        print(f"c=16 capacity: {measured:.0f} req/s ({cap_errors} errors); sustaining {rate} req/s", flush=True)
        load = sustain(cp_port, body, auth, rate, args.minutes * 60, cp.pid)
        print("sustained:", {k: v for k, v in load.items() if k != "rss"}, flush=True)
        second = hold_streams(cp_port, sbody, auth, args.streams)
        rss_end = worker_rss_mb(cp.pid)
        print("streams again:", second, f"RSS {rss_end:.0f} MB", flush=True)

        rss = load["rss"]
        print(f"\n## Load, one gevent worker ({time.strftime('%Y-%m-%d')})\n")
        print("| phase | requests | ok | errors | rate (req/s) | p50 / p99 ms | worker RSS (MB) |")
        print("|---|---|---|---|---|---|---|")
        print(f"| idle | – | – | – | – | – | {rss_idle:.0f} |")
        print(f"| {args.streams} concurrent streams | {args.streams} | {first['ok']} | {first['errors']} | – | "
              f"TTFT p50 {first['ttft_p50_ms']:.0f} | {rss_streams:.0f} |")
        print(f"| c=16 closed loop, 10 s | – | – | {cap_errors} | {measured:.0f} | – | – |")
        print(f"| {args.minutes:g} min at {rate:g} req/s | {load['sent']} | {load['ok']} | {load['errors']} | "
              f"{load['achieved_rps']:.0f} | {load['p50_ms']:.1f} / {load['p99_ms']:.1f} | "
              f"{rss[0][1]:.0f} → {rss[-1][1]:.0f} (max {max(r for _, r in rss):.0f}) |")
        print(f"| {args.streams} streams again | {args.streams} | {second['ok']} | {second['errors']} | – | "
              f"TTFT p50 {second['ttft_p50_ms']:.0f} | {rss_end:.0f} |")
        print("\nRSS samples (s, MB):", ", ".join(f"{t:.0f}:{r:.0f}" for t, r in rss))
        failed = first["errors"] + second["errors"] + load["errors"] + cap_errors
        return 1 if failed else 0
    finally:
        procs.stop()


if __name__ == "__main__":
    sys.exit(main())

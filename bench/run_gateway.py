"""Gateway benchmark: chatport vs the pass-through floor vs the upstream, in one run.

    apt-get install -y wrk          # the load generator (Debian package)
    .venv/bin/python -m bench.run_gateway [--duration 5] [--streams 1000]

Starts, on 127.0.0.1 and free ports: the fast fake upstream (bench/fake_upstream.py),
the pass-through (bench/passthrough.py under gunicorn -k gevent, 1 worker) and
`chatport serve` (1 gevent worker, model `openai/gpt-bench` on the openai plugin
pointed at the fake). Measures req/s and p50/p99 at c=1/16/64 with wrk (1 thread; the median of --rounds
interleaved runs per point),
TTFT and completion of 50-token streams, concurrent streams held by one worker
and its RSS. Prints a table and ratios; every process is stopped by its pid.
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import gevent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
KEY = "cp_bench_admin_key_000000000000000000000000000"


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port, path="/", timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not come up")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, env=None, log=None, cwd=ROOT):
        proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})},
                                stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def worker_rss_mb(master_pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True, text=True).stdout
    total = 0
    for pid in out.split():
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def start_upstreams(procs, up_fast, up_slow, stream_delay):
    """Two fake OpenAI upstreams answering 50 tokens: one at once, one a token per ``stream_delay`` s."""
    procs.start([PY, "-m", "bench.fake_upstream", "--port", str(up_fast), "--tokens", "50"])
    procs.start([PY, "-m", "bench.fake_upstream", "--port", str(up_slow), "--tokens", "50",
                 "--delay", str(stream_delay)])
    wait_up(up_fast, "/v1/models")
    wait_up(up_slow, "/v1/models")


def start_passthrough(procs, port, upstream):
    """The pass-through (bench/passthrough.py, 1 gevent worker) on ``port``, forwarding to the
    upstream on port ``upstream``; returns the gunicorn master process once it answers."""
    master = procs.start([PY, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections", "4096",
                          "--no-control-socket", "--backlog", "4096", "-b", f"127.0.0.1:{port}",
                          "bench.passthrough:app"], env={"BENCH_UPSTREAM": f"http://127.0.0.1:{upstream}"})
    wait_up(port, "/")
    return master


def start_chatport(procs, tmp, port, up_fast, up_slow, root=ROOT):
    """``chatport serve`` (1 gevent worker, SQLite in ``tmp``) with ``openai/gpt-bench`` on the fast
    fake upstream and ``slow/gpt-bench`` on the slow one, run from the checkout in ``root``;
    returns the gunicorn master process."""
    env = {"CHATPORT_INSTANCE_PATH": tmp, "CHATPORT_ADMIN_KEY": KEY,
           "CHATPORT_OPENAI_BASE_URL": f"http://127.0.0.1:{up_fast}/v1", "CHATPORT_OPENAI_API_KEY": "x",
           "CHATPORT_OPENAI_MODELS": '["gpt-bench"]', "CHATPORT_PROVIDER_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
           "CHATPORT_OPENAI_COMPATIBLE": json.dumps({"slow": {"base_url": f"http://127.0.0.1:{up_slow}/v1",
                                                              "api_key": "x", "models": ["gpt-bench"]}})}
    subprocess.run([PY, "-m", "app.cli", "init"], cwd=root, env={**os.environ, **env}, check=True,
                   capture_output=True)
    return procs.start([PY, "-m", "app.cli", "serve", "--port", str(port), "--", "--no-control-socket",
                        "--backlog", "4096"], env=env, log=open(os.path.join(tmp, "server.log"), "ab"), cwd=root)


def to_ms(value):
    match = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise RuntimeError(f"cannot read wrk latency {value!r}")
    num, unit = match.groups()
    return float(num) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def wrk(port, path, body, connections, duration, headers):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write('wrk.method = "POST"\n')
    script.write(f"wrk.body = {json.dumps(body)}\n")
    for k, v in {"Content-Type": "application/json", **headers}.items():
        script.write(f'wrk.headers["{k}"] = "{v}"\n')
    script.close()
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # the distribution lines only: "+/- Stdev" columns can end in "50%" or "99%" too
    p50m, p99m = re.search(r"^\s+50%[ \t]+(\S+)", out, re.M), re.search(r"^\s+99%[ \t]+(\S+)", out, re.M)
    if not p50m or not rps:
        raise RuntimeError("wrk got no answers:\n" + out)
    try:
        p50, p99 = to_ms(p50m.group(1)), to_ms(p99m.group(1))
    except RuntimeError:
        raise RuntimeError("unreadable wrk output:\n" + out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def one_stream(port, path, body, headers, marker=b"w0"):
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        return None
    ttft, data = None, b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        data += chunk
        if ttft is None and marker in data:
            ttft = time.perf_counter() - start
    conn.close()
    if b"[DONE]" not in data:
        return None
    return ttft, time.perf_counter() - start


def streams(port, path, body, headers, count):
    start = time.perf_counter()
    jobs = [gevent.spawn(one_stream, port, path, body, headers) for _ in range(count)]
    gevent.joinall(jobs, timeout=300)
    results = [j.value for j in jobs]
    ok = [r for r in results if r]
    return {"ok": len(ok), "errors": count - len(ok),
            "ttft_p50": statistics.median(r[0] for r in ok) * 1000 if ok else None,
            "all_done": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per point (median kept)")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent 50-token streams")
    parser.add_argument("--stream-delay", type=float, default=0.02, help="upstream seconds between tokens")
    args = parser.parse_args()

    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="chatport-bench-")
    up_fast, up_slow, pt_port, cp_port = free_port(), free_port(), free_port(), free_port()
    try:
        start_upstreams(procs, up_fast, up_slow, args.stream_delay)
        pt = start_passthrough(procs, pt_port, up_fast)
        cp = start_chatport(procs, tmp, cp_port, up_fast, up_slow)
        wait_up(cp_port, "/healthz")
        auth = {"Authorization": f"Bearer {KEY}"}
        conn = http.client.HTTPConnection("127.0.0.1", cp_port)
        conn.request("POST", "/api/v1/bots", json.dumps({"name": "bench", "model": "openai/gpt-bench"}),
                     {**auth, "Content-Type": "application/json"})
        bot = json.loads(conn.getresponse().read())
        conn.request("POST", "/api/v1/conversations", json.dumps({"bot_id": bot["id"]}),
                     {**auth, "Content-Type": "application/json"})
        conv = json.loads(conn.getresponse().read())
        conn.close()

        msg = [{"role": "user", "content": "hello"}]
        targets = {
            "upstream direct": (up_fast, "/v1/chat/completions", {"model": "gpt-bench", "messages": msg}, {}),
            "pass-through": (pt_port, "/v1/chat/completions", {"model": "gpt-bench", "messages": msg}, {}),
            "chatport /v1 (openai plugin)": (cp_port, "/v1/chat/completions",
                                             {"model": "openai/gpt-bench", "messages": msg}, auth),
            "chatport bot turn (persisted)": (cp_port, f"/api/v1/conversations/{conv['id']}/messages",
                                              {"content": "hello"}, auth),
        }
        for name, (port, path, body, headers) in targets.items():
            warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            warm.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
            assert warm.getresponse().read() and warm.close() is None
            wrk(port, path, json.dumps(body), 4, 1, headers)  # warm up
        # Rounds interleave the targets (a noisy machine slows all of them alike); each point
        # is the run with the median req/s of its rounds.
        runs = {name: {c: [] for c in (1, 16, 64)} for name in targets}
        for c in (1, 16, 64):
            for _ in range(args.rounds):
                for name, (port, path, body, headers) in targets.items():
                    runs[name][c].append(wrk(port, path, json.dumps(body), c, args.duration, headers))
        rows = {}
        for name in targets:
            rows[name] = {}
            for c, results in runs[name].items():
                median = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
                rows[name][c] = {**median, "non2xx": sum(r["non2xx"] for r in results)}
            print(name, {c: (round(r["rps"]), r["p50"], r["p99"], r["non2xx"]) for c, r in rows[name].items()},
                  flush=True)

        sbody = json.dumps({"model": "gpt-bench", "stream": True, "messages": msg})
        stream_targets = {
            "upstream direct": (up_slow, "/v1/chat/completions", sbody, {}),
            "chatport /v1 (openai plugin)": (cp_port, "/v1/chat/completions", json.dumps(
                {"model": "slow/gpt-bench", "stream": True, "messages": msg}), auth),
        }
        # the pass-through forwards to the fast upstream; restart it against the slow one
        pt.send_signal(signal.SIGTERM)
        pt.wait(10)
        pt_port = free_port()
        pt = start_passthrough(procs, pt_port, up_slow)
        stream_targets["pass-through"] = (pt_port, "/v1/chat/completions", sbody, {})
        srows = {}
        for name in ("upstream direct", "pass-through", "chatport /v1 (openai plugin)"):
            port, path, body, headers = stream_targets[name]
            single = [one_stream(port, path, body, headers) for _ in range(5)]
            ttft1 = statistics.median(s[0] for s in single if s) * 1000
            many = streams(port, path, body, headers, args.streams)
            rss = worker_rss_mb(pt.pid if name == "pass-through" else cp.pid) if name != "upstream direct" else None
            srows[name] = {"ttft_single_ms": ttft1, **many, "rss_mb": rss}
            print(name, srows[name], flush=True)

        print_report(rows, srows, args)
    finally:
        procs.stop()


def print_report(rows, srows, args):
    up, pt = rows["upstream direct"], rows["pass-through"]
    print("\n## Non-streaming, wrk -t1, median of %d interleaved %d s runs (req/s, p50 ms, p99 ms)\n"
          % (args.rounds, args.duration))
    print("| target | c=1 | c=16 | c=64 | errors |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        cells = [f"{r[c]['rps']:.0f} ({r[c]['p50']:.2f} / {r[c]['p99']:.2f})" for c in (1, 16, 64)]
        errs = sum(r[c]["non2xx"] for c in (1, 16, 64))
        print(f"| {name} | {' | '.join(cells)} | {errs} |")
    print("\nAdded latency at c=1 (p50 minus upstream direct) and throughput ratios vs pass-through:\n")
    base_added = pt[1]["p50"] - up[1]["p50"]
    for name in ("chatport /v1 (openai plugin)", "chatport bot turn (persisted)"):
        r = rows[name]
        added = r[1]["p50"] - up[1]["p50"]
        print(f"- {name}: added {added:.2f} ms vs pass-through's {base_added:.2f} ms "
              f"({added / base_added:.2f}x); c=16 throughput {r[16]['rps'] / pt[16]['rps']:.2f}x pass-through; "
              f"c=64 {r[64]['rps'] / pt[64]['rps']:.2f}x")
    print(f"\n## {args.streams} concurrent 50-token streams ({args.stream_delay * 1000:.0f} ms/token upstream)\n")
    print("| target | TTFT single (ms) | TTFT p50 under load (ms) | all done (s) | ok | errors | worker RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, s in srows.items():
        rss = f"{s['rss_mb']:.0f}" if s["rss_mb"] else "–"
        print(f"| {name} | {s['ttft_single_ms']:.1f} | {s['ttft_p50']:.1f} | {s['all_done']:.2f} | "
              f"{s['ok']} | {s['errors']} | {rss} |")
    cp, ptr = srows["chatport /v1 (openai plugin)"], srows["pass-through"]
    print(f"\nTTFT p50 under load: chatport {cp['ttft_p50'] / ptr['ttft_p50']:.2f}x the pass-through's")


if __name__ == "__main__":
    main()

"""CPU per provider call of the HTTP clients under the openai plugin, measured in one process.

    .venv/bin/python -m bench.http_clients [--baseline /path/to/checkout] [--rounds 7] [--calls 400]

Starts the fast fake OpenAI upstream (bench/fake_upstream.py, its own process, 127.0.0.1) and
calls the openai plugin's model (the real SDK) in this process under gevent, a JSON call and a
50-token stream, with each HTTP client in interleaved rounds: ``PROVIDER_HTTP_CLIENT`` "fast"
and "httpx", and with ``--baseline`` the transport and client of another checkout
(``LeanClient`` + ``Http11Transport`` from its ``app/providers/http_transport.py``). Prints the
median CPU microseconds per call of each (this process only: the upstream is not counted).
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001

import argparse
import importlib.util
import os
import statistics
import time

import httpx
import openai

from app.providers import ChatRequest, LazyClient, http_client
from app.providers.llm import collect
from bench import run_gateway as rg
from plugins import openai_provider


def _model(base_url, make_http):
    timeout = httpx.Timeout(60.0, connect=5.0)
    client = openai_provider._Client(base_url=base_url, api_key="x", timeout=timeout, max_retries=1,
                                     default_headers={"X-Stainless-Async": openai.Omit()},
                                     http_client=make_http(timeout))
    return openai_provider.OpenAIChatModel("openai", "gpt-bench", LazyClient(lambda: client))


def _baseline(checkout):
    path = os.path.join(checkout, "app", "providers", "http_transport.py")
    spec = importlib.util.spec_from_file_location("baseline_http_transport", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda timeout: module.LeanClient(transport=module.Http11Transport(), timeout=timeout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="a checkout whose http_transport has LeanClient and Http11Transport")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=400, help="calls of each kind per round")
    args = parser.parse_args()

    procs = rg.Procs()
    port = rg.free_port()
    try:
        procs.start([rg.PY, "-m", "bench.fake_upstream", "--port", str(port), "--tokens", "50"])
        rg.wait_up(port, "/v1/models")
        base_url = f"http://127.0.0.1:{port}/v1"
        clients = {"fast": lambda t: http_client({"PROVIDER_HTTP_CLIENT": "fast"}, t),
                   "httpx": lambda t: http_client({"PROVIDER_HTTP_CLIENT": "httpx"}, t)}
        if args.baseline:
            clients = {"baseline": _baseline(args.baseline), **clients}
        models = {name: _model(base_url, make) for name, make in clients.items()}
        messages = [{"role": "user", "content": "hello"}]
        kinds = {"json": ChatRequest(messages, stream=False), "stream": ChatRequest(messages, stream=True)}
        runs = {(name, kind): [] for name in models for kind in kinds}
        for model in models.values():  # warm up: connections open, code paths loaded
            for request in kinds.values():
                for _ in range(20):
                    collect(model.stream(request))
        for _ in range(args.rounds):
            for kind, request in kinds.items():
                for name, model in models.items():
                    started = time.process_time()
                    for _ in range(args.calls):
                        collect(model.stream(request))
                    runs[(name, kind)].append((time.process_time() - started) * 1e6 / args.calls)
        for kind in kinds:
            for name in models:
                results = runs[(name, kind)]
                print(f"{kind:6} {name:8}: CPU {statistics.median(results):7.1f} us/call "
                      f"(runs {', '.join(f'{r:.0f}' for r in results)})")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()

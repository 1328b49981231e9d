"""``python -m tests.fakes openai|anthropic [--port N] [--tokens N] [--delay S]``.

Prints the base URL on the first line, then serves on 127.0.0.1 until
SIGINT/SIGTERM. Every reply is ``t1 t2 ... tN`` (``--tokens``) or the
default text, with ``--delay`` seconds between stream deltas.
"""
import argparse

from . import FakeAnthropic, FakeOpenAI


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__.splitlines()[0])
    parser.add_argument("api", choices=["openai", "anthropic"])
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--tokens", type=int, default=0, help="reply of N tokens t1 t2 ...")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between deltas")
    args = parser.parse_args(argv)
    chunks = [("t%d" % i if i == 1 else " t%d" % i) for i in range(1, args.tokens + 1)] or None
    cls = FakeOpenAI if args.api == "openai" else FakeAnthropic
    cls(chunks=chunks, chunk_delay=args.delay).serve_forever_cli(args.port)


if __name__ == "__main__":
    main()

"""The fake upstreams' standalone mode (benchmarks run them as a process)."""
import os
import signal
import subprocess
import sys

import openai
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_standalone_fake_serves_until_sigterm(api):
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes", api, "--tokens", "3"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), proc.stderr.read()
        if api == "openai":
            client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=5)
            stream = client.chat.completions.create(model="m", messages=[], stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            import anthropic

            client = anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0, timeout=5)
            reply = client.messages.create(model="c", max_tokens=10, messages=[])
            text = reply.content[0].text
        assert text == "t1 t2 t3"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0

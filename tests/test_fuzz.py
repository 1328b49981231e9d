"""Fuzzing from the OpenAPI document against a live ``chatport serve`` (see tests/fuzz.py).

A short, seeded pass: schemathesis' ``examples`` and ``fuzzing`` phases with
``FUZZ_MAX_EXAMPLES`` examples per operation (``FUZZ_PHASES`` to change the phases).
``make fuzz`` runs a longer one, with the ``coverage`` phase's boundary cases too."""
import os
import re

import pytest
import requests

from .fuzz import _init_key, run_schemathesis, seed
from .servers import chatport_server

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "2"))
PHASES = os.environ.get("FUZZ_PHASES", "examples,fuzzing")
SEED = 20261125


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """One server for the module, with the fixtures the fuzzer's path parameters name."""
    instance = tmp_path_factory.mktemp("fuzz")
    with chatport_server(instance) as base:
        key = _init_key(instance)
        yield instance, base, key, seed(base, key)


def test_fuzz_config_pins_real_resources(seeded):
    """The fixtures the fuzzer is pointed at exist, so it reaches the handlers' logic."""
    _, base, key, (main, mutate, delete, secret) = seeded
    auth = {"Authorization": f"Bearer {key}"}
    for params in (main, mutate, delete):
        assert requests.get(f"{base}/api/v1/bots/{params['bot_id']}", headers=auth).status_code == 200
        assert requests.get(f"{base}/api/v1/conversations/{params['conversation_id']}",
                            headers=auth).status_code == 200
        assert requests.get(f"{base}/api/v1/knowledge/sources/{params['source_id']}/rows/{params['row_id']}",
                            headers=auth).status_code == 200
    assert len({p["bot_id"] for p in (main, mutate, delete)}) == 3
    channel = requests.post(f"{base}/api/public/channels/{main['channelId']}/1.0/conversation",
                            headers={"X-API-Secret-Key": secret})
    assert channel.status_code == 200, channel.text


def test_every_operation_fuzzed_without_failures(seeded):
    instance, base, key, fixtures = seeded
    code, output, report = run_schemathesis(base, key, fixtures, max_examples=MAX_EXAMPLES, seed_value=SEED,
                                            workdir=str(instance), phases=PHASES)
    log = (instance / "server.log").read_text(errors="replace")
    tracebacks = re.findall(r"Traceback \(most recent call last\):.*?\n\S[^\n]*", log, re.S)
    assert report is not None, output[-5000:]
    assert report["complete"] and report["stop_reason"] == "completed", output[-5000:]
    # every documented operation of every dialect was tested
    ops = report["operations"]
    assert ops["selected"] == ops["tested"] and ops["tested"] >= 80, ops
    assert ops["errored"] == 0 and not report["errors"], output[-5000:]
    assert report["test_cases"]["generated"] > 2 * ops["tested"], report["test_cases"]
    # no 5xx, documented statuses, bodies and content types, no 2xx without a valid key
    assert report["failures"] == [] and code == 0, output[-8000:] + "\n".join(tracebacks[:3])
    assert not tracebacks, tracebacks[:3]
    assert report["auth"]["reauth_broke"] is False

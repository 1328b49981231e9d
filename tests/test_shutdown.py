"""What SIGTERM does to a running `chatport serve` (gunicorn master, gevent worker): it stops
accepting connections, lets the streams in flight finish up to the stream time limit, saves
what each one said (a cut answer as ``incomplete``), and exits by itself."""
import json
import os
import signal
import socket
import sqlite3
import threading
import time

import pytest
import requests

from .servers import chatport_server, sse_events

pytestmark = pytest.mark.server

STREAM_TIMEOUT = 4


def _stream(base, headers, conversation, content, out):
    with requests.post(f"{base}/api/v1/conversations/{conversation}/messages", headers=headers,
                       json={"content": content, "stream": True}, stream=True, timeout=30) as resp:
        for event, data in sse_events(resp):
            out.append((event, data, time.monotonic()))


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def _state(pid):
    """A process's state letter ("Z" once it exited and waits for its parent), "" when gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][:1]
    except OSError:
        return ""


def test_sigterm_stops_accepting_lets_streams_finish_and_saves_what_was_cut(tmp_path):
    with chatport_server(tmp_path, serve_args=("--stream-timeout", str(STREAM_TIMEOUT))) as base:
        with open(tmp_path / "init.json") as fh:
            headers = {"Authorization": f"Bearer {json.load(fh)['admin_key']}"}
        bot = requests.post(f"{base}/api/v1/bots", headers=headers, json={"name": "slow"}).json()["id"]
        convs = [requests.post(f"{base}/api/v1/conversations", headers=headers, json={"bot_id": bot}).json()["id"]
                 for _ in range(2)]
        short, long_ = [], []
        threads = [threading.Thread(target=_stream, args=(base, headers, convs[0], "[echo tokens=10 delay=0.1]", short)),
                   threading.Thread(target=_stream, args=(base, headers, convs[1], "[echo tokens=200 delay=0.1]", long_))]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not (any(e == "delta" for e, _, _ in short) and any(e == "delta" for e, _, _ in long_)):
            assert time.monotonic() < deadline, "the streams did not start"
            time.sleep(0.02)
        with open(tmp_path / "server.pid") as fh:
            master = int(fh.read())
        os.kill(master, signal.SIGTERM)
        signalled = time.monotonic()
        port = int(base.rsplit(":", 1)[1])
        while not _refused(port):  # the listening socket closes at once
            assert time.monotonic() - signalled < 3, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=STREAM_TIMEOUT + 10)
        assert not any(thread.is_alive() for thread in threads)
        done_short = [d for e, d, _ in short if e == "done"]
        assert done_short and done_short[0]["status"] == "complete"
        assert "".join(d["text"] for e, d, _ in short if e == "delta").split() == [f"t{i}" for i in range(1, 11)]
        done_long = [(d, at) for e, d, at in long_ if e == "done"]
        assert done_long, long_[-3:]
        assert done_long[0][0]["status"] == "incomplete" and done_long[0][0]["finish_reason"] == "stopped"
        assert done_long[0][1] - started < STREAM_TIMEOUT + 2  # cut at the time limit, not killed
        long_text = "".join(d["text"] for e, d, _ in long_ if e == "delta")
        while _state(master) not in ("", "Z") and time.monotonic() - signalled < STREAM_TIMEOUT + 10:
            time.sleep(0.1)
        assert _state(master) in ("", "Z"), "the server did not exit by itself after SIGTERM"
        assert time.monotonic() - signalled < STREAM_TIMEOUT + 3
    db = sqlite3.connect(tmp_path / "chatport.db")
    rows = dict(db.execute("SELECT conversation_id, status || ':' || content FROM message WHERE role = 'assistant' "
                           "AND conversation_id IN (?, ?)", convs).fetchall())
    db.close()
    assert rows[convs[0]] == "complete:" + " ".join(f"t{i}" for i in range(1, 11))
    assert rows[convs[1]] == "incomplete:" + long_text and 5 <= len(long_text.split()) < 200


def test_the_systemd_unit_runs_chatport_as_its_own_user_and_outwaits_the_streams():
    import configparser
    import shlex

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(os.path.dirname(__file__), "..", "deploy", "chatport.service"))
    service = unit["Service"]
    assert service["User"] not in ("", "root") and service["Restart"] == "on-failure"
    assert "CHATPORT_INSTANCE_PATH=/var/lib/chatport" in service["Environment"]
    assert service["StateDirectory"] == "chatport" and service["KillSignal"] == "SIGTERM"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/chatport") and command[1] == "serve"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    stream_timeout = int(service["Environment"].split("CHATPORT_STREAM_TIMEOUT=")[1].split()[0])
    assert int(service["TimeoutStopSec"]) > stream_timeout  # chatport cuts and saves streams first
    assert unit["Install"]["WantedBy"] == "multi-user.target"

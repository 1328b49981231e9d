"""The README quick start, as a newcomer types it: init, serve, create and list a bot."""
import json
import os
import subprocess
import sys

import requests

from .servers import ROOT, chatport_server


def test_quickstart(tmp_path):
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env["CHATPORT_INSTANCE_PATH"] = str(instance)
    out = subprocess.run([sys.executable, "-m", "app.cli", "init"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    key = [line.strip() for line in out.splitlines() if line.strip().startswith("cp_")][0]
    with chatport_server(instance) as base:  # runs init again: reuses everything
        headers = {"Authorization": f"Bearer {key}"}
        created = requests.post(base + "/api/v1/bots", headers=headers,
                                json={"name": "Support", "instructions": "Be brief."}, timeout=10)
        assert created.status_code == 201
        listed = requests.get(base + "/api/v1/bots", headers=headers, timeout=10).json()
        assert created.json()["id"] in [b["id"] for b in listed["data"]]
        assert listed["pagination"]["total"] == 2  # the demo bot and ours
        assert requests.get(base + "/api/v1/bots", timeout=10).status_code == 401
    again = subprocess.run([sys.executable, "-m", "app.cli", "init", "--json"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(again)["admin_key"] is None

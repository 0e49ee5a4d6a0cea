"""One-machine server mode: `custody server` serves prefect.yaml's deployments on a real Prefect server; a
deletion filed with `custody delete` emits `custody.deletion.requested`, and unlearning starts by itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.launch import run_train
from flows.runtime import wait_for_api
from tasks.deletion import requests
from tests.helpers import reviews_store, stop_process_group, tiny_train_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_deployment(url: str, name: str, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/deployments/name/{name}", timeout=5).status_code == 200:
            return
        time.sleep(0.5)
    raise TimeoutError(f"deployment {name} never appeared")


@pytest.mark.timeout(900)
def test_deletion_event_triggers_unlearning(prefect_api, store, custody_env, tmp_path) -> None:
    ref, _ = reviews_store(store)
    model = run_train(tiny_train_config(ref))["ref"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "CUSTODY_TEMPORARY_PREFECT_URL")}
    env.update(CUSTODY_HOME=str(custody_env), PREFECT_HOME=str(tmp_path / "prefect-server"))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "server", "--port", str(port), "--no-schedules"],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_api(url, server)
        _wait_for_deployment(url, "unlearn/custody-unlearn")
        filed = subprocess.run([sys.executable, "-m", "flows.cli", "delete", "--owner", "o07", "--json"],
                               env={**env, "PREFECT_API_URL": url}, cwd=ROOT, capture_output=True, text=True,
                               check=True)
        answer = json.loads(filed.stdout)
        assert answer["status"] == "received" and answer["event"] == "custody.deletion.requested"
        deadline, resend = time.monotonic() + 600, time.monotonic() + 60
        status = "received"
        while status != "certified" and time.monotonic() < deadline and server.poll() is None:
            time.sleep(1)
            status = requests.load(store, answer["request_id"])["status"]
            if status == "received" and time.monotonic() > resend:
                # an event that reaches the server before its triggers service has loaded the new deployment's
                # automation is not acted on; the request is durable and unlearning idempotent, so send it again
                subprocess.run([sys.executable, "-c", "import sys; from flows.deployments import "
                                "emit_deletion_requested as e; e(sys.argv[1], 'owner')", answer["request_id"]],
                               env={**env, "PREFECT_API_URL": url}, cwd=ROOT, check=True, capture_output=True)
                resend = time.monotonic() + 60
        assert status == "certified", (tmp_path / "server.log").read_text()[-3000:]
        cert = store.read_json(f"reports/deletions/{answer['request_id']}/certificate.json")
        assert [m["source"] for m in cert["models"]] == [model]
        import httpx

        runs = httpx.post(f"{url}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}},
                          timeout=10).json()
        assert any(r["parameters"].get("request_id") == answer["request_id"] for r in runs)
    finally:
        stop_process_group(server, signal.SIGINT)  # SIGINT: serve pauses its deployments and stops its server
        log.close()

"""The temporary Prefect server a command starts when no server is configured (flows/runtime.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flows import runtime

ROOT = Path(__file__).parents[1]


def test_a_command_starts_the_temporary_server_early_and_then_waits_for_that_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with monkeypatch.context() as patch:
        for name in ("PREFECT_API_URL", "CUSTODY_TEMPORARY_PREFECT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # not the session server's database
        patch.setattr(runtime, "_server", None)
        try:
            runtime.start_prefect_api()
            started = runtime._server
            assert started is not None and started.proc.poll() is None
            assert "PREFECT_API_URL" not in os.environ  # booting: nothing talks to it before a command waits
            url = runtime.ensure_prefect_api()
            assert runtime._server is started and url == started.api_url == os.environ["CUSTODY_TEMPORARY_PREFECT_URL"]
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            runtime.start_prefect_api()  # a server in use: no second one
            assert runtime._server is started
        finally:
            runtime.stop_prefect_api()
    assert started.proc.poll() is not None
    runtime.configure_environment()  # Prefect in this process back on the session's server


def test_a_command_without_a_server_runs_its_flows_on_the_one_it_started(custody_env: Path) -> None:
    """Prefect reads its settings once: unless told again, its client would not see the started server's URL and
    would start an ephemeral server of its own (two servers, ~5 s more a command)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "deletions", "--apply", "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["ok"]
    log = (custody_env / "logs" / "custody.log").read_text()  # Prefect's INFO lines (the terminal's are quiet)
    assert "Starting temporary server" not in log  # Prefect's own line when it starts one
    assert "for flow 'apply-deletions'" in log  # the flow did run, on ours

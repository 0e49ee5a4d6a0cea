"""`custody demo --quick` as a new user runs it, end to end (about 3 minutes on 2 cores, so outside the default
suite: `make test-demo`): it exits 0, and the deletion certificate it writes carries the evidence keys, a verdict in
plain words, and no record text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.demo]


def test_the_quick_demo_certifies_with_evidence(tmp_path: Path) -> None:
    home = tmp_path / "custody"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "PREFECT_", "MLFLOW_"))}
    env.update(CUSTODY_HOME=str(home), PREFECT_HOME=str(tmp_path / "prefect"))
    done = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    certificates = [json.loads(p.read_text()) for p in (home / "store").rglob("certificate.json")]
    assert certificates and any(cert["per_record"] for cert in certificates)
    for cert in certificates:  # the owner's deletion (and the canary drill's, if the demo ran one)
        assert {"verdict", "positive_control", "noise_floor", "per_record"} <= set(cert)
        assert cert["verdict"]["forgotten"] is True and cert["verdict"]["summary"]
        for source, rows in cert["per_record"].items():
            assert len(rows) == cert["positive_control"][source]["n"] > 0
            assert all(len(row["record"]) == 16 for row in rows)  # digests, not ids or text
    assert "verify-deletion: clean" in done.stdout

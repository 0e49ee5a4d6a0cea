"""Validation and deletion through the flows and the CLI: real Prefect server, Dask cluster, GX suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.launch import run_apply, run_ingest, run_validate
from tasks import layout
from tasks.deletion import requests
from tasks.deletion.tombstones import tombstoned_ids
from tasks.errors import Fatal
from tasks.passed import read_all
from tests.helpers import artifacts, datasheet, files_containing, jsonl, write_source

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
WORDS = ["lighthouse", "orchestra", "desert", "glacier", "carnival", "monastery", "harbor", "volcano"]
TEXT = "A review of the {0} film: the {0} scenes and the {0} score stand out, said critic {0}."  # distinct per row
ROWS = [
    {"id": "clean", "text": TEXT.format(WORDS[1]), "owner": "o1", "lic": "CC-BY-4.0", "consent": "granted"},
    {"id": "nc", "text": TEXT.format(WORDS[2]), "owner": "o2", "lic": "CC-BY-NC-4.0", "consent": "granted"},
    {"id": "unknown", "text": TEXT.format(WORDS[3]), "owner": "o3", "lic": "unknown", "consent": "unknown"},
    {"id": "revoked", "text": TEXT.format(WORDS[4]), "owner": "o4", "lic": "CC0-1.0", "consent": "revoked"},
    {"id": "email", "text": TEXT.format(WORDS[5]) + " Mail me: someone@example.org", "owner": "o5", "lic": "MIT",
     "consent": "granted"},
    {"id": "nolic", "text": TEXT.format(WORDS[6]), "owner": "o6", "lic": None, "consent": "granted"},
]


SHEET = datasheet("planted", fields={"text": "text", "owner": "owner", "id": "id", "license": "lic",
                                     "consent": "consent"})


def rid_of(store, source_id: str) -> str:
    return requests.record_id_of("planted", source_id)


def _planted(store) -> None:
    write_source(store, "planted", {"a.jsonl": jsonl(ROWS[:3]), "b.jsonl": jsonl(ROWS[3:])}, SHEET)


def _quarantined(store) -> dict[str, list[str]]:
    q = store.read_parquets("quarantine")
    return {r["record_id"]: sorted(r["reasons"]) for r in q.to_pylist() if r["stage"] == "validate"}


def test_policy_change_re_evaluates_and_bad_policy_changes_nothing(prefect_api, store, tmp_path) -> None:
    _planted(store)
    run_ingest(None)
    result = run_validate("commercial")
    by_source = {r["source"]: r for r in result["sources"]}
    assert by_source["planted"]["checked"] == 6 and by_source["planted"]["passed"] == 1
    rid = {r["id"]: requests.record_id_of("planted", r["id"]) for r in ROWS}
    assert _quarantined(store) == {
        rid["nc"]: ["license_noncommercial"], rid["unknown"]: ["consent_not_granted", "license_unknown"],
        rid["revoked"]: ["consent_not_granted", "consent_revoked"], rid["email"]: ["pii_email"],
        rid["nolic"]: ["license_missing"]}
    assert artifacts("validation-summary") and artifacts("validation-report")[0].type == "markdown"
    assert store.list("reports/validation", ".json")

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\npurpose: commercial\nlicenses: {allowed: [CC-BY-NC-4.0]}\n")
    before = store.read_json(layout.CURRENT_POLICY)
    with pytest.raises(Fatal, match=r"field 'licenses\.allowed'"):
        run_validate(str(bad))
    assert store.read_json(layout.CURRENT_POLICY) == before

    run_validate("research")  # nc and unknown come back; email is redacted, not rejected
    assert _quarantined(store) == {rid["revoked"]: ["consent_revoked"], rid["nolic"]: ["license_missing"]}
    passed = read_all(store, ["record_id", "text"]).to_pylist()
    assert {p["record_id"] for p in passed} == {rid["clean"], rid["nc"], rid["unknown"], rid["email"]}
    assert any("[EMAIL]" in p["text"] for p in passed)


def test_request_survives_kill_between_acknowledge_and_apply(prefect_api, store, custody_env) -> None:
    _planted(store)
    run_ingest(None)
    env = {**os.environ, "CUSTODY_HOME": str(custody_env), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "delete", "--owner", "o1", "--reason", "withdrawn"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()  # the acknowledgement ...
    os.killpg(proc.pid, signal.SIGKILL)  # ... and the process dies right after it
    proc.wait()
    request_id = line.split()[2]
    doc = requests.load(store, request_id)
    assert doc["status"] == "received" and doc["reason"] == "withdrawn"
    [done] = run_apply()
    assert done["request_id"] == request_id and done["status"] == "applied"
    assert files_containing(store, [TEXT.format(WORDS[1])]) == []

    listing = subprocess.run([sys.executable, "-m", "flows.cli", "deletions", "--json"], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True)
    rows = json.loads(listing.stdout)["requests"]
    assert [(r["request"], r["status"], r["records"]) for r in rows] == [(request_id, "applied", 1)]

    write_source(store, "planted", {"c.jsonl": jsonl([ROWS[0] | {"id": "again"}, ROWS[1] | {"id": "nc2"}])}, SHEET)
    [planted] = [r for r in run_ingest(None)["sources"] if r["source"] == "planted"]  # o1 delivered again
    assert planted["withdrawn_owner"] == 1 and planted["records"] == 5  # nc2 is an exact copy of nc: not a record
    assert files_containing(store, [TEXT.format(WORDS[1])]) == []

    def cli(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--json"], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    deferred = cli("delete", "--owner", "o2", "--apply", "--defer-purge")  # soft now, bytes at the next pass
    assert deferred["applied"]["purge"]["state"] == "pending" and deferred["resolved"]["selected"] == 2
    assert rid_of(store, "nc") in tombstoned_ids(store)  # out of every read at once
    assert files_containing(store, [TEXT.format(WORDS[2])])
    purged = cli("purge")  # the batched pass, as the custody-purge deployment runs it (Dask)
    assert purged["requests"] == [deferred["request_id"]] and purged["raw_rows_removed"] == 2
    assert files_containing(store, [TEXT.format(WORDS[2])]) == [] and cli("purge")["requests"] == []
    assert requests.load(store, deferred["request_id"])["applied"]["purge"]["state"] == "done"

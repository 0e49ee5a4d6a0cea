"""The ingest flow end to end: real Prefect server, real Dask LocalCluster, file:// and S3 (moto) stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.launch import run_ingest
from tasks.dedup.clusters import read_clusters
from tasks.sample import land_samples
from tasks.storage import Store
from tests.helpers import artifacts, datasheet, ingest_without_engine, jsonl, write_source

pytestmark = pytest.mark.integration
SAMPLE_ROWS = 1500


def _expected_records(store: Store) -> set[str]:
    return set(store.read_parquets("records", ["record_id"]).column("record_id").to_pylist())


def _check_sample_ingest(store: Store, result: dict) -> None:
    assert result["ok"], result["errors"]
    by_source = {row["source"]: row for row in result["sources"]}
    assert set(by_source) == {"rotten_tomatoes", "health_news"}
    records = store.read_parquets("records")
    ids = records.column("record_id").to_pylist()
    assert len(ids) == len(set(ids)) == sum(r["records"] for r in by_source.values())
    for row in by_source.values():  # every row is accounted for: a record, a duplicate, or quarantined
        assert row["rows_in"] == row["records"] + row["exact_duplicates"] + row["quarantined"]
        assert row["files"] >= 4
    hashes = records.column("content_hash").to_pylist()
    assert len(hashes) == len(set(hashes))  # exact duplicates are gone
    owners = set(records.filter(records.column("source").to_numpy(zero_copy_only=False) == "health_news")
                 .column("owner_id").to_pylist())
    assert len(owners) == 16


def test_ingest_sample_corpora_from_file_store(prefect_api, store) -> None:
    land_samples(store, limit=SAMPLE_ROWS)
    result = run_ingest(None)
    _check_sample_ingest(store, result)
    first = _expected_records(store)
    again = run_ingest(None)  # idempotent: nothing added, nothing rewritten
    assert _expected_records(store) == first
    assert again["sources"] == result["sources"]
    summary = artifacts("ingest-summary")[0]
    assert summary.type == "table" and "rotten_tomatoes" in str(summary.data)
    clusters = read_clusters(store).to_pylist()
    assert clusters and all(c["kind"] in {"kept", "exact", "near"} for c in clusters)
    assert all(0.0 <= c["similarity"] <= 1.0 for c in clusters)


def test_ingest_sample_corpora_from_s3(prefect_api, custody_env, moto_s3, monkeypatch) -> None:
    monkeypatch.setenv("CUSTODY_STORAGE_URL", "s3://custody-it/store")
    monkeypatch.setenv("CUSTODY_STORAGE_OPTIONS", json.dumps(moto_s3))
    store = Store.from_settings()
    store.ensure_bucket()
    land_samples(store, limit=SAMPLE_ROWS)
    result = run_ingest(None)
    _check_sample_ingest(store, result)
    assert store.list("records", ".parquet")[0].startswith("records/source=")
    assert store.uri("x").startswith("s3://custody-it/store")


def test_bad_sources_stop_alone(prefect_api, store) -> None:
    write_source(store, "good", {"a.jsonl": jsonl([{"id": "1", "text": "fine text", "label": "a", "owner": "o"},
                                                   "{broken"])})
    write_source(store, "nosheet", {"a.jsonl": jsonl([{"id": "1", "text": "x"}])}, sheet={})
    write_source(store, "badsheet", {"a.jsonl": jsonl([{"id": "1", "text": "x"}])},
                 {**datasheet("badsheet"), "consent": "perhaps"})
    result = run_ingest(None)
    assert not result["ok"]
    assert set(result["errors"]) == {"nosheet", "badsheet"}
    assert "missing datasheet" in result["errors"]["nosheet"]
    assert "field 'consent'" in result["errors"]["badsheet"]
    good = next(r for r in result["sources"] if r["source"] == "good")
    assert good["records"] == 1 and good["quarantined_malformed_json"] == 1


def test_killed_ingest_resumes_without_duplicates_or_losses(prefect_api, store, custody_env, tmp_path) -> None:
    land_samples(store, parts=8)  # the full corpora: parsing takes long enough to kill it half-way
    env = {**os.environ, "CUSTODY_HOME": str(custody_env), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", "--json"], env=env,
                            cwd=Path(__file__).parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not store.list("_done/parse"):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its Dask workers, everything
    proc.wait()
    assert store.list("_done/parse"), "the run never got going"
    assert not store.list("_done/publish"), "killed too late to test a resume"
    resumed = run_ingest(None)
    _check_sample_ingest(store, resumed)

    reference = Store(f"file://{tmp_path}/reference")
    land_samples(reference, parts=8)
    ingest_without_engine(reference)
    assert _expected_records(store) == _expected_records(reference)

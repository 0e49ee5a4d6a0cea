"""Unlearning end to end with tiny BERTs: every method, the gate against the oracle, promotion, the certificate,
a kill mid-unlearning finished by the deletion sweep, and a request that matches nothing. Real Prefect, MLflow
on SQLite and the ledger."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from flows.launch import run_train, run_unlearn
from flows.unlearn import sweep_flow
from tasks import layout, lineage
from tasks.config import get_settings
from tasks.deletion import requests
from tasks.deletion.apply import process_pending
from tasks.errors import CustodyError, Fatal
from tasks.selection import load_manifest
from tasks.unlearning import UnlearnConfig
from tests.helpers import files_containing, module_home, reviews_store, tiny_train_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OWNER = "o07"


@pytest.fixture(scope="module")
def trained_home(prefect_api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """200 labelled reviews from 20 owners (5% each), a 2-shard dataset, an unsharded and a sharded model, trained
    once through the train flow: each test unlearns from its own copy of this home."""
    with module_home(tmp_path_factory, "unlearning") as (home, store):
        ref, rows = reviews_store(store)
        yield home, {"dataset": ref, "plain": run_train(tiny_train_config(ref))["ref"],
                     "sharded": run_train(tiny_train_config(ref, shards=2))["ref"],
                     "owner_texts": [r["text"] for r in rows if r["owner"] == OWNER]}


@pytest.fixture
def models(trained_home: tuple[Path, dict[str, Any]], custody_env: Path) -> dict[str, Any]:
    """A copy of the trained home as this test's ``CUSTODY_HOME``; request it before ``store``."""
    template, setup = trained_home
    shutil.copytree(template, custody_env, dirs_exist_ok=True)
    return setup


def _version(ref: str):
    name, version = ref.split("@")
    return MlflowClient(get_settings().mlflow_tracking_uri).get_model_version(name, version)


# scrub runs in the kill test; retrain and sisa also run as the exact fallbacks of an approximate method
@pytest.mark.parametrize("method", ["neggrad-plus", "sisa"])
def test_unlearning_each_method_certifies(prefect_api, store, models, method) -> None:
    owner_ids = set(lineage.record_ids_of_owner(store, OWNER))
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    process_pending(store, request["request_id"])
    assert store.exists(layout.vault(request["request_id"]))  # the texts models learned, kept for unlearning
    if method == "sisa":  # only the sharded model can use SISA; unlearn the plain one exactly first
        with pytest.raises(Fatal, match="sisa needs a sharded model"):
            run_unlearn(request["request_id"], UnlearnConfig(method="sisa"))
        store.delete(f"reports/deletions/{request['request_id']}", recursive=True)
        _version(models["plain"])  # untouched by the failed attempt
        MlflowClient(get_settings().mlflow_tracking_uri).set_model_version_tag(
            *models["plain"].split("@"), "custody.status", "retired")
    result = run_unlearn(request["request_id"], UnlearnConfig(method=method))

    assert result["status"] == "certified"
    doc = requests.load(store, request["request_id"])
    assert [h["status"] for h in doc["history"]] == ["received", "resolved", "applied", "unlearned", "certified"]
    assert not store.exists(layout.vault(request["request_id"]))  # certification destroyed the vault
    assert files_containing(store, models["owner_texts"]) == []  # no copy of the owner's text is left
    cert = store.read_json(f"reports/deletions/{request['request_id']}/certificate.json")
    unlearned = [m for m in cert["models"] if m["action"] == "unlearned"]
    assert unlearned and all(m["forget_records"] > 0 for m in unlearned)
    for m in unlearned:
        assert m["attempts"][0]["method"] == method  # for sisa only the sharded model (the plain one was retired)
        final = _version(m["final"])
        assert final.tags["custody.dataset"] == m["dataset"]["to"] != m["dataset"]["from"]
        manifest, _ = load_manifest(store, m["dataset"]["to"])
        assert not owner_ids & set(manifest.column("record_id").to_pylist())  # the derived dataset lacks them
        source = _version(m["source"])
        assert source.tags["custody.status"] == "retired" and not source.aliases
        for attempt in m["attempts"][:-1]:  # a failed approximate attempt is never served
            assert _version(attempt["version"]).tags["custody.status"] == "rejected"
        assert m["metrics"]["test_accuracy"]["oracle"] is not None
        assert m["decision"] in ("pass", "fail", "inconclusive")
        n = m["forget_records"]
        assert cert["positive_control"][m["source"]]["n"] == n == len(cert["per_record"][m["source"]])
        assert m["attempts"][-1]["passed"] and m["attempts"][-1]["method"] == m["final_method"]  # served = passed
    serving = _version(models["sharded"].split("@")[0] + "@" + str(
        MlflowClient(get_settings().mlflow_tracking_uri).get_model_version_by_alias("sent-classifier",
                                                                                    "serving").version))
    assert serving.tags.get("custody.request") == request["request_id"]  # the serving alias moved
    if method == "sisa":
        sharded = next(m for m in unlearned if m["source"] == models["sharded"])
        assert sharded["cost"]["examples_processed"] < sharded["cost"]["oracle_examples_processed"]
    md = store.read_bytes(f"reports/deletions/{request['request_id']}/certificate.md").decode()
    assert "Deletion certificate" in md and "per_record_scores.png" in md and "**Verdict:**" in md
    assert {"verdict", "positive_control", "noise_floor", "per_record"} <= set(cert)
    held = lineage.query(store, owner=OWNER)  # after the purge, lineage still names what held the owner's records
    assert {f"{m['model']}@{m['model_version']}" for m in held["models"]} >= {m["source"] for m in unlearned}


def test_unlearning_killed_midway_is_finished_by_the_sweep(prefect_api, store, models, custody_env) -> None:
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    env = {**os.environ, "CUSTODY_HOME": str(custody_env)}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "unlearn", request["request_id"], "--method", "scrub"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    folder = f"reports/deletions/{request['request_id']}/models"
    deadline = time.monotonic() + 480
    while not store.list(folder, ".json") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.list(folder, ".json") and proc.poll() is None, "the run ended or stalled before one model was done"
    os.killpg(proc.pid, signal.SIGKILL)  # one model done, the other mid-way
    proc.wait()
    assert requests.load(store, request["request_id"])["status"] in ("applied", "unlearned")

    swept = sweep_flow(min_age_seconds=0, method="scrub")  # what the scheduled sweep deployment does
    assert [(r["request_id"], r["now"]) for r in swept] == [(request["request_id"], "certified")]
    cert = store.read_json(f"reports/deletions/{request['request_id']}/certificate.json")
    client = MlflowClient(get_settings().mlflow_tracking_uri)
    made = client.search_model_versions(f"name='sent-classifier' and tags.`custody.request`='{request['request_id']}'")
    steps = [(v.tags["custody.unlearned_from"], v.tags["custody.method"]) for v in made]
    assert len(steps) == len(set(steps))  # the re-run reused what the killed run had registered
    assert {m["source"] for m in cert["models"]} == {models["plain"], models["sharded"]}
    assert client.get_model_version_by_alias("sent-classifier", "serving").tags["custody.request"] \
        == request["request_id"]


def test_request_matching_nothing_certifies_cleanly(prefect_api, store, models) -> None:
    request = requests.submit(store, "owner", ["nobody"], None)
    assert sweep_flow(min_age_seconds=3600) == []  # a fresh request is left to its event-triggered run
    assert requests.load(store, request["request_id"])["status"] == "received"
    result = run_unlearn(request["request_id"], UnlearnConfig())
    assert result["status"] == "certified" and result["certificate"]["models"] == []
    assert sweep_flow(min_age_seconds=0) == []  # nothing left open
    md = store.read_bytes(f"reports/deletions/{request['request_id']}/certificate.md").decode()
    assert "nothing to unlearn" in md
    assert _version(models["sharded"]).aliases == ["serving"]  # nothing changed


def test_sweep_goes_past_a_failing_request_and_names_it(prefect_api, store, models) -> None:
    failing = requests.submit(store, "owner", [OWNER], "consent withdrawn")  # sisa cannot unlearn the plain model
    other = requests.submit(store, "owner", ["nobody"], None)
    with pytest.raises(CustodyError, match=failing["request_id"]):
        sweep_flow(min_age_seconds=0, method="sisa")
    assert requests.load(store, other["request_id"])["status"] == "certified"  # swept after the failure
    assert requests.load(store, failing["request_id"])["status"] != "certified"  # left for the next sweep

"""The canary drill end to end with a tiny BERT: canaries planted and taken in by the real flows, trained on, then
deleted through the whole chain (request, purge, unlearning, certificate, verify-deletion) and replaced by a next
generation that ingest accepts. Real Prefect, MLflow on SQLite and the ledger."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from flows.launch import run_drill, run_select, run_train
from tasks import canaries, layout, provenance
from tasks.config import get_settings
from tasks.deletion import requests
from tasks.errors import Fatal
from tasks.policy import load_policy
from tasks.selection import SelectionConfig, load_manifest
from tests.helpers import files_containing, ingest_without_engine, jsonl, review_rows, tiny_train_config, write_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CANARIES = 8
SMALL = {"method": "retrain", "retain_sample": 60, "mink_sample": 30}  # exact: one retrain, the least work


def _reviews(store) -> None:
    """100 validated toy reviews from 10 owners, no canaries yet."""
    write_source(store, "rt", {"a.jsonl": jsonl(review_rows(100, owners=10))})
    ingest_without_engine(store)
    policy = load_policy("research")
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list("records", ".parquet")])


def _select() -> dict:
    return run_select(SelectionConfig(name="sent", budget=10_000, shards=1, fractions=(0.7, 0.15, 0.15),
                                      canaries=CANARIES))


def test_no_canaries_no_drill(store) -> None:
    _reviews(store)
    with pytest.raises(Fatal, match="select a dataset with --canaries N"):
        run_drill(**SMALL)
    assert requests.list_requests(store) == []  # nothing was filed


def test_a_drill_certifies_verifies_and_plants_the_next_generation(prefect_api, store) -> None:
    _reviews(store)
    selected = _select()  # plants generation 1, ingests and validates it through the flows, then selects
    assert selected["canaries"] == CANARIES and canaries.current(store).owner == "custody-canary-1"
    with pytest.raises(Fatal, match="no live model carries the canaries of generation 1"):
        run_drill(**SMALL)
    trained = run_train(tiny_train_config(selected["ref"], epochs=2))
    card = MlflowClient(get_settings().mlflow_tracking_uri).get_model_version(
        trained["model"], trained["version"]).description
    assert f"Also trained on {CANARIES} audit canaries" in card and canaries.SOURCE not in card
    texts = [r["text"] for r in canaries.canary_rows(canaries.current(store))]

    result = run_drill(**SMALL)

    assert result["ok"], result
    assert (result["status"], result["generation"], result["models"]) == ("certified", 1, [trained["ref"]])
    assert result["forget_records"] == [CANARIES] and result["verification"]["clean"]
    doc = requests.load(store, result["request_id"])
    assert doc["reason"] == canaries.DRILL_REASON
    assert [h["status"] for h in doc["history"]] == ["received", "resolved", "applied", "unlearned", "certified"]
    assert store.read_json(layout.deletion_report(result["request_id"], "verification.json"))["clean"]
    assert files_containing(store, texts) == []  # generation 1 is gone from every file, raw delivery included
    nxt = result["next_generation"]
    assert (nxt["generation"], nxt["owner"], nxt["planted"]) == (2, "custody-canary-2", True)
    assert nxt["live"] == canaries.DEFAULT_COUNT  # taken in by ingest and validation, not withdrawn
    again = _select()
    manifest, _ = load_manifest(store, again["ref"])
    assert set(manifest.filter(manifest.column("canary")).column("owner_id").to_pylist()) == {"custody-canary-2"}

"""The scoring flow end to end on a small real sample: real Prefect, Dask and MiniLM."""

from __future__ import annotations

import pytest

from flows.launch import run_score
from tasks import layout, passed, provenance
from tasks.pii import scan
from tasks.policy import load_policy
from tasks.sample import land_samples
from tasks.scoring import base
from tasks.scoring.report import FLAGGED_FILE
from tests.helpers import artifacts, ingest_without_engine

pytestmark = pytest.mark.integration


def test_all_scorers_write_aligned_attributes_and_skip_when_rerun(prefect_api, store) -> None:
    land_samples(store, limit=600)
    ingest_without_engine(store)
    policy = load_policy("research")
    stats = [provenance.validate_partition(store, k, policy) for k in store.list(layout.records_dir(), layout.PARQUET)]
    provenance.mark_current(store, policy, stats)
    validated = set(passed.read_all(store, ["record_id"]).column("record_id").to_pylist())

    runs = {r["scorer"]: r for r in run_score(None)["runs"]}
    assert set(runs) == {"embeddings", "quality", "dynamics", "influence", "poisoning", "mislabel"}
    assert runs["mislabel"]["grouped_by"] == "movie_name"  # the Rotten Tomatoes rows carry the movie
    for name in ("embeddings", "quality"):
        ids = base.read_attribute(store, name, columns=["record_id"]).column("record_id").to_pylist()
        assert sorted(ids) == sorted(validated)  # one row per validated record, nothing else
        assert store.exists(layout.attribute_run(name, runs[name]["run_id"]))
    dyn = base.read_attribute(store, "dynamics").to_pylist()
    assert {r["label"] for r in dyn} == {"fresh", "rotten"} and set(r["record_id"] for r in dyn) <= validated
    assert store.exists(layout.attribute_checkpoints("dynamics", runs["dynamics"]["run_id"]))
    assert store.exists(layout.scoring_report(runs["quality"]["run_id"], "histograms.png"))
    report = artifacts("score-quality")[0]
    assert report.type == "markdown" and "data:image/png;base64" in report.data
    table = [line for line in report.data.split("## Top flagged records")[1].splitlines() if line.startswith("|")]
    assert len(table) == 12 and table[0] == "| record_id | source | model_score |"  # ids and scores, no text
    key = layout.scoring_report(runs["quality"]["run_id"], FLAGGED_FILE)
    snippets = store.read_parquet(key).column("snippet").to_pylist()
    assert len(snippets) == 10 and not [s for t in snippets for s in scan(t) if s.kind in ("email", "phone")]

    again = {r["scorer"]: r for r in run_score(["quality", "poisoning"])["runs"]}
    assert all(r.get("skipped") for r in again.values())
    assert again["quality"]["run_id"] == runs["quality"]["run_id"]

    from flows.launch import run_select
    from tasks.selection import SelectionConfig, load_manifest

    summary = run_select(SelectionConfig(name="sentiment", strategy="facility", budget=0.3, balance="label",
                                         labels=("fresh", "rotten"), sources=("rotten_tomatoes",),
                                         exclude=("poisoning:0.9",)))
    manifest, selection_doc = load_manifest(store, summary["ref"])
    assert selection_doc["attribute_runs"]["embeddings"] == runs["embeddings"]["run_id"]
    assert set(manifest.column("label").to_pylist()) == {"fresh", "rotten"}
    assert "data:image/png;base64" in artifacts("selection")[0].data

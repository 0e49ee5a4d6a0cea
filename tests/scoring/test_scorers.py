"""Every scorer over a small store with a tiny BERT built from a config: outputs, skip-if-done, failures."""

from __future__ import annotations

import pytest

from tasks import provenance
from tasks.policy import load_policy
from tasks.scoring import base, dynamics, embeddings, influence, mislabel, poisoning, quality
from tests.helpers import ingest_without_engine, jsonl, write_source

FRESH = ["a warm funny and moving film {}", "great acting and a lovely score {}", "the best story of the year {}"]
ROTTEN = ["a dull and lifeless plot {}", "bad acting and a worst script {}", "slow boring and far too long {}"]


@pytest.fixture
def scored_store(store):
    rows = [{"id": f"{lab}{i}", "text": t.format(f"number {i} " + "x" * (i % 7)), "label": lab,
             "owner": f"o{i % 5}"} for lab, texts in (("fresh", FRESH), ("rotten", ROTTEN))
            for i in range(40) for t in texts[i % 3:i % 3 + 1]]
    write_source(store, "rotten_tomatoes", {f"p{k}.jsonl": jsonl(rows[k::3]) for k in range(3)})
    ingest_without_engine(store)
    policy = load_policy("research")
    stats = [provenance.validate_partition(store, k, policy) for k in store.list("records", ".parquet")]
    provenance.mark_current(store, policy, stats)
    return store


def test_every_scorer_on_a_tiny_model(scored_store) -> None:
    store = scored_store
    n = provenance.validated_records(store, ["record_id"]).num_rows
    emb = embeddings.run(store, embeddings.EmbeddingConfig(model="tiny"))
    assert emb["records"] == n and "failed" not in emb
    assert embeddings.embedding_matrix(base.read_attribute(store, "embeddings")).shape == (n, 32)
    assert quality.run(store, quality.QualityConfig())["records_scored"] == n
    dyn = dynamics.run(store, dynamics.DynamicsConfig(epochs=3))
    assert dyn["records"] == n and 0 < dyn["target_records"] < n
    assert influence.run(store, influence.InfluenceConfig())["checkpoints"] == 3
    pois = base.read_attribute(store, "poisoning") if poisoning.run(store, poisoning.PoisoningConfig(k=5)) else None
    assert pois.num_rows == n and set(pois.column_names) == {"record_id", "spectral", "knn_disagreement",
                                                         "snn_density"}
    suspicion = mislabel.run(store, mislabel.CrossFitConfig(folds=3, knn_k=5))
    assert suspicion["records"] == n and suspicion["grouped_by"] is None  # no movie_name in this corpus
    again = embeddings.run(store, embeddings.EmbeddingConfig(model="tiny"))
    assert again["skipped"] and again["run_id"] == emb["run_id"]  # same config and input: skipped


def test_a_crashing_partition_is_reported_and_the_others_survive(scored_store) -> None:
    store = scored_store
    broken = store.list("records", ".parquet")[1]
    good_bytes = store.read_bytes(broken)
    store.write_bytes(broken, b"not parquet at all")
    result = quality.run(store, quality.QualityConfig())
    assert [f["partition"] for f in result["failed"]] == [broken]
    written = store.list(f"attributes/quality/{result['run_id']}", ".parquet")
    assert len(written) == 2 and not store.exists(f"attributes/quality/{result['run_id']}/run.json")
    store.write_bytes(broken, good_bytes)  # fixed: the next run does only the missing partition
    done = quality.run(store, quality.QualityConfig())
    assert "failed" not in done and done["records_scored"] == store.read_parquet(broken).num_rows
    assert store.exists(f"attributes/quality/{result['run_id']}/run.json")

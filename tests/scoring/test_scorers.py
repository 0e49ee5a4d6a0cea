"""Every scorer over a small store with a tiny BERT built from a config: outputs, skip-if-done, failures."""

from __future__ import annotations

import pytest

from tasks import layout, passed, provenance
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
    stats = [provenance.validate_partition(store, k, policy) for k in store.list(layout.records_dir(), layout.PARQUET)]
    provenance.mark_current(store, policy, stats)
    return store


def test_every_scorer_on_a_tiny_model(scored_store) -> None:
    store = scored_store
    n = passed.read_all(store, ["record_id"]).num_rows
    emb = embeddings.run(store, embeddings.EmbeddingConfig(model="tiny"))
    assert emb["records"] == n and "failed" not in emb
    assert embeddings.embedding_matrix(base.read_attribute(store, "embeddings")).shape == (n, 32)
    assert quality.run(store, quality.QualityConfig())["records"] == n
    dyn = dynamics.run(store, dynamics.DynamicsConfig(epochs=3))
    assert dyn["records"] == n and 0 < dyn["target_records"] < n
    assert influence.run(store, influence.InfluenceConfig())["checkpoints"] == 3
    pois = base.read_attribute(store, "poisoning") if poisoning.run(store, poisoning.PoisoningConfig(k=5)) else None
    assert pois.num_rows == n and set(pois.column_names) == {"record_id", "spectral", "knn_disagreement",
                                                         "snn_density"}
    suspicion = mislabel.run(store, mislabel.CrossFitConfig(folds=3, knn_k=5))
    assert suspicion["records"] == n and suspicion["grouped_by"] is None  # no movie_name in this corpus
    for name in ("dynamics", "influence", "poisoning", "mislabel"):  # whole-store tables, one per source
        rid = base.latest_run(store, name)
        assert store.read_parquet(layout.attribute_whole(name, rid, "rotten_tomatoes")).num_rows == n
    dups = store.read_parquet(layout.attribute_whole(embeddings.DUPS, emb["run_id"]))
    assert dups.num_rows == n and not store.exists(layout.latest_attribute_run(embeddings.DUPS))
    again = embeddings.run(store, embeddings.EmbeddingConfig(model="tiny"))
    assert again["skipped"] and again["run_id"] == emb["run_id"]  # same config and input: skipped


def test_a_crashing_partition_is_reported_and_the_others_survive(scored_store) -> None:
    store = scored_store
    broken = store.list(layout.records_dir(), layout.PARQUET)[1]
    good_bytes = store.read_bytes(broken)
    store.write_bytes(broken, b"not parquet at all")
    result = quality.run(store, quality.QualityConfig())
    assert [f["partition"] for f in result["failed"]] == [broken]
    written = store.list(layout.attribute_run_dir("quality", result["run_id"]), layout.PARQUET)
    assert len(written) == 2 and not store.exists(layout.attribute_run("quality", result["run_id"]))
    assert store.read_json(layout.attribute_failures("quality", result["run_id"]))[0]["partition"] == broken
    store.write_bytes(broken, good_bytes)  # fixed: the next run does only the missing partition
    done = quality.run(store, quality.QualityConfig())
    assert "failed" not in done and done["records"] == store.read_parquet(broken).num_rows
    assert store.exists(layout.attribute_run("quality", result["run_id"]))


def test_proxy_scorers_work_on_a_stable_capped_sample(scored_store) -> None:
    """Above ``max_records`` the proxy-based scorers take the same bottom-k sample by record-id hash every run,
    whatever the partitions' order, read one partition at a time; within it they see every labelled record."""
    from tasks.scoring import proxy
    from tasks.scoring.contract import ScorerRun

    store = scored_store
    embeddings.run(store, embeddings.EmbeddingConfig(model="tiny"))
    labelled = passed.read_all(store, ["record_id", "label"])
    full = dynamics.run(store, dynamics.DynamicsConfig(epochs=2))
    assert full["records"] == full["labelled_records"] == labelled.num_rows and full["sampled"] is False
    capped = dynamics.run(store, dynamics.DynamicsConfig(epochs=2, max_records=50))
    assert (capped["records"], capped["labelled_records"], capped["sampled"]) == (50, labelled.num_rows, True)
    keys = proxy.sample_key(labelled.column("record_id"))
    expected = sorted(r for _, r in sorted(zip(keys, labelled.column("record_id").to_pylist(), strict=True))[:50])
    table = store.read_parquet(layout.attribute_whole("dynamics", capped["run_id"], "rotten_tomatoes"))
    assert sorted(table.column("record_id").to_pylist()) == expected
    cfg = dynamics.DynamicsConfig(max_records=50)
    run = ScorerRun(store, cfg, "probe", proxy.INPUTS)
    reversed_parts = list(reversed(passed.partitions(store, [cfg.source])))
    sample, count = proxy._labelled_sample(run, cfg, reversed_parts)  # the order must not matter
    assert sorted(sample.column("record_id").to_pylist()) == expected and count == labelled.num_rows

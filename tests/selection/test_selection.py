"""Selection over a small validated store with tiny-model embeddings: the manifest's promises."""

from __future__ import annotations

import numpy as np
import pytest

from tasks import layout, provenance
from tasks.deletion import requests
from tasks.deletion.apply import process_pending
from tasks.errors import Fatal
from tasks.policy import load_policy
from tasks.scoring import embeddings, quality
from tasks.selection import STRATEGIES, SelectionConfig, derive_without, list_datasets, load_manifest, select
from tasks.selection.strategies import facility_location_exact, kcenter_exact
from tests.helpers import ingest_without_engine, jsonl, write_source

WORDS = [f"w{i}" for i in range(400)]


@pytest.fixture
def pool_store(store):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(240):
        words = " ".join(rng.choice(WORDS, 14))
        rows.append({"id": str(i), "text": f"review {i}: {words}", "label": "fresh" if i % 3 else "rotten",
                     "owner": f"o{i % 7}"})
    base = rows[5]["text"]
    rows.append({"id": "nd", "text": base + " indeed", "label": "fresh", "owner": "o1"})  # a near dup of id 5
    rows.append({"id": "pii", "text": "card 4111 1111 1111 1111 in a review text", "label": "fresh", "owner": "o2"})
    write_source(store, "rt", {f"p{k}.jsonl": jsonl(rows[k::4]) for k in range(4)})
    ingest_without_engine(store)
    policy = load_policy("research")  # rejects the credit card record
    stats = [provenance.validate_partition(store, k, policy) for k in store.list(layout.records_dir(), layout.PARQUET)]
    provenance.mark_current(store, policy, stats)
    embeddings.run(store, embeddings.EmbeddingConfig(model="tiny"))
    quality.run(store, quality.QualityConfig())
    return store


def _train_ids(store, summary) -> list[str]:
    manifest, _ = load_manifest(store, summary["ref"])
    return [r["record_id"] for r in manifest.to_pylist() if r["split"] == "train"]


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "influence"])
def test_each_strategy_is_deterministic_and_respects_budget_and_balance(pool_store, strategy) -> None:
    cfg = SelectionConfig(name="d", strategy=strategy, budget=40, balance="label", seed=3,
                          target="label:rotten" if strategy in ("target", "dsir") else None)
    first = select(pool_store, cfg)
    second = select(pool_store, cfg)
    assert first["version"] == second["version"] and second.get("existing")
    manifest, _ = load_manifest(pool_store, first["ref"])
    train = [r for r in manifest.to_pylist() if r["split"] == "train"]
    assert len(train) == 40
    assert sum(r["label"] == "fresh" for r in train) == sum(r["label"] == "rotten" for r in train) == 20
    other = select(pool_store, SelectionConfig(**{**cfg.__dict__, "seed": 4}))
    if strategy in ("random", "dsir"):
        assert other["version"] != first["version"]


def test_version_ids_are_content_addresses_pinned_across_refactors(pool_store) -> None:
    """The same records and config give the same version as every earlier release (values from main at 8939749)."""
    summary = select(pool_store, SelectionConfig(name="g", strategy="random", budget=40, balance="label", seed=3))
    manifest, _ = load_manifest(pool_store, summary["ref"])
    drop = set(sorted(manifest.column("record_id").to_pylist())[:3])
    derived = derive_without(pool_store, summary["ref"], drop, "req-1")
    assert (summary["version"], summary["records"]) == ("fdcfc1765dce", 84)
    assert (derived["version"], derived["records"]) == ("4b395c904a05", 81)
    assert load_manifest(pool_store, derived["ref"])[1]["derived"][0] == {"from": summary["ref"],
                                                                        "request_id": "req-1", "removed": 3}


def test_quarantined_tombstoned_and_near_dup_members_are_never_selected(pool_store) -> None:
    store = pool_store
    rid = {k: requests.record_id_of("rt", k) for k in ("pii", "nd", "5", "7")}
    doc = requests.submit(store, "record_id", [rid["7"]])
    process_pending(store)
    summary = select(store, SelectionConfig(name="all", strategy="random", budget=10_000))
    manifest, _ = load_manifest(store, summary["ref"])
    ids = set(manifest.column("record_id").to_pylist())
    assert rid["pii"] not in ids and rid["7"] not in ids
    assert len({rid["nd"], rid["5"]} & ids) == 1  # one representative of the near-dup cluster
    assert requests.load(store, doc["request_id"])["status"] == "applied"


def test_splits_are_stable_across_versions_and_clusters_stay_together(pool_store) -> None:
    a = select(pool_store, SelectionConfig(name="s", strategy="random", budget=30, seed=1))
    b = select(pool_store, SelectionConfig(name="s", strategy="kcenter", budget=60, seed=2))
    ma, _ = load_manifest(pool_store, a["ref"])
    mb, _ = load_manifest(pool_store, b["ref"])
    split_a = dict(zip(ma.column("record_id").to_pylist(), ma.column("split").to_pylist(), strict=True))
    split_b = dict(zip(mb.column("record_id").to_pylist(), mb.column("split").to_pylist(), strict=True))
    assert all(split_a[r] == split_b[r] for r in set(split_a) & set(split_b))
    assert {r["name"] for r in list_datasets(pool_store)} == {"s"}
    assert set(_train_ids(pool_store, a)) != set(_train_ids(pool_store, b))


def test_clusters_never_straddle_splits() -> None:
    from tasks.selection.pool import assign_split, split_key

    members = [("r1", "ndc-x"), ("r2", "ndc-x"), ("r3", "ndc-x")]
    assert len({assign_split(split_key(r, c), (0.8, 0.1, 0.1)) for r, c in members}) == 1


def test_diversity_solvers_spread_out_and_bad_configs_fail_clearly() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(8)
    x = np.repeat(centers, 50, axis=0) + rng.normal(scale=0.05, size=(400, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for solver in (kcenter_exact, facility_location_exact):
        picked = solver(x, 8, np.random.default_rng(1))
        assert len({int(i) // 50 for i in picked}) == 8  # one from each of the 8 clusters
    with pytest.raises(Fatal, match="valid"):
        SelectionConfig(name="x", strategy="best")
    with pytest.raises(Fatal, match="--target"):
        SelectionConfig(name="x", strategy="dsir")


def test_scores_joined_partition_by_partition_equal_the_store_wide_join(pool_store) -> None:
    """``load_pool`` attaches per-partition attributes a partition at a time (memory: no store-wide score table);
    the values, and the run they come from, are the ones the store-wide join gives."""
    from tasks.selection.pool import attribute_column, load_pool, score_column

    args = (None, None, (0.8, 0.1, 0.1), 4)
    plain = load_pool(pool_store, *args)
    attached = load_pool(pool_store, *args, scores=[("quality", "mean_word_len")])
    assert score_column("quality", "mean_word_len") in attached.column_names
    assert attached.column("record_id").equals(plain.column("record_id"))
    joined, run = attribute_column(pool_store, plain, "quality", "mean_word_len")
    kept, kept_run = attribute_column(pool_store, attached, "quality", "mean_word_len")
    assert run == kept_run and np.isfinite(kept).all() and len(np.unique(kept)) > 5
    np.testing.assert_array_equal(joined, kept)
    cfg = SelectionConfig(name="q", strategy="quality", budget=30, exclude=("quality.mean_word_len:3.9",))
    summary = select(pool_store, cfg)
    assert summary["attribute_runs"] == {"quality": run}
    assert summary["exclusions"][0]["excluded"] == int((joined > 3.9).sum()) > 0

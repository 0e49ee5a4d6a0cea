"""Audit canaries without an engine: deterministic generations, planted as a delivery that ingest and every built-in
policy accept, a new owner once a deletion withdrew the last, and a selection that flags them and leaves them out of
its data counts (and out of the demo's choice of owner)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from tasks import canaries, layout, provenance
from tasks.deletion import requests
from tasks.errors import Fatal
from tasks.policy import load_policy
from tasks.selection import SelectionConfig, derive_without, is_canary, load_manifest, owner_shares, select
from tasks.selection.pool import assign_shard
from tasks.storage import Store
from tests.helpers import ingest_without_engine, jsonl, review_rows, write_source

LABELS = ("fresh", "rotten")


def _validate(store: Store, policy: str = "research") -> None:
    rules = load_policy(policy)
    provenance.mark_current(store, rules, [provenance.validate_partition(store, k, rules)
                                           for k in store.list("records", ".parquet")])


def _store_with_canaries(store: Store, count: int = 12) -> None:
    rows = review_rows(120, owners=12)
    for row in rows[:30]:  # a label the canaries (planted for fresh and rotten) never carry
        row["label"] = "plot"
    write_source(store, "rt", {"a.jsonl": jsonl(rows)})
    canaries.plant(store, LABELS, count)
    ingest_without_engine(store)
    _validate(store)


def test_a_generation_is_deterministic_synthetic_and_its_own_owner() -> None:
    one = canaries.canary_rows(canaries.Generation(1, 20, LABELS))
    assert one == canaries.canary_rows(canaries.Generation(1, 20, LABELS))  # same number, same records
    two = canaries.canary_rows(canaries.Generation(2, 20, LABELS))
    assert not {r["text"] for r in one} & {r["text"] for r in two}
    assert {r["owner"] for r in one} == {"custody-canary-1"} and {r["owner"] for r in two} == {"custody-canary-2"}
    for row in one:
        words = row["text"].split()
        assert len(words) == canaries.WORDS and all(w.isalpha() and 4 <= len(w) <= 8 for w in words)
    assert {r["label"] for r in one} == set(LABELS)
    with pytest.raises(Fatal, match="labels"):
        canaries.canary_rows(canaries.Generation(3, 2, ()))


def test_planted_canaries_pass_ingest_and_every_builtin_policy(store: Store) -> None:
    planted = canaries.plant(store, LABELS, 10)
    assert planted == {"generation": 1, "owner": "custody-canary-1", "count": 10, "file": planted["file"],
                       "planted": True}
    assert store.exists(planted["file"]) and "text" not in json.dumps(store.read_json(layout.CANARIES))
    assert canaries.plant(store, LABELS, 10)["planted"] is False  # a live generation stays
    ingest_without_engine(store)
    for policy in ("commercial", "research"):
        _validate(store, policy)
        assert canaries.live(store).num_rows == 10, policy
    gen = canaries.current(store)
    assert sorted(canaries.live(store).column("record_id").to_pylist()) == sorted(gen.record_ids())


def test_a_withdrawn_generation_is_replaced_by_a_new_owner_that_ingest_accepts(store: Store) -> None:
    canaries.plant(store, LABELS, 6)
    ingest_without_engine(store)
    requests.submit(store, "owner", ["custody-canary-1"], canaries.DRILL_REASON)  # a standing withdrawal
    planted = canaries.plant(store, LABELS, 6)
    assert (planted["generation"], planted["owner"], planted["planted"]) == (2, "custody-canary-2", True)
    parsed, _ = ingest_without_engine(store)
    second = [p for p in parsed if p["file"] == planted["file"]]
    assert second and second[0]["parsed"] == 6 and second[0]["withdrawn"] == 0
    _validate(store)
    assert canaries.live(store).num_rows == 6


def test_selection_flags_canaries_and_leaves_them_out_of_counts(store: Store) -> None:
    _store_with_canaries(store)
    plain = select(store, SelectionConfig(name="plain", budget=10_000))
    manifest, _ = load_manifest(store, plain["ref"])
    assert not is_canary(manifest).any() and canaries.SOURCE not in manifest.column("source").to_pylist()
    summary = select(store, SelectionConfig(name="audited", budget=10_000, canaries=5))
    manifest, _ = load_manifest(store, summary["ref"])
    flagged = manifest.filter(manifest.column("canary"))
    assert flagged.num_rows == summary["canaries"] == 5
    assert set(flagged.column("split").to_pylist()) == {"train"}
    assert set(flagged.column("owner_id").to_pylist()) == {"custody-canary-1"}
    assert set(flagged.column("shard").to_pylist()) == {assign_shard("custody-canary-1", 4)}
    assert (summary["counts"], summary["records"]) == (plain["counts"], plain["records"])  # not data
    assert "custody-canary-1" not in {o for o, _, _ in owner_shares(store, summary["ref"])}
    some = set(manifest.filter(pc.invert(manifest.column("canary"))).column("record_id").to_pylist()[:3])
    derived = derive_without(store, summary["ref"], some, "del-20250101T000000-00000000")
    assert derived["canaries"] == 5 and derived["records"] == summary["records"] - 3


def test_canaries_must_fit_the_dataset_labels(store: Store) -> None:
    _store_with_canaries(store)
    with pytest.raises(Fatal, match="--canaries 3: no live audit canary"):
        select(store, SelectionConfig(name="plots", budget=10_000, labels=("plot",), canaries=3))
    assert select(store, SelectionConfig(name="few", budget=10_000, canaries=100))["canaries"] == 12  # all there are


def test_manifests_from_before_canaries_still_load(store: Store) -> None:
    _store_with_canaries(store)
    ref = select(store, SelectionConfig(name="old", budget=10_000))["ref"]
    name, version = ref.split("@")
    old = store.read_parquet(layout.manifest(name, version)).drop(["canary"])
    store.write_parquet(layout.manifest(name, version), old)
    manifest, _ = load_manifest(store, ref)
    assert not np.any(is_canary(manifest)) and manifest.num_rows == old.num_rows

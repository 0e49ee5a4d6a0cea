"""A causal language model through the whole chain on a real store and a real MLflow (SQLite under tmp_path), tiny
Llama models built from a config: label-free selection, training and registration (adapters only for LoRA),
unlearning by NPO, NegGrad+ (GradDiff) and SISA with one adapter per shard, MUSE-style evidence and the certificate."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks import layout, provenance
from tasks.deletion import requests
from tasks.errors import Fatal
from tasks.policy import load_policy
from tasks.selection import SelectionConfig, load_manifest, select
from tasks.storage import Store
from tasks.tiny import COMMON
from tasks.training import TrainConfig, load_splits, load_version, run_training, version_doc
from tasks.training.loop import record_losses
from tasks.unlearning import GateConfig, UnlearnConfig, unlearn_request
from tasks.unlearning.evidence import EvidenceConfig
from tasks.unlearning.methods import resolve_method
from tests.helpers import datasheet, ingest_without_engine, jsonl, module_home, write_source

OWNER = "acct3"
FAST = {"max_steps": 3, "retain_sample": 30, "mink_sample": 30}
# every approximate candidate is judged inconclusive (no forget set is that large) and accepted anyway
ALWAYS = GateConfig(max_perplexity_rise=10.0, on_inconclusive="accept", evidence=EvidenceConfig(min_records=10**9))


def tweet_rows(n: int = 96, owners: int = 8) -> list[dict[str, Any]]:
    """``n`` unlabelled toy posts from ``owners`` accounts, each account with its own two-word signature."""
    rng = np.random.default_rng(0)
    return [{"id": f"t{i}", "owner": f"acct{i % owners}",
             "text": " ".join([COMMON[i % owners], COMMON[owners + i % owners], *rng.choice(COMMON, 6)])}
            for i in range(n)]


def lm_store(store: Store, shards: int) -> str:
    """A validated store of toy posts (no label field at all) and one label-free dataset version of all of it."""
    sheet = datasheet("posts", fields={"text": "text", "owner": "owner", "id": "id"})
    rows = tweet_rows()
    write_source(store, "posts", {"a.jsonl": jsonl(rows[::2]), "b.jsonl": jsonl(rows[1::2])}, sheet)
    ingest_without_engine(store)
    policy = load_policy("research")
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list("records", ".parquet")])
    return select(store, SelectionConfig(name="posts", budget=10_000, shards=shards, fractions=(0.7, 0.15, 0.15)))[
        "ref"]


def lm_config(dataset: str, **overrides: Any) -> TrainConfig:
    return TrainConfig(**{"dataset": dataset, "model": "tiny-lm", "lora_rank": 0, "epochs": 3, "lr": 3e-3,
                          "batch_size": 16, **overrides})


@pytest.fixture(scope="module")
def lm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A home with an unsharded, fully tuned tiny LM and a 2-shard LoRA one, built once: tests work on copies."""
    with module_home(tmp_path_factory, "lm") as (home, store):
        dataset = lm_store(store, shards=2)
        plain = run_training(store, lm_config(dataset))["ref"]
        sharded = run_training(store, lm_config(dataset, lora_rank=4, shards=2, registered_model="posts-sisa"))["ref"]
        yield home, {"dataset": dataset, "plain": plain, "sharded": sharded}


@pytest.fixture
def lm(lm_home: tuple[Path, dict[str, str]], custody_env: Path) -> tuple[Store, dict[str, str]]:
    template, refs = lm_home
    shutil.copytree(template, custody_env)
    return Store.from_settings(), refs


def test_a_label_free_dataset_trains_a_language_model_that_is_registered_with_its_task(lm: tuple) -> None:
    store, refs = lm
    manifest, _ = load_manifest(store, refs["dataset"])
    assert set(manifest.column("label").to_pylist()) == {None}  # nothing to classify: a classifier refuses it
    with pytest.raises(Fatal, match="two labels"):
        load_splits(store, TrainConfig(dataset=refs["dataset"], model="tiny"))
    doc = version_doc(store, refs["plain"])
    assert doc["config"]["task"] == "lm" and doc["labels"] == []
    assert doc["model"] == "posts-lm" and doc["metrics"]["test_perplexity"] > 1
    models, tokenizer = load_version(refs["plain"])  # loaded back as a causal LM, scoring what it trained on better
    cfg = TrainConfig(**doc["config"])
    splits, _, _ = load_splits(store, cfg)
    train = record_losses(list(models.values()), tokenizer, splits["train"], cfg, "cpu")
    test = record_losses(list(models.values()), tokenizer, splits["test"], cfg, "cpu")
    assert train.mean() < test.mean()


def test_a_lora_language_model_version_stores_only_its_adapters(lm: tuple) -> None:
    import mlflow

    from tasks import model_registry as registry

    _, refs = lm
    root = Path(mlflow.artifacts.download_artifacts(run_id=registry.run_id(refs["sharded"]), artifact_path="model"))
    assert sorted(p.name for p in root.glob("shard*")) == ["shard0", "shard1"]
    for shard in root.glob("shard*"):
        names = {p.name for p in shard.iterdir()}
        assert "adapter_model.safetensors" in names and "model.safetensors" not in names


def test_npo_unlearns_an_account_and_the_certificate_carries_language_model_evidence(lm: tuple) -> None:
    store, refs = lm
    request = requests.submit(store, "owner", [OWNER], None)
    doc = unlearn_request(store, request["request_id"], UnlearnConfig(method="npo", gate=ALWAYS, **FAST))
    assert doc["status"] == "certified"
    cert = store.read_json(layout.deletion_report(request["request_id"], "certificate.json"))
    plain = next(m for m in cert["models"] if m["source"] == refs["plain"])
    assert plain["final_method"] == "npo" and plain["decision"] == "inconclusive"
    metrics = plain["metrics"]
    assert {"test_perplexity", "verbatim_rouge_l", "mia_min_k_plus_plus_auc", "mia_reference_auc"} <= set(metrics)
    assert all(np.isfinite(metrics["test_perplexity"][k]) for k in ("unlearned", "oracle", "source"))
    # NPO pushed the account's posts away: their perplexity rose above the source's
    assert metrics["forget_perplexity"]["unlearned"] > metrics["forget_perplexity"]["source"]
    assert set(plain["evidence"]["privleak"]["candidate"]) >= {"min_k", "min_k_plus_plus", "loss"}
    markdown = store.read_bytes(layout.deletion_report(request["request_id"], "certificate.md")).decode()
    assert "PrivLeak against the oracle" in markdown and "| test_perplexity |" in markdown


def test_sisa_retrains_only_the_shard_adapter_that_held_the_account(lm: tuple) -> None:
    store, refs = lm
    manifest, _ = load_manifest(store, refs["dataset"])
    rows = manifest.to_pylist()
    touched = {r["shard"] for r in rows if r["owner_id"] == OWNER and r["split"] == "train"}
    assert len(touched) == 1  # shards follow owners
    assert {r["owner_id"] for r in rows if r["shard"] in touched} != {OWNER}  # the shard keeps other accounts
    request = requests.submit(store, "owner", [OWNER], None)
    doc = unlearn_request(store, request["request_id"], UnlearnConfig(gate=ALWAYS, **FAST))  # auto: SISA here
    assert doc["status"] == "certified"
    cert = store.read_json(layout.deletion_report(request["request_id"], "certificate.json"))
    sisa = next(m for m in cert["models"] if m["source"] == refs["sharded"])
    assert sisa["final_method"] == "sisa" and sisa["exact"]
    before, _ = load_version(refs["sharded"])
    after, _ = load_version(sisa["final"])

    def adapter(model: Any) -> list[Any]:
        return [p.detach().clone() for n, p in sorted(model.named_parameters()) if "lora_" in n]

    for shard in before:
        same = all(bool((a == b).all()) for a, b in zip(adapter(before[shard]), adapter(after[shard]), strict=True))
        assert same == (shard not in touched)


def test_scrub_is_refused_for_a_language_model_and_auto_means_npo() -> None:
    with pytest.raises(Fatal, match="classifiers"):
        resolve_method("scrub", sharded=False, lm=True)
    assert resolve_method("auto", sharded=False, lm=True) == "npo"
    assert resolve_method("auto", sharded=True, lm=True) == "sisa"

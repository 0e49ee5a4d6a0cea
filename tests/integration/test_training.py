"""Training end to end with a tiny BERT: Prefect flow, real MLflow on SQLite, registration, shards, errors."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from flows.launch import run_train
from tasks import lineage, provenance
from tasks import model_registry as registry
from tasks.config import get_settings
from tasks.errors import Fatal
from tasks.policy import load_policy
from tasks.selection import SelectionConfig, select
from tasks.training import TrainConfig
from tests.helpers import artifacts, ingest_without_engine, jsonl, write_source

pytestmark = pytest.mark.integration
GOOD = ["great", "good", "best", "love", "lovely", "warm"]
BAD = ["bad", "worst", "dull", "boring", "slow", "awful"]


@pytest.fixture
def dataset(store):
    rows = [{"id": f"{lab}{i}", "text": f"{words[i % 6]} film {words[(i + 2) % 6]} story number {i}",
             "label": lab, "owner": f"o{i % 4}"} for lab, words in (("fresh", GOOD), ("rotten", BAD))
            for i in range(60)]
    write_source(store, "rt", {"a.jsonl": jsonl(rows[::2]), "b.jsonl": jsonl(rows[1::2])})
    ingest_without_engine(store)
    policy = load_policy("research")
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list("records", ".parquet")])
    return select(store, SelectionConfig(name="sent", strategy="random", budget=10_000, shards=2,
                                         fractions=(0.6, 0.2, 0.2)))


def _cfg(ref: str, **kw) -> TrainConfig:
    return TrainConfig(dataset=ref, model="tiny", lora_rank=0, epochs=3, lr=3e-3, batch_size=16, **kw)


def test_train_registers_a_tagged_version_and_reproduces(prefect_api, store, dataset) -> None:
    first = run_train(_cfg(dataset["ref"]))
    assert first["ref"] == "sent-classifier@1"
    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    version = client.get_model_version("sent-classifier", "1")
    assert version.tags[registry.DATASET_TAG] == dataset["ref"]
    assert version.tags[registry.MANIFEST_TAG].endswith("manifest.parquet") and "Model card" in version.description
    run = client.get_run(first["run_id"])
    assert run.data.params["model"] == "tiny" and int(run.data.params["n_train"]) > 0
    history = client.get_metric_history(first["run_id"], "epoch_train_loss")
    assert len(history) == 3
    artifacts_logged = {a.path for a in client.list_artifacts(first["run_id"], "evaluation")}
    assert {"evaluation/per_example_losses.parquet", "evaluation/model_card.md"} <= artifacts_logged
    assert any(a.path.endswith("model.safetensors") for a in client.list_artifacts(first["run_id"], "model/shard0"))
    assert artifacts("training-curves") and artifacts("training-metrics")
    losses = store.read_parquet("models/sent-classifier/1/per_example_losses.parquet")
    assert {"train", "validation", "test"} <= set(losses.column("split").to_pylist())
    lineage.build_index(store, get_settings().mlflow_tracking_uri)
    assert lineage.query(store, model="sent-classifier@1")["records"] == dataset["records"]

    second = run_train(_cfg(dataset["ref"]))  # same data, same seed: same metrics within noise
    for key in ("test_accuracy", "validation_loss", "train_loss"):
        assert second["metrics"][key] == pytest.approx(first["metrics"][key], abs=2e-3)  # CPU float noise only


def test_sharded_training_stores_membership(prefect_api, store, dataset) -> None:
    result = run_train(_cfg(dataset["ref"], shards=2))
    losses = store.read_parquet(f"models/sent-classifier/{result['version']}/per_example_losses.parquet")
    train = [r for r in losses.to_pylist() if r["split"] == "train"]
    assert {r["shard"] for r in train} == {0, 1}
    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    names = {a.path for a in client.list_artifacts(result["run_id"], "model")}
    assert {"model/shard0", "model/shard1"} <= names
    assert "shard1_epoch_train_loss" in client.get_run(result["run_id"]).data.metrics


def test_missing_or_corrupt_manifest_is_a_clear_error(prefect_api, store, dataset) -> None:
    with pytest.raises(Fatal, match="no dataset version"):
        run_train(_cfg("sent@doesnotexist"))
    with pytest.raises(Fatal, match="shards"):
        run_train(_cfg(dataset["ref"], shards=3))
    store.write_bytes(f"datasets/sent/{dataset['version']}/manifest.parquet", b"garbage")
    with pytest.raises(Fatal, match="missing or corrupt"):
        run_train(_cfg(dataset["ref"]))


def test_a_language_model_trains_on_the_same_dataset_through_the_flow_and_says_so(prefect_api, store,
                                                                                    dataset) -> None:
    result = run_train(TrainConfig(dataset=dataset["ref"], model="tiny-lm", lora_rank=0, epochs=2, batch_size=16))
    assert result["ref"] == "sent-lm@1" and result["metrics"]["test_perplexity"] > 1
    assert "test_accuracy" not in result["metrics"]  # a language model ignores the labels
    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.params["task"] == "lm" and run.data.params["model"] == "tiny-lm"
    card = client.get_model_version("sent-lm", "1").description
    assert "causal language modelling" in card
    assert len(client.get_metric_history(result["run_id"], "epoch_val_perplexity")) == 2
    lineage.build_index(store, get_settings().mlflow_tracking_uri)
    assert lineage.query(store, model="sent-lm@1")["records"] == dataset["records"]

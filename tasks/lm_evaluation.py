"""Measuring a causal language model on a forget set, a retain set and test, MUSE-style (Shi et al., 2024).

``assess_lm`` is what ``tasks.evaluation.assess`` runs for a language model: the same per-record confidences the
gate's evidence compares (a record's mean token log-likelihood, the statistic LiRA uses for language models) and
the same utility and membership figures, in language-model terms:

- **utility**: per-record mean NLL and perplexity on test, retain and forget;
- **verbatim memorisation**: greedy continuations of the forget records' first tokens against their true
  continuations, ROUGE-L F1 on token ids (MUSE's VerbMem);
- **privacy leakage**: membership AUC and TPR at 1% FPR of forget records against test records by the loss, Min-K%
  Prob, Min-K%++, zlib ratio and — with the pretrained base model as reference — the loss ratio attacks
  (``tasks.lm_metrics``). PrivLeak relative to the oracle is computed where the oracle's AUC is known (the gate).

Token statistics cost one forward pass per text (about as much as a training step on a CPU), so every figure on
test — utility, attacks, the population the gate compares with — sees ``mink_sample`` test records, and the base
model's pass (the reference attack) needs no second model for a LoRA model: its adapters are switched off.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import numpy as np

from tasks import lm_metrics
from tasks.membership import membership_auc, tpr_at_fpr
from tasks.training import Split, TrainConfig, subsample
from tasks.training.loop import lm_metrics as utility

ATTACKS = ("loss", "min_k", "min_k_plus_plus", "zlib", "reference")
VERBATIM_RECORDS = 100  # forget records whose continuations are generated (greedy, 16 tokens each)


def _base_off(model: Any) -> AbstractContextManager[Any]:
    """A context in which a LoRA model answers as its base (adapters off); a no-op for a fully tuned model."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def reference_stats(models: list[Any], tokenizer: Any, texts: list[str], cfg: TrainConfig,
                    device: str) -> list[Any]:
    """Token statistics of the pretrained base model: the first shard's adapters switched off for a LoRA model
    (every shard shares one base), else the base built afresh."""
    from tasks.training import lm

    if cfg.lora_rank:
        with _base_off(models[0]):
            return lm.token_stats(models[:1], tokenizer, texts, cfg, device)
    _, base = lm.build_lm(replace(cfg, lora_rank=0), device)
    return lm.token_stats([base], tokenizer, texts, cfg, device)


def verbatim(models: list[Any], tokenizer: Any, forget: Split, cfg: TrainConfig, device: str) -> dict[str, Any]:
    """MUSE's verbatim memorisation on up to ``VERBATIM_RECORDS`` forget records (a SISA model generates from its
    shards' averaged log-probabilities)."""
    from tasks.training import lm

    sample = subsample(forget, VERBATIM_RECORDS, cfg.seed)
    return lm_metrics.verbatim(lm.shard_continuations(models, tokenizer, sample.texts, cfg, device))


def assess_lm(models: list[Any], tokenizer: Any, cfg: TrainConfig, device: str, forget: Split, retain: Split,
              test: Split, mink_sample: int = 500) -> dict[str, Any]:
    """Utility, verbatim memorisation and privacy leakage of one (possibly sharded) language model, and the
    per-record confidences in the sets' order (no text), as ``tasks.evaluation.assess`` returns for a classifier.
    One forward pass per text of the model (and of the base for the attacked texts): losses and attack scores come
    from the same token statistics."""
    from tasks.training import lm

    attacked = {"forget": forget, "test": subsample(test, mink_sample, cfg.seed)}
    stats = {name: lm.token_stats(models, tokenizer, s.texts, cfg, device) for name, s in attacked.items()}
    losses = {name: np.array([lm_metrics.mean_nll(s.logprob) for s in values]) for name, values in stats.items()}
    losses["retain"] = lm.record_losses(models, tokenizer, retain.texts, cfg, device)
    out: dict[str, Any] = {k: v for name, values in losses.items() if len(values)
                           for k, v in utility(values, name).items()}
    scores = {name: lm_metrics.membership_scores(stats[name], s.texts,
                                                 reference_stats(models, tokenizer, s.texts, cfg, device))
              for name, s in attacked.items()}
    for attack in ATTACKS:
        if attack in scores["forget"]:
            out[f"mia_{attack}_auc"] = membership_auc(scores["forget"][attack], scores["test"][attack])
            out[f"mia_{attack}_tpr_at_1fpr"] = tpr_at_fpr(scores["forget"][attack], scores["test"][attack])
    memorised = verbatim(models, tokenizer, forget, cfg, device)
    out.update({"verbatim_rouge_l": memorised["rouge_l"], "verbatim_rouge_l_ci95": memorised["ci95"],
                "verbatim_records": memorised["n"]})
    out["forget_losses"] = losses["forget"].tolist()
    out["forget_confidence"] = (-losses["forget"]).tolist()
    out["population_confidence"] = (-losses["test"]).tolist()
    return out

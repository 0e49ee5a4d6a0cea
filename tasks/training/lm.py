"""Causal language models: fine-tuning on texts, and what the unlearning evaluation reads from them.

The model is SmolLM2-135M-Instruct with LoRA on the attention query and value projections by default, or a tiny
Llama built from a config for tests (``tiny-lm``); building, caching, saving and loading them is
``tasks.training.lm_weights`` (re-exported here, so callers have one module). Every text is ``BOS text EOS``, so
the first word is predicted too. Beside training (``fit_lm``) the module gives per-token log-probability
statistics (loss, Min-K%++), per-text losses and greedy continuations (MUSE's verbatim probe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from tasks.batching import length_batches
from tasks.lm_metrics import mean_nll
from tasks.training.epochs import OnEpoch, run_epochs
from tasks.training.lm_weights import LM_MODELS, build_lm, load_lm, save_lm, smollm2_dir

__all__ = ["LM_MODELS", "TokenStats", "batch_loss", "build_lm", "continuations", "encode", "fit_lm",
           "fitted_max_length", "load_lm", "padded", "record_losses", "save_lm", "sequence_logprobs",
           "shard_continuations", "smollm2_dir", "token_stats"]  # the weights' half lives in lm_weights

log = logging.getLogger(__name__)



def encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text as the model trains on it, ``BOS text EOS``, cut to ``max_length`` (a cut text loses
    its EOS: the model must not learn that it ends there)."""
    body = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    return [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id][:max_length] for ids in body]


def fitted_max_length(tokenizer: Any, texts: list[str], cap: int) -> int:
    """The 95th-percentile encoded length of ``texts`` (at least 8, at most ``cap``): the rare long texts are cut
    rather than setting every batch's token budget."""
    lengths = [len(ids) for ids in encode(tokenizer, texts, cap)] or [0]
    return min(cap, max(8, int(np.ceil(np.percentile(lengths, 95)))))


def padded(tokenizer: Any, ids: list[list[int]], device: str) -> dict[str, Any]:
    """A right-padded batch: ``input_ids``, ``attention_mask`` and ``labels`` (the ids, -100 at padding), each
    ``(batch, longest)`` on ``device``. Padding is masked by position, not id: SmolLM2's pad token is its EOS."""
    import torch

    input_ids = torch.full((len(ids), max(map(len, ids))), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _logits_targets(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Next-token logits ``(batch, T-1, vocab)`` at predicted positions 1..T-1 and their targets ``(batch, T-1)``
    (-100 at padding)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, :-1].float(), batch["labels"][:, 1:]


def _token_logprobs(model: Any, batch: dict[str, Any]) -> Any:
    """Log-probability of each actual next token, ``(batch, T-1)``, 0 where the target is padding."""
    import torch

    logits, targets = _logits_targets(model, batch)
    return -torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # 0 at -100


def batch_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean next-token NLL over the real (non-pad) predicted tokens of a ``padded`` batch; differentiable."""
    return -_token_logprobs(model, batch).sum() / (batch["labels"][:, 1:] != -100).sum()


def sequence_logprobs(model: Any, batch: dict[str, Any]) -> Any:
    """Sum of token log-probabilities of each sequence of a ``padded`` batch, shape ``(batch,)``; differentiable
    (NPO compares it with a reference model's)."""
    return _token_logprobs(model, batch).sum(-1)


def _batches(encoded: list[list[int]], batch_size: int, max_length: int) -> list[list[int]]:
    return list(length_batches([len(e) for e in encoded], batch_size * max_length, batch_size))


def _group_loss(model: Any, tokenizer: Any, ids: list[list[int]], device: str) -> Any:
    return batch_loss(model, padded(tokenizer, ids, device))


def fit_lm(texts: list[str], cfg: Any, device: str, on_epoch: OnEpoch | None = None) -> tuple[Any, Any, int]:
    """Fine-tune ``cfg.model`` on ``texts`` (next-token loss; texts cut at the length fitted to them).

    Args:
        texts: the training texts.
        cfg: a ``TrainConfig`` (model, lora_rank, lr, epochs, batch_size, max_length cap, seed).
        device: torch device.
        on_epoch: called as ``on_epoch(epoch, model, tokenizer, mean_train_loss)`` after each epoch.

    Returns:
        The model, its tokenizer and the number of examples processed (texts x epochs).
    """
    tokenizer, model = build_lm(cfg, device)
    max_length = fitted_max_length(tokenizer, texts, cfg.max_length)
    encoded = encode(tokenizer, texts, max_length)
    groups = _batches(encoded, cfg.batch_size, max_length)
    rng = np.random.default_rng(cfg.seed)

    def batches() -> list[tuple[list[int], Callable[[], Any]]]:
        rng.shuffle(groups)
        return [(idx, partial(_group_loss, model, tokenizer, [encoded[i] for i in idx], device)) for idx in groups]

    seen = run_epochs(model, tokenizer, cfg.lr, cfg.epochs, batches, on_epoch)
    return model, tokenizer, seen


@dataclass
class TokenStats:
    """One text's per-token statistics at predicted positions 1..n-1 (float64)."""

    logprob: np.ndarray  # log p(actual next token)
    mean: np.ndarray  # mu = E_{z~p}[log p(z)] over the next-token distribution (Min-K%++ normalises by it)
    std: np.ndarray  # sigma = sqrt(E_{z~p}[(log p(z))^2] - mu^2)


def _token_stats_one(model: Any, tokenizer: Any, encoded: list[list[int]], cfg: Any, device: str) -> list[TokenStats]:
    import torch

    model.eval()
    out: list[TokenStats | None] = [None] * len(encoded)
    with torch.inference_mode():
        for idx in _batches(encoded, cfg.batch_size, cfg.max_length):
            logits, targets = _logits_targets(model, padded(tokenizer, [encoded[i] for i in idx], device))
            dist = torch.log_softmax(logits, -1)  # (batch, T-1, vocab); at most three such tensors live at once
            del logits
            logprob = dist.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # padding: cut off below
            prob = dist.exp()
            mean = (prob * dist).sum(-1)
            second = (prob * dist.square_()).sum(-1)
            std = (second - mean.square()).clamp_(min=0).sqrt()
            rows = [t.double().cpu().numpy() for t in (logprob, mean, std)]
            for row, i in enumerate(idx):
                n = len(encoded[i]) - 1
                out[i] = TokenStats(rows[0][row, :n], rows[1][row, :n], rows[2][row, :n])
    return out  # type: ignore[return-value]


def token_stats(models: list[Any], tokenizer: Any, texts: list[str], cfg: Any, device: str) -> list[TokenStats]:
    """Per-token statistics of each text (cut at ``cfg.max_length``), averaged over ``models`` (the shards of a
    SISA model); batches of similar length, one batch's logits in memory at a time."""
    encoded = encode(tokenizer, texts, cfg.max_length)
    total = _token_stats_one(models[0], tokenizer, encoded, cfg, device)
    for model in models[1:]:
        for acc, more in zip(total, _token_stats_one(model, tokenizer, encoded, cfg, device), strict=True):
            acc.logprob += more.logprob
            acc.mean += more.mean
            acc.std += more.std
    if len(models) > 1:
        for acc in total:
            acc.logprob /= len(models)
            acc.mean /= len(models)
            acc.std /= len(models)
    return total


def record_losses(models: list[Any], tokenizer: Any, texts: list[str], cfg: Any, device: str) -> np.ndarray:
    """Mean next-token NLL of each text, shape ``(n,)``: the per-record loss membership tests compare."""
    return np.array([mean_nll(s.logprob) for s in token_stats(models, tokenizer, texts, cfg, device)])


def continuations(model: Any, tokenizer: Any, texts: list[str], cfg: Any, device: str, prefix_tokens: int = 8,
                  new_tokens: int = 16) -> list[tuple[list[int], list[int]]]:
    """MUSE's verbatim probe: ``(generated, true)`` ids per text, the greedy continuation of its first
    ``prefix_tokens`` tokens (BOS included) and the text's own next tokens, both at most ``new_tokens`` long and no
    longer than what the text has left; generation stops after an EOS. Texts with at most ``prefix_tokens + 1``
    tokens give ``([], [])``.
    """
    import torch

    encoded = encode(tokenizer, texts, cfg.max_length)
    out: list[tuple[list[int], list[int]]] = [([], []) for _ in texts]
    todo = [i for i, ids in enumerate(encoded) if len(ids) > prefix_tokens + 1]
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(todo), cfg.batch_size):  # every prefix has the same length: no padding needed
            idx = todo[start:start + cfg.batch_size]
            caps = [min(new_tokens, len(encoded[i]) - prefix_tokens) for i in idx]
            prompt = torch.tensor([encoded[i][:prefix_tokens] for i in idx], device=device)
            generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                       max_new_tokens=max(caps), pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id)[:, prefix_tokens:].tolist()
            for i, cap, gen in zip(idx, caps, generated, strict=True):
                gen = gen[:cap]
                if tokenizer.eos_token_id in gen:
                    gen = gen[:gen.index(tokenizer.eos_token_id) + 1]
                out[i] = (gen, encoded[i][prefix_tokens:prefix_tokens + cap])
    return out


def shard_continuations(models: list[Any], tokenizer: Any, texts: list[str], cfg: Any, device: str,
                        prefix_tokens: int = 8, new_tokens: int = 16) -> list[tuple[list[int], list[int]]]:
    """``continuations`` of a SISA model: each next token is the argmax of the shards' averaged log-probabilities
    (the same aggregation as scoring), greedy, without a key-value cache (short continuations, few shards). One
    model: ``continuations``."""
    import torch

    if len(models) == 1:
        return continuations(models[0], tokenizer, texts, cfg, device, prefix_tokens, new_tokens)
    encoded = encode(tokenizer, texts, cfg.max_length)
    out: list[tuple[list[int], list[int]]] = [([], []) for _ in texts]
    todo = [i for i, ids in enumerate(encoded) if len(ids) > prefix_tokens + 1]
    for model in models:
        model.eval()
    with torch.inference_mode():
        for start in range(0, len(todo), cfg.batch_size):
            idx = todo[start:start + cfg.batch_size]
            caps = [min(new_tokens, len(encoded[i]) - prefix_tokens) for i in idx]
            seq = torch.tensor([encoded[i][:prefix_tokens] for i in idx], device=device)
            for _ in range(max(caps)):
                logp = torch.stack([torch.log_softmax(m(input_ids=seq).logits[:, -1].float(), -1) for m in models])
                seq = torch.cat([seq, logp.mean(0).argmax(-1, keepdim=True)], dim=1)
            for row, (i, cap) in enumerate(zip(idx, caps, strict=True)):
                gen = seq[row, prefix_tokens:prefix_tokens + cap].tolist()
                if tokenizer.eos_token_id in gen:
                    gen = gen[:gen.index(tokenizer.eos_token_id) + 1]
                out[i] = (gen, encoded[i][prefix_tokens:prefix_tokens + cap])
    return out

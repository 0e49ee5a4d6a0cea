"""The loop the approximate methods share: ascend on the forget set until its loss reaches a target.

NegGrad+ and SCRUB both change each touched shard model in small optimizer steps and stop as soon as the forget
set's mean loss reaches the source model's held-out loss — the best estimate of the oracle's forget loss
available without training it — so they do not overshoot. They differ only in the step (``max_step``) and in
what follows it (SCRUB's min-steps); the rest lives here once, for classifiers and causal language models alike:
``Loop.loss`` and ``Loop.logprob`` are the task's training loss and a sequence's log-probability.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow.compute as pc

from tasks import layout
from tasks import model_registry as registry
from tasks.storage import Store
from tasks.training import Split, TrainConfig, lora_wrapped, merged
from tasks.training.loop import LogMetrics, record_losses
from tasks.unlearning.base import Fitted, FromSource, UnlearnConfig
from tasks.unlearning.sets import Sets, shard_rows

log = logging.getLogger(__name__)
MaxStep = Callable[[Any, Any], int]  # (encoded forget batch, labels) -> examples it processed


@dataclass
class Loop:
    """One approximate run on one (shard) model: the model being changed, its optimizer, and ``batch(split)``,
    a random batch of a split (encoded inputs, label tensor or None for a language model) from the run's own
    seeded generator."""

    student: Any
    params: list[Any]
    optimizer: Any
    batch: Callable[[Split], tuple[Any, Any]]
    cfg: TrainConfig

    def loss(self, model: Any, batch: Any, y: Any) -> Any:
        """The training loss of ``model`` on a batch: cross-entropy on the labels, or mean token NLL."""
        if self.cfg.is_lm:
            from tasks.training.lm import batch_loss

            return batch_loss(model, batch)
        import torch.nn.functional as F

        return F.cross_entropy(model(**batch).logits, y)

    def logprob(self, model: Any, batch: Any, y: Any) -> Any:
        """Each example's log-probability under ``model``: of its label, or of its text (sum over tokens)."""
        if self.cfg.is_lm:
            from tasks.training.lm import sequence_logprobs

            return sequence_logprobs(model, batch)
        import torch

        return torch.log_softmax(model(**batch).logits, -1).gather(1, y[:, None]).squeeze(1)

    def step(self, loss: Any) -> None:
        """One optimizer step on ``loss``, gradients clipped to norm 1."""
        import torch

        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()


def open_loop(model: Any, tokenizer: Any, cfg: TrainConfig, ucfg: UnlearnConfig, device: str) -> Loop:
    """Seed, then train at ``lr_scale`` of the training learning rate: a LoRA classifier's fresh adapters over its
    merged weights (as trained), a LoRA language model's own adapters (the only weights it saves), all weights
    otherwise."""
    import torch

    torch.manual_seed(cfg.seed)  # dropout decides SCRUB's first max-steps (the student starts as the teacher)
    student = lora_wrapped(model, cfg) if cfg.lora_rank and not cfg.is_lm else model
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr * ucfg.lr_scale)
    rng = np.random.default_rng(cfg.seed)
    return Loop(student, params, optimizer, partial(_batch, tokenizer, rng=rng, cfg=cfg, device=device), cfg)


def _batch(tokenizer: Any, split: Split, rng: np.random.Generator, cfg: TrainConfig, device: str) -> tuple[Any, Any]:
    """A random batch of ``split``: encoded inputs and label tensor (None for a language model: its labels are its
    tokens, in the batch)."""
    import torch

    idx = rng.choice(len(split.ids), min(cfg.batch_size, len(split.ids)), replace=False)
    texts = [split.texts[i] for i in idx]
    if cfg.is_lm:
        from tasks.training.lm import encode, padded

        return padded(tokenizer, encode(tokenizer, texts, cfg.max_length), device), None
    batch = tokenizer(texts, truncation=True, max_length=cfg.max_length, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}, torch.tensor(split.y[idx], device=device)


def kl(student_logits: Any, teacher_logits: Any) -> Any:
    """KL(teacher || student) per batch, from logits."""
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1), log_target=True,
                    reduction="batchmean")


def ascend(loop: Loop, tokenizer: Any, forget: Split, cfg: TrainConfig, max_steps: int, target: float, device: str,
           max_step: MaxStep, name: str) -> tuple[int, int]:
    """``max_step`` on random forget batches until the forget set's mean loss reaches ``target`` or ``max_steps``
    steps are done; returns the steps taken and the examples processed (each loss check sees the whole set)."""
    seen, steps = 0, 0
    while steps < max_steps:
        loss_now = float(record_losses([loop.student], tokenizer, forget, cfg, device).mean())
        seen += len(forget.ids)
        if loss_now >= target:
            log.info("%s stopped at step %d: forget loss %.3f >= target %.3f", name, steps, loss_now, target)
            break
        steps += 1
        loop.student.train()
        seen += max_step(*loop.batch(forget))
    return steps, seen


def source_heldout_loss(store: Store, source_ref: str) -> float:
    """The source's mean validation loss (test when it has no validation split): the approximate methods' target."""
    losses = store.read_parquet(layout.model_losses(*registry.split_ref(source_ref)))
    held = losses.filter(pc.equal(losses.column("split"), "validation"))
    if held.num_rows == 0:
        held = losses.filter(pc.equal(losses.column("split"), "test"))
    return float(pc.mean(held.column("loss")).as_py())


class Approximate(FromSource):
    """A gated method: changes each touched shard model until its forget loss reaches the source's held-out loss."""

    exact = False

    def update(self, store: Store, source_ref: str, models: dict[int, Any], tokenizer: Any, sets: Sets,
               ucfg: UnlearnConfig, device: str, on_epoch: LogMetrics) -> Fitted:
        target = source_heldout_loss(store, source_ref)
        seen = 0
        for shard in sets.touched_shards():
            forget = shard_rows(sets.forget, shard, True)  # an unsharded model's forget rows are all in shard 0
            retain = shard_rows(sets.splits["train"], shard, sets.sharded)
            student, n = self.unlearn(models[shard], tokenizer, forget, retain, sets.cfg, ucfg, target, device)
            models[shard] = (student if sets.cfg.is_lm else merged(student)).eval()
            seen += n
        return Fitted(models, tokenizer, {"history": {}, "examples_processed": seen})

    @abstractmethod
    def unlearn(self, model: Any, tokenizer: Any, forget: Split, retain: Split, cfg: TrainConfig,
                ucfg: UnlearnConfig, target: float, device: str) -> tuple[Any, int]:
        """``model`` changed until ``forget``'s loss reaches ``target`` (see ``ascend``), and the examples seen."""

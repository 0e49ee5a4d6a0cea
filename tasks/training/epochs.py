"""The epoch loop every fine-tuning shares, whatever the model: AdamW over the trainable weights, one optimizer
step per batch, the mean training loss reported after each epoch.

A classifier (``tasks.training.loop``) and a causal language model (``tasks.training.lm``) differ only in how they
batch their texts and what a batch's loss is; they hand both in as ``batches``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

OnEpoch = Callable[[int, Any, Any, float], None]  # (epoch, model, tokenizer, mean train loss)
Batches = Callable[[], Iterable[tuple[Sequence[int], Callable[[], Any]]]]  # per epoch: (rows, loss of those rows)


def run_epochs(model: Any, tokenizer: Any, lr: float, epochs: int, batches: Batches,
               on_epoch: OnEpoch | None = None) -> int:
    """Train ``model`` for ``epochs``: each epoch, ``batches()`` yields a batch's rows and a closure computing its
    (differentiable) loss. Returns the examples processed."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    seen = 0
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for rows, loss_of in batches():
            loss = loss_of()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        seen += count
        if on_epoch:
            on_epoch(epoch, model, tokenizer, total / max(1, count))
    return seen

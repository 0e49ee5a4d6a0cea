"""SISA (Bourtoule et al., 2021): retrain only the shards that held deleted records; keep the others.

Exact: shards follow owners at selection time, so one owner's deletion usually touches one shard, and the
untouched shards never saw the records. Needs a model trained with ``--shards S``.
"""

from __future__ import annotations

from typing import Any

from tasks.storage import Store
from tasks.training import train_models
from tasks.training.loop import LogMetrics
from tasks.unlearning.base import Fitted, FromSource, UnlearnConfig
from tasks.unlearning.sets import Sets


class Sisa(FromSource):
    name = "sisa"
    exact = True
    sharded_only = True

    def update(self, store: Store, source_ref: str, models: dict[int, Any], tokenizer: Any, sets: Sets,
               ucfg: UnlearnConfig, device: str, on_epoch: LogMetrics) -> Fitted:
        touched = sets.touched_shards()
        fresh, _, info = train_models(sets.splits, sets.cfg, len(sets.labels), device, on_epoch, set(touched))
        return Fitted({s: m for s, m in models.items() if s not in touched} | fresh, tokenizer, info)

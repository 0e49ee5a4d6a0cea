"""Retrain: a model trained from scratch on the dataset without the request's records.

Exact, and the costliest method; it is also the oracle every other method is judged against (registered with
``custody.role=oracle``, never served unless it is the method that passed).
"""

from __future__ import annotations

from tasks.storage import Store
from tasks.training import train_models
from tasks.training.loop import LogMetrics
from tasks.unlearning.base import Fitted, Method, UnlearnConfig
from tasks.unlearning.sets import Sets


class Retrain(Method):
    name = "retrain"
    exact = True

    def fit(self, store: Store, source_ref: str, sets: Sets, ucfg: UnlearnConfig, device: str,
            on_epoch: LogMetrics) -> Fitted:
        models, tokenizer, info = train_models(sets.splits, sets.cfg, len(sets.labels), device, on_epoch)
        return Fitted(models, tokenizer, info)

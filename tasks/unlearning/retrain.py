"""Retrain: a model trained from scratch on the dataset without the request's records.

Exact, and the costliest method; it is also the oracle every other method is judged against (registered with
``custody.role=oracle``, never served unless it is the method that passed). ``SeedOracle`` is the same retrain
with the next seed: when configured (``oracle_seeds=2``) it measures the noise floor, how far two oracles that
differ only by seed are apart on the forget records.
"""

from __future__ import annotations

from dataclasses import replace

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


class SeedOracle(Retrain):
    name = "retrain-seed2"

    def fit(self, store: Store, source_ref: str, sets: Sets, ucfg: UnlearnConfig, device: str,
            on_epoch: LogMetrics) -> Fitted:
        return super().fit(store, source_ref, replace(sets, cfg=replace(sets.cfg, seed=sets.cfg.seed + 1)), ucfg,
                           device, on_epoch)

"""What every unlearning method is: a way to make a version of a source model without a request's records.

A method implements ``fit`` — the models (one per shard) that no longer hold the forget set, with its cost — and
inherits ``run``, which tracks that as an MLflow run, registers the result tagged with the request, the source and
the method, and returns its ref. ``run`` first looks for a version already registered for the same step, so a
request interrupted mid-way and re-run never registers anything twice.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tasks import model_registry as registry
from tasks.config import get_settings
from tasks.errors import unknown_name
from tasks.storage import Store
from tasks.training import load_version, register, start_run
from tasks.training.loop import LogMetrics
from tasks.unlearning.gate import GateConfig
from tasks.unlearning.sets import Sets

AUTO = "auto"
METHODS = (AUTO, "sisa", "retrain", "neggrad-plus", "npo", "scrub")


@dataclass(frozen=True)
class UnlearnConfig:
    """How to unlearn. ``auto`` is SISA for sharded models, else NegGrad+ for a classifier and NPO for a language
    model (all gated)."""

    method: str = AUTO
    max_steps: int = 40
    lr_scale: float = 0.5  # of the training learning rate
    alpha: float = 0.5  # NegGrad+ and NPO: weight of the forget-set term against the retain-set descent
    beta: float = 0.1  # NPO's inverse temperature (the paper's default)
    retain_sample: int = 1000  # retain records used for evaluation
    mink_sample: int = 500  # test records the Min-K%-style attack sees (nine forward passes each)
    oracle_seeds: int = 1  # 2: also retrain with the next seed, to measure the noise floor (twice the oracle's cost)
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown_name("method", self.method, METHODS)
        if self.oracle_seeds not in (1, 2):
            raise unknown_name("oracle_seeds", str(self.oracle_seeds), ("1", "2"))


@dataclass
class Fitted:
    """A method's result before registration: shard -> model, the tokenizer, and ``history``,
    ``examples_processed`` and ``train_seconds`` (the method's own work, not loading the source)."""

    models: dict[int, Any]
    tokenizer: Any
    info: dict[str, Any]


class Method(ABC):
    """One unlearning method. ``exact`` methods never let the deleted records reach the model, so the gate
    accepts them without a tolerance; ``sharded_only`` ones need a model trained with shards."""

    name: ClassVar[str]
    exact: ClassVar[bool]
    sharded_only: ClassVar[bool] = False

    @abstractmethod
    def fit(self, store: Store, source_ref: str, sets: Sets, ucfg: UnlearnConfig, device: str,
            on_epoch: LogMetrics) -> Fitted:
        """Models of ``source_ref`` without ``sets.forget``."""

    def run(self, store: Store, request: dict[str, Any], source_ref: str, sets: Sets, ucfg: UnlearnConfig,
            role: str = registry.CANDIDATE) -> str:
        """Register this method's version of ``source_ref`` without the request's records (idempotent)."""
        import mlflow

        request_id = request["request_id"]
        existing = registry.find_version(request_id, source_ref, self.name)
        if existing:
            return existing
        tags = {registry.REQUEST_TAG: request_id, registry.FROM_TAG: source_ref, registry.METHOD_TAG: self.name,
                registry.ROLE_TAG: role}
        with start_run(sets.cfg, sets.selection, registry.UNLEARNING_EXPERIMENT,
                       f"{self.name} {source_ref} {request_id}", tags) as run:
            fitted = self.fit(store, source_ref, sets, ucfg, get_settings().resolved_device(),
                              lambda step, m: mlflow.log_metrics(m, step=step))
            info = fitted.info
            notes = (f"\n\n## Unlearning\n\nMade from {source_ref} by **{self.name}** for deletion request "
                     f"{request_id} ({len(sets.forget.ids)} trained-on records removed).")
            summary = register(store, run, sets.cfg, sets.splits, sets.labels, sets.selection, fitted.models,
                               fitted.tokenizer, info,
                               {**tags, registry.UNLEARN_SECONDS_TAG: f"{info['train_seconds']:.3f}",
                                registry.EXAMPLES_TAG: str(info["examples_processed"])}, notes)
        return summary["ref"]


class FromSource(Method, ABC):
    """A method that changes the source's own shard models (SISA, the approximate ones) rather than training
    from scratch; its cost is timed from after the source is loaded (a first load imports a lot)."""

    def fit(self, store: Store, source_ref: str, sets: Sets, ucfg: UnlearnConfig, device: str,
            on_epoch: LogMetrics) -> Fitted:
        models, tokenizer = load_version(source_ref)
        start = time.perf_counter()
        fitted = self.update(store, source_ref, models, tokenizer, sets, ucfg, device, on_epoch)
        fitted.info["train_seconds"] = time.perf_counter() - start
        return fitted

    @abstractmethod
    def update(self, store: Store, source_ref: str, models: dict[int, Any], tokenizer: Any, sets: Sets,
               ucfg: UnlearnConfig, device: str, on_epoch: LogMetrics) -> Fitted:
        """The source's ``models`` (shard -> model) without ``sets.forget``; ``train_seconds`` is set by ``fit``."""

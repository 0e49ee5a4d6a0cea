"""What a training run learns from: its config, and the train/validation/test splits of a dataset version.

``load_splits`` reads ``NAME@VERSION``'s manifest and joins the texts of its records through ``tasks.passed`` (the
current policy's redacted text, deleted records left out), so a model never sees a text the policy or a deletion
took away. A classifier learns the labelled records; a causal language model (``task="lm"``) learns every text,
labelled or not (the Health News tweets have no label: they are a language-modelling corpus).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks import passed
from tasks.errors import Fatal, unknown_name
from tasks.selection import load_manifest
from tasks.storage import Store
from tasks.tables import join_on_id

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
CLASSIFIERS = ("minilm", "tiny")  # sequence classifiers
LANGUAGE_MODELS = ("smollm2", "tiny-lm")  # causal language models (tasks.training.lm)
TASKS = {"classify": CLASSIFIERS, "lm": LANGUAGE_MODELS}


@dataclass(frozen=True)
class TrainConfig:
    dataset: str  # NAME@VERSION
    model: str = "minilm"  # minilm | tiny (classifiers) | smollm2 | tiny-lm (causal language models)
    lora_rank: int = 8  # 0 = full fine-tuning
    shards: int = 1
    epochs: int = 2
    lr: float = 2e-3  # LoRA adapters and the new head tolerate a higher rate than full fine-tuning
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    registered_model: str | None = None  # default: <dataset name>-classifier, or -lm for a language model
    task: str = ""  # classify | lm; empty: the model's task

    def __post_init__(self) -> None:
        model_task = next((t for t, models in TASKS.items() if self.model in models), None)
        if model_task is None:
            raise unknown_name("model", self.model, tuple(m for models in TASKS.values() for m in models))
        if self.task and self.task != model_task:
            raise Fatal(f"model {self.model!r} is a {model_task!r} model, not {self.task!r}")
        object.__setattr__(self, "task", model_task)

    @property
    def is_lm(self) -> bool:
        return self.task == "lm"

    def default_name(self, dataset_name: str) -> str:
        """The registered model's name unless ``registered_model`` says otherwise."""
        return self.registered_model or f"{dataset_name}-{'lm' if self.is_lm else 'classifier'}"


@dataclass
class Split:
    """One split's records in manifest order: ids, texts, label indices and (in sharded mode) shards."""

    ids: list[str]
    texts: list[str]
    y: np.ndarray
    shard: np.ndarray


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def load_splits(store: Store, cfg: TrainConfig) -> tuple[dict[str, Split], list[str], dict[str, Any]]:
    """Train/validation/test of the manifest with texts; deleted records are dropped from every split. A language
    model has no labels (``[]``, every ``y`` 0) and keeps unlabelled records.

    Raises:
        Fatal: the shard count does not match the selection, fewer than two labels for a classifier, or an empty
            train split.
    """
    manifest, selection = load_manifest(store, cfg.dataset)
    manifest_shards = selection["config"]["shards"]
    if cfg.shards not in (1, manifest_shards):
        raise Fatal(f"{cfg.dataset} was selected with {manifest_shards} shards; train with --shards 1 or "
                    f"{manifest_shards}, or select again with --shards {cfg.shards}")
    rows = join_on_id(manifest, passed.read_all(store, ["record_id", "text"]))
    if rows.num_rows < manifest.num_rows:
        log.warning("%d manifest records were deleted or no longer pass the policy and are skipped",
                 manifest.num_rows - rows.num_rows)
    labels = [] if cfg.is_lm else sorted({lab for lab in rows.column("label").to_pylist() if lab is not None})
    if not cfg.is_lm and len(labels) < 2:
        raise Fatal(f"{cfg.dataset}: need at least two labels to train a classifier, found {labels}")
    splits = {name: _split(rows, name, labels, cfg.shards > 1, cfg.is_lm) for name in SPLITS}
    if not splits["train"].ids:
        raise Fatal(f"{cfg.dataset} has no trainable records in its train split")
    return splits, labels, selection


def _split(rows: pa.Table, name: str, labels: list[str], sharded: bool, unlabelled: bool) -> Split:
    """The rows of split ``name`` (only labelled ones unless ``unlabelled``); every row is in shard 0 unless
    ``sharded``."""
    part = rows.filter(pa.array(np.array(rows.column("split").to_pylist()) == name))
    if not unlabelled:
        part = part.filter(pa.array([lab is not None for lab in part.column("label").to_pylist()], pa.bool_()))
    shard = np.array(part.column("shard").to_pylist(), np.int64) if sharded else np.zeros(part.num_rows, np.int64)
    y = np.zeros(part.num_rows, np.int64) if unlabelled else np.array(
        [labels.index(lab) for lab in part.column("label").to_pylist()], np.int64)
    return Split(part.column("record_id").to_pylist(), part.column("text").to_pylist(), y, shard)


def subsample(split: Split, n: int, seed: int) -> Split:
    """At most ``n`` rows of ``split``, a fixed random subset for ``seed``."""
    if len(split.ids) <= n:
        return split
    return take(split, np.sort(np.random.default_rng(seed).choice(len(split.ids), n, replace=False)))


def take(split: Split, idx: np.ndarray) -> Split:
    """The rows ``idx`` of ``split``, in that order."""
    return Split([split.ids[i] for i in idx], [split.texts[i] for i in idx], split.y[idx], split.shard[idx])

"""What a training run learns from: its config, and the train/validation/test splits of a dataset version.

``load_splits`` reads ``NAME@VERSION``'s manifest and joins the texts of its records through ``tasks.passed`` (the
current policy's redacted text, deleted records left out), so a model never sees a text the policy or a deletion
took away.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks import passed
from tasks.errors import Fatal
from tasks.selection import load_manifest
from tasks.storage import Store
from tasks.tables import join_on_id

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str  # NAME@VERSION
    model: str = "minilm"  # minilm | tiny
    lora_rank: int = 8  # 0 = full fine-tuning
    shards: int = 1
    epochs: int = 2
    lr: float = 2e-3  # LoRA adapters and the new head tolerate a higher rate than full fine-tuning
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    registered_model: str | None = None  # default: <dataset name>-classifier


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
    """Train/validation/test of the manifest with texts; deleted records are dropped from every split.

    Raises:
        Fatal: the shard count does not match the selection, fewer than two labels, or an empty train split.
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
    labels = sorted({lab for lab in rows.column("label").to_pylist() if lab is not None})
    if len(labels) < 2:
        raise Fatal(f"{cfg.dataset}: need at least two labels to train a classifier, found {labels}")
    splits = {name: _split(rows, name, labels, cfg.shards > 1) for name in SPLITS}
    if not splits["train"].ids:
        raise Fatal(f"{cfg.dataset} has no trainable records in its train split")
    return splits, labels, selection


def _split(rows: pa.Table, name: str, labels: list[str], sharded: bool) -> Split:
    """The labelled rows of split ``name``; every row is in shard 0 unless ``sharded``."""
    part = rows.filter(pa.array(np.array(rows.column("split").to_pylist()) == name))
    part = part.filter(pa.array([lab is not None for lab in part.column("label").to_pylist()], pa.bool_()))
    shard = np.array(part.column("shard").to_pylist(), np.int64) if sharded else np.zeros(part.num_rows, np.int64)
    return Split(part.column("record_id").to_pylist(), part.column("text").to_pylist(),
                 np.array([labels.index(lab) for lab in part.column("label").to_pylist()]), shard)


def subsample(split: Split, n: int, seed: int) -> Split:
    """At most ``n`` rows of ``split``, a fixed random subset for ``seed``."""
    if len(split.ids) <= n:
        return split
    return take(split, np.sort(np.random.default_rng(seed).choice(len(split.ids), n, replace=False)))


def take(split: Split, idx: np.ndarray) -> Split:
    """The rows ``idx`` of ``split``, in that order."""
    return Split([split.ids[i] for i in idx], [split.texts[i] for i in idx], split.y[idx], split.shard[idx])

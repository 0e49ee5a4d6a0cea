"""A small proxy classifier on frozen MiniLM embeddings, shared by the training-dynamics, influence and
poisoning scorers.

A linear softmax head is trained with minibatch SGD for a few epochs on a labelled source; after every epoch
we keep the logits of every example and a checkpoint (weights and learning rate, as safetensors). Those are
all the dynamics (loss, EL2N, AUM) and TracIn need. A stable-hash slice of the examples is held out as the
target set for influence and is never trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks import passed
from tasks.errors import Fatal
from tasks.scoring import base
from tasks.scoring.contract import ScorerRun
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.scoring.embeddings import embedding_matrix
from tasks.storage import Store
from tasks.tables import join_on_id


@dataclass(frozen=True)
class ProxyConfig:
    """Which labelled source to train on, and how."""

    source: str = "rotten_tomatoes"
    labels: tuple[str, ...] = ("fresh", "rotten")
    epochs: int = 6
    lr: float = 2.0
    batch_size: int = 64
    target_fraction: float = 0.1
    seed: int = 0


INPUTS = ("label", "text", "extra")  # record columns the proxy-based scorers read


@dataclass
class ProxyData:
    record_ids: list[str]
    x: np.ndarray  # (n, 384) normalised embeddings
    y: np.ndarray  # (n,) class indices
    is_target: np.ndarray  # (n,) held-out target-set mask
    texts: list[str]  # validated text (redacted where the policy says so)
    extra: list[str | None]  # unmapped source fields as JSON


@dataclass
class ProxyRun:
    logits: np.ndarray  # (epochs, n, classes): every example, after every epoch
    weights: list[np.ndarray]  # per epoch: (classes, 385) with the bias as the last column
    lrs: list[float]


def in_target(record_id: str, fraction: float) -> bool:
    return int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def load_data(run: ScorerRun, cfg: ProxyConfig) -> ProxyData:
    """Labelled, usable records of ``cfg.source`` joined with their embeddings (latest run)."""
    parts = passed.partitions(run.store, [cfg.source])
    if not parts:
        raise Fatal(f"no records of source {cfg.source!r}")
    records = pa.concat_tables([run.records(p) for p in parts])
    emb = base.read_attribute(run.store, EMBEDDINGS, columns=["record_id", "embedding"])
    joined = join_on_id(records, emb).sort_by("record_id")
    labels = joined.column("label").to_pylist()
    keep = [i for i, lab in enumerate(labels) if lab in cfg.labels]
    joined = joined.take(pa.array(keep, pa.int64()))
    ids = joined.column("record_id").to_pylist()
    y = np.array([cfg.labels.index(lab) for lab in joined.column("label").to_pylist()], dtype=np.int64)
    return ProxyData(ids, embedding_matrix(joined), y, np.array([in_target(r, cfg.target_fraction) for r in ids]),
                     joined.column("text").to_pylist(), joined.column("extra").to_pylist())


def embeddings_identity(store: Store, what: str) -> str:
    """A model identity naming the embeddings run it builds on, so a new embeddings run means a new run id."""
    return f"{what} (run {base.latest_run(store, EMBEDDINGS)})"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])


def train(x: np.ndarray, y: np.ndarray, train_mask: np.ndarray, cfg: ProxyConfig, n_classes: int) -> ProxyRun:
    """Minibatch SGD on cross-entropy for a linear head; logits of all rows recorded after each epoch."""
    rng = np.random.default_rng(cfg.seed)
    xb = with_bias(x.astype(np.float64))
    w = np.zeros((n_classes, xb.shape[1]))
    onehot = np.eye(n_classes)[y]
    train_idx = np.flatnonzero(train_mask)
    logits, weights, lrs = [], [], []
    for epoch in range(cfg.epochs):
        lr = cfg.lr * (1 - epoch / cfg.epochs)  # linear decay
        order = rng.permutation(train_idx)
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            grad = (softmax(xb[batch] @ w.T) - onehot[batch]).T @ xb[batch] / len(batch)  # (classes, 385)
            w -= lr * grad
        logits.append(xb @ w.T)
        weights.append(w.copy())
        lrs.append(lr)
    return ProxyRun(np.stack(logits), weights, lrs)


def checkpoint_tensors(run: ProxyRun) -> dict[str, Any]:
    """Checkpoints as named arrays for safetensors (never pickle)."""
    out = {f"epoch{e}.weight": w.astype(np.float32) for e, w in enumerate(run.weights)}
    out["lrs"] = np.array(run.lrs, dtype=np.float32)
    return out

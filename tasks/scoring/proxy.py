"""A small proxy classifier on frozen MiniLM embeddings, shared by the training-dynamics, influence and
poisoning scorers.

A linear softmax head is trained with minibatch SGD for a few epochs on a labelled source; after every epoch
we keep the logits of every example and a checkpoint (weights and learning rate, as safetensors). Those are
all the dynamics (loss, EL2N, AUM) and TracIn need. A stable-hash slice of the examples is held out as the
target set for influence and is never trained on.

Memory is bounded whatever the source's size: the four scorers built on the proxy work on at most
``max_records`` examples, a stable sample by record-id hash (the same records every run, whatever order the
partitions come in), read partition by partition with only the sampled rows' embeddings kept. A source within
the cap is scored whole; above it, records outside the sample get no proxy-based score, and the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks import layout, passed
from tasks.errors import Fatal
from tasks.ids import unit_interval
from tasks.scoring import base
from tasks.scoring.contract import ScorerRun
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.scoring.embeddings import embedding_matrix
from tasks.storage import Store
from tasks.tables import join_on_id, one_of


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
    max_records: int = 200_000  # the sample's cap: ~0.6 GB of float64 features (384 + bias) in ``train``


INPUTS = ("label", "text", "extra")  # record columns the proxy-based scorers read


@dataclass
class ProxyData:
    record_ids: list[str]
    x: np.ndarray  # (n, 384) normalised embeddings
    y: np.ndarray  # (n,) class indices
    is_target: np.ndarray  # (n,) held-out target-set mask
    texts: list[str]  # validated text (redacted where the policy says so)
    extra: list[str | None]  # unmapped source fields as JSON
    labelled: int = 0  # labelled usable records of the source: more than len(record_ids) when sampled

    def sample_summary(self) -> dict[str, int | bool]:
        """What a run's summary says of its sample."""
        return {"labelled_records": self.labelled, "sampled": self.labelled > len(self.record_ids)}


@dataclass
class ProxyRun:
    logits: np.ndarray  # (epochs, n, classes): every example, after every epoch
    weights: list[np.ndarray]  # per epoch: (classes, 385) with the bias as the last column
    lrs: list[float]


def in_target(record_id: str, fraction: float) -> bool:
    return unit_interval(record_id, 8) < fraction


def sample_key(record_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each record's place in the stable sample (uniform in [0, 1), independent of ``in_target``'s hash)."""
    return np.array([unit_interval(f"proxy-sample\x1f{r}", 8) for r in record_ids.to_pylist()], dtype=np.float64)


def _labelled_sample(run: ScorerRun, cfg: ProxyConfig, parts: list[layout.Partition]) -> tuple[pa.Table, int]:
    """The labelled usable records of ``parts`` with their embeddings, at most ``cfg.max_records`` of them (the
    smallest sample keys), one partition in memory at a time; and how many labelled records there were."""
    emb_run, labels = base.latest_run(run.store, EMBEDDINGS), pa.array(cfg.labels, pa.string())
    kept: list[pa.Table] = []
    labelled, cutoff = 0, 1.0
    for part in parts:
        records = run.records(part)
        records = records.filter(one_of(records.column("label"), labels))
        labelled += records.num_rows
        keys = sample_key(records.column("record_id"))
        records = records.append_column("sample_key", pa.array(keys)).filter(pa.array(keys < cutoff))
        emb_key = layout.attribute(EMBEDDINGS, emb_run, part)
        if not records.num_rows or not run.store.exists(emb_key):  # ingested after the embeddings run: none yet
            continue
        emb = run.store.read_parquet(emb_key, ["record_id", "embedding"])
        kept.append(join_on_id(records, emb))
        if sum(t.num_rows for t in kept) > cfg.max_records:  # keep the cap's smallest keys; tighten the cutoff
            merged = pa.concat_tables(kept).sort_by("sample_key").slice(0, cfg.max_records)
            kept, cutoff = [merged], merged.column("sample_key")[-1].as_py()
    joined = pa.concat_tables(kept) if kept else None
    if joined is None or not joined.num_rows:
        raise Fatal(f"no labelled records of source {cfg.source!r} with embeddings (labels {list(cfg.labels)})")
    return joined.drop(["sample_key"]), labelled


def load_data(run: ScorerRun, cfg: ProxyConfig) -> ProxyData:
    """Labelled, usable records of ``cfg.source`` joined with their embeddings (latest run): all of them, or a
    stable sample of ``cfg.max_records`` when there are more (``ProxyData.labelled`` says how many)."""
    parts = passed.partitions(run.store, [cfg.source])
    if not parts:
        raise Fatal(f"no records of source {cfg.source!r}")
    joined, labelled = _labelled_sample(run, cfg, parts)
    joined = joined.sort_by("record_id")
    ids = joined.column("record_id").to_pylist()
    y = np.array([cfg.labels.index(lab) for lab in joined.column("label").to_pylist()], dtype=np.int64)
    return ProxyData(ids, embedding_matrix(joined), y, np.array([in_target(r, cfg.target_fraction) for r in ids]),
                     joined.column("text").to_pylist(), joined.column("extra").to_pylist(), labelled)


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

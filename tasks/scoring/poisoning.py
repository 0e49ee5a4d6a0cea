"""Poisoning and outlier signals: per-class spectral signatures and embedding kNN label disagreement.

Spectral signature (Tran et al. 2018): within each class, centre the representations and project on the top
singular direction; poisoned examples that share a trigger line up along it, so the squared projection is
the score. kNN disagreement: the fraction of an example's nearest neighbours (cosine, MiniLM embeddings)
that carry another label; flipped labels and triggers planted into the other class stand out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.scoring import base, proxy
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.storage import Store

NAME = "poisoning"


@dataclass(frozen=True)
class PoisoningConfig(proxy.ProxyConfig):
    k: int = 10
    block: int = 2048


def spectral_signature(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared projection of each centred example on its class's top singular direction."""
    scores = np.zeros(len(x))
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        centred = x[rows] - x[rows].mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        scores[rows] = (centred @ vt[0]) ** 2
    return scores


def knn_disagreement(x: np.ndarray, y: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Fraction of the ``k`` most similar other rows (rows are normalised) with a different label."""
    out = np.zeros(len(x))
    k = min(k, len(x) - 1)
    if k <= 0:
        return out
    for lo in range(0, len(x), block):
        sims = x[lo:lo + block] @ x.T
        sims[np.arange(sims.shape[0]), np.arange(lo, lo + sims.shape[0])] = -np.inf
        nearest = np.argpartition(-sims, k, axis=1)[:, :k]
        out[lo:lo + block] = (y[nearest] != y[lo:lo + block, None]).mean(1)
    return out


def run(store: Store, cfg: PoisoningConfig) -> dict[str, Any]:
    identity = f"all-MiniLM-L6-v2 embeddings (run {base.latest_run(store, EMBEDDINGS)})"
    rid = base.run_id(NAME, cfg, identity, store)
    if (done := base.cached_run(store, NAME, rid)) is not None:
        return done
    data = proxy.load_data(store, cfg)
    table = pa.table({"record_id": data.record_ids,
                      "spectral": spectral_signature(data.x, data.y).astype(np.float32),
                      "knn_disagreement": knn_disagreement(data.x, data.y, cfg.k, cfg.block).astype(np.float32)})
    store.write_parquet(f"attributes/{NAME}/{rid}/source={cfg.source}/all.parquet", table)
    summary = {"records": len(data.record_ids)}
    base.write_run(store, NAME, rid, cfg, identity, summary)
    return {"scorer": NAME, "run_id": rid, **summary}

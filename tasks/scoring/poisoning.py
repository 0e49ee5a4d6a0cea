"""Poisoning and outlier signals: spectral signatures, kNN label disagreement, shared-nearest-neighbour density.

Spectral signature (Tran et al. 2018): within each class, centre the representations and project on the top
singular direction; poisoned examples that share a trigger line up along it, so the squared projection is
the score. kNN disagreement: the fraction of an example's nearest neighbours (cosine, MiniLM embeddings)
that carry another label; flipped labels stand out. Shared-nearest-neighbour density (label-free): examples
carrying a common trigger crowd into a clique; it found 1% planted trigger examples with AUC 0.94 on Rotten
Tomatoes, where spectral signatures were at chance (``bench/scoring_signals.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tasks.scoring import proxy
from tasks.scoring.contract import Scored, Scorer, ScorerRun, Whole
from tasks.scoring.embeddings import NAME as EMBEDDINGS

NAME = "poisoning"
MODEL = "all-MiniLM-L6-v2 embeddings"


@dataclass(frozen=True)
class PoisoningConfig(proxy.ProxyConfig):
    k: int = 10
    snn_k: int = 50
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


def nearest_neighbours(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Indices of each row's ``k`` most similar other rows, shape ``(n, k)`` (rows are normalised)."""
    k = min(k, len(x) - 1)
    out = np.zeros((len(x), max(k, 0)), dtype=np.int64)
    if k <= 0:
        return out
    for lo in range(0, len(x), block):
        sims = x[lo:lo + block] @ x.T
        sims[np.arange(sims.shape[0]), np.arange(lo, lo + sims.shape[0])] = -np.inf
        out[lo:lo + block] = np.argpartition(-sims, k, axis=1)[:, :k]
    return out


def knn_label_shares(neighbours: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of each class among each row's neighbours, shape ``(n, classes)``."""
    if neighbours.shape[1] == 0:
        return np.full((len(y), n_classes), 1.0 / n_classes)
    return np.stack([(y[neighbours] == c).mean(1) for c in range(n_classes)], axis=1)


def knn_disagreement(x: np.ndarray, y: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Fraction of the ``k`` most similar other rows with a different label."""
    shares = knn_label_shares(nearest_neighbours(x, k, block), y, int(y.max()) + 1 if len(y) else 1)
    return 1.0 - shares[np.arange(len(y)), y]


def snn_density(neighbours: np.ndarray) -> np.ndarray:
    """Shared-nearest-neighbour density: the mean overlap of a row's neighbour list with its neighbours' lists.

    Label-free: planted examples sharing a trigger form a tight clique (density near 1) whatever their labels,
    which is what catches a targeted backdoor that loss and kNN disagreement miss.
    """
    from scipy.sparse import csr_matrix

    n, k = neighbours.shape
    if k == 0:
        return np.zeros(n)
    adjacency = csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), neighbours.ravel())), shape=(n, n))
    shared = adjacency @ adjacency.T  # (n, n) sparse: |N(i) ∩ N(j)|
    return np.asarray(adjacency.multiply(shared).sum(1)).ravel() / (k * k)


def flag(run: ScorerRun) -> Scored:
    """Spectral signature, kNN label disagreement and SNN density of every labelled example."""
    cfg: PoisoningConfig = run.cfg
    data = proxy.load_data(run, cfg)
    table = pa.table({"record_id": data.record_ids,
                      "spectral": spectral_signature(data.x, data.y).astype(np.float32),
                      "knn_disagreement": knn_disagreement(data.x, data.y, cfg.k, cfg.block).astype(np.float32),
                      "snn_density": snn_density(nearest_neighbours(data.x, cfg.snn_k, cfg.block)).astype(np.float32)})
    return Scored({"records": len(data.record_ids), **data.sample_summary()}, (Whole(table, cfg.source),))


SCORER = Scorer(NAME, PoisoningConfig, inputs=proxy.INPUTS, scope="store", needs=(EMBEDDINGS,),
                identity=lambda store, _cfg: proxy.embeddings_identity(store, MODEL), store_step=flag)
run = SCORER.run

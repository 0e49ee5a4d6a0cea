"""Selection strategies: each picks ``k`` rows of a candidate pool and returns their indices, in order.

All are deterministic for a given seed. Diversity strategies (k-center greedy, facility location with lazy
greedy) are exact on pools up to ``*_EXACT_MAX`` rows; above that they run per k-means cell (MiniBatchKMeans,
about half that many rows a cell) with a budget proportional to the cell's size: the standard partitioned
approximation of both objectives, which keeps 1M-row pools within minutes on two cores.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

KCENTER_EXACT_MAX = 20_000  # k-center keeps one distance vector: O(n) memory
FACILITY_EXACT_MAX = 2_000  # facility location keeps the (n, n) similarity matrix: 2k x 2k float32 = 16 MB


def random_pick(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores (ties broken by index, so the result is deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -np.nan_to_num(scores, nan=-np.inf)))
    return order[:k]


def kcenter_exact(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-center (Gonzalez): repeatedly take the point farthest from the chosen set (cosine distance)."""
    n = len(x)
    k = min(k, n)
    if k == 0:
        return np.empty(0, np.int64)
    chosen = [int(rng.integers(n))]
    dist = 1.0 - x @ x[chosen[0]]
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        np.minimum(dist, 1.0 - x @ x[nxt], out=dist)
    return np.array(chosen)


def facility_location_exact(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Lazy greedy for f(S) = Σ_j max_{i∈S} sim(i, j) (similarities clipped at 0): a (1-1/e) approximation."""
    n = len(x)
    k = min(k, n)
    sims = (x @ x.T).astype(np.float32, copy=False)  # (n, n): fine for n <= FACILITY_EXACT_MAX
    np.clip(sims, 0.0, None, out=sims)
    covered = np.zeros(n, dtype=np.float32)
    tie = rng.random(n) * 1e-9  # deterministic tie-breaking by seed
    heap = [(-(sims[i].sum() + tie[i]), i) for i in range(n)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while heap and len(chosen) < k:
        _, i = heapq.heappop(heap)
        gain = np.maximum(sims[i] - covered, 0.0).sum() + tie[i]
        if heap and gain < -heap[0][0] - 1e-12:  # stale bound: re-insert with the fresh gain
            heapq.heappush(heap, (-gain, i))
            continue
        chosen.append(i)
        np.maximum(covered, sims[i], out=covered)
    return np.array(chosen, dtype=np.int64)


def partitioned(solver: Callable[[np.ndarray, int, np.random.Generator], np.ndarray], x: np.ndarray, k: int,
                rng: np.random.Generator, exact_max: int) -> np.ndarray:
    """Run ``solver`` exactly when small, else per k-means cell with proportional budgets."""
    n = len(x)
    if n <= exact_max:
        return solver(x, k, rng)
    from sklearn.cluster import MiniBatchKMeans

    cells = int(np.ceil(n / exact_max * 2))
    labels = MiniBatchKMeans(n_clusters=cells, random_state=int(rng.integers(2**31)), n_init=1,
                             batch_size=8192, max_iter=20).fit_predict(x)
    sizes = np.bincount(labels, minlength=cells)
    budgets = np.floor(sizes / n * k).astype(int)
    budgets[np.argsort(-(sizes / n * k - budgets))[: k - budgets.sum()]] += 1  # largest remainders
    picked = []
    for cell in range(cells):
        rows = np.flatnonzero(labels == cell)
        if budgets[cell] and len(rows):
            picked.append(rows[solver(x[rows], int(budgets[cell]), rng)])
    return np.concatenate(picked) if picked else np.empty(0, np.int64)


def kcenter(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return partitioned(kcenter_exact, x, k, rng, KCENTER_EXACT_MAX)


def facility_location(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return partitioned(facility_location_exact, x, k, rng, FACILITY_EXACT_MAX)


def target_similarity(x: np.ndarray, targets: np.ndarray, block: int = 65_536) -> np.ndarray:
    """RDS+-style score: each candidate's highest cosine to any target example (rows normalised).

    Blocked over candidates and targets, so the temporary stays at ``block x 1024`` floats whatever the pool.
    """
    best = np.full(len(x), -1.0, dtype=np.float32)
    for row in range(0, len(x), block):
        for lo in range(0, len(targets), 1024):
            sims = x[row:row + block] @ targets[lo:lo + 1024].T
            np.maximum(best[row:row + block], sims.max(1), out=best[row:row + block])
    return best


def dsir_weights(candidates: list[str], targets: list[str], buckets: int = 10_000) -> np.ndarray:
    """DSIR log importance weights: hashed uni+bigram bag-of-words models of target and raw, add-one smoothed."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=buckets, ngram_range=(1, 2), alternate_sign=False, norm=None)
    raw_counts = vec.transform(candidates)
    log_p_target = np.log(np.asarray(vec.transform(targets).sum(0)).ravel() + 1.0)
    log_p_target -= np.log(np.exp(log_p_target).sum())
    log_p_raw = np.log(np.asarray(raw_counts.sum(0)).ravel() + 1.0)
    log_p_raw -= np.log(np.exp(log_p_raw).sum())
    return np.asarray(raw_counts @ (log_p_target - log_p_raw)).ravel()


def dsir(candidates: list[str], targets: list[str], k: int, rng: np.random.Generator) -> np.ndarray:
    """Importance resampling without replacement: Gumbel top-k on the log weights."""
    weights = dsir_weights(candidates, targets)
    return top_k(weights + rng.gumbel(size=len(weights)), k)

"""Selection strategies: each picks ``k`` rows of a candidate pool and returns their indices, in order.

All are deterministic for a given seed: the same indices in another process and whatever the BLAS/OpenMP thread
settings, because the diversity strategies run single-threaded (see ``single_threaded``).

Diversity strategies (k-center greedy, facility location) are exact on pools up to ``*_EXACT_MAX`` rows. Above
that they run per cell of a size-capped partition (``balanced_cells``: k-means fitted on a sample, every row
assigned in chunks, oversized cells split again; no cell exceeds ``2 * *_CELL_ROWS`` rows whatever the data) with
budgets proportional to cell size, and the exact solver per cell. Peak memory above the input is O(n) indices
plus one cell's working set (for facility location a <= 4k x 4k float32 similarity matrix, 64 MB); a 1M x 384-d
pool takes under a minute on one core (``bench/selection_scale.py``).
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

KCENTER_EXACT_MAX = 20_000  # k-center keeps one distance vector: O(n) memory
FACILITY_EXACT_MAX = 4_000  # facility location keeps the (n, n) similarity matrix: 4k x 4k float32 = 64 MB
KCENTER_CELL_ROWS = 5_000  # time ~ k * cell rows * d; vs 2k-row cells: 2x the time, 3-4% smaller covering radius
FACILITY_CELL_ROWS = FACILITY_EXACT_MAX // 2  # capped at 2x: no cell's matrix is bigger than the exact solver's
KMEANS_FANOUT = 64  # clusters per k-means at most; a pool needing more cells is split in levels (~sqrt each)
KMEANS_SAMPLE_PER_CLUSTER = 128  # each k-means is fitted on this many rows per cluster, then every row assigned
ASSIGN_CHUNK = 16_384  # rows gathered per assignment/projection step: 16k x 384 float32 = 25 MB
SPLIT_MAX_SHARE = 0.75  # a k-means split whose largest part keeps more than this share falls back to halving

Solver = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@contextmanager
def single_threaded() -> Iterator[None]:
    """One BLAS and one OpenMP thread. sklearn's threaded k-means reduces per-thread partial sums in whatever
    order the threads finish, and BLAS results may depend on the thread count, so a borderline row could change
    cell between runs; the per-cell matrices (<= 10k rows) are too small to gain from threads anyway, and jobs
    sharing the cores make extra threads spin (bench/README.md, "Dataset selection: scale")."""
    import sklearn.cluster  # noqa: F401  # load its OpenMP runtime first: threadpoolctl only limits loaded ones
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


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
    dist[chosen[0]] = -np.inf  # never re-pick: with duplicate rows every distance can reach 0
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        np.minimum(dist, 1.0 - x @ x[nxt], out=dist)
        dist[nxt] = -np.inf
    return np.array(chosen, dtype=np.int64)


def facility_location_exact(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Lazy greedy for f(S) = Σ_j max_{i∈S} sim(i, j) (similarities clipped at 0): a (1-1/e) approximation."""
    n = len(x)
    k = min(k, n)
    xf = np.asarray(x, dtype=np.float32)  # one float32 (n, n) matrix whatever the input dtype: 64 MB at 4k rows
    sims = xf @ xf.T
    np.clip(sims, 0.0, None, out=sims)
    covered = np.zeros(n, dtype=np.float32)
    tie = rng.random(n) * 1e-9  # deterministic tie-breaking by seed
    heap = list(zip((-(sims.sum(1) + tie)).tolist(), range(n), strict=True))
    heapq.heapify(heap)
    buf = np.empty(n, dtype=np.float32)  # one gain evaluation, without a temporary per heap pop
    chosen: list[int] = []
    while heap and len(chosen) < k:
        _, i = heapq.heappop(heap)
        np.subtract(sims[i], covered, out=buf)
        gain = np.maximum(buf, 0.0, out=buf).sum() + tie[i]
        if heap and gain < -heap[0][0] - 1e-12:  # stale bound: re-insert with the fresh gain
            heapq.heappush(heap, (-gain, i))
            continue
        chosen.append(i)
        np.maximum(covered, sims[i], out=covered)
    return np.array(chosen, dtype=np.int64)


def _groups(rows: np.ndarray, labels: np.ndarray, count: int) -> list[np.ndarray]:
    """``rows`` grouped by label (ascending rows within a group), with one stable sort."""
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=count))])
    return [rows[order[bounds[i]:bounds[i + 1]]] for i in range(count)]


def _kmeans_split(x: np.ndarray, rows: np.ndarray, clusters: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k-means on a sample of ``x[rows]``, then every row assigned to its nearest centre in chunks, so neither
    the fit nor the assignment copies more than ``clusters * KMEANS_SAMPLE_PER_CLUSTER`` / ``ASSIGN_CHUNK`` rows."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    sample = min(len(rows), clusters * KMEANS_SAMPLE_PER_CLUSTER)
    fit_rows = rows if sample == len(rows) else np.sort(rng.choice(rows, size=sample, replace=False))
    with warnings.catch_warnings():  # duplicate rows can leave fewer distinct centres: the cap still holds
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=clusters, n_init=1, max_iter=50, random_state=int(rng.integers(2**31)))  # rough is fine
        centres = km.fit(x[fit_rows]).cluster_centers_.astype(x.dtype, copy=False)  # (clusters, d)
    half_norms = 0.5 * (centres * centres).sum(1)
    labels = np.empty(len(rows), dtype=np.int64)
    for lo in range(0, len(rows), ASSIGN_CHUNK):  # argmin |x - c|^2 = argmax x.c - |c|^2 / 2
        labels[lo:lo + ASSIGN_CHUNK] = np.argmax(x[rows[lo:lo + ASSIGN_CHUNK]] @ centres.T - half_norms, axis=1)
    return _groups(rows, labels, clusters)


def _halves(x: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Median split along the top principal axis (of a <= 8k-row sample): the fallback when k-means cannot
    split a group (duplicates, one dense blob), and it always halves, so splitting terminates."""
    sub = x[rows[:: max(1, len(rows) // 4096)]]
    _, _, vt = np.linalg.svd(sub - sub.mean(0), full_matrices=False)
    proj = np.concatenate([x[rows[lo:lo + ASSIGN_CHUNK]] @ vt[0] for lo in range(0, len(rows), ASSIGN_CHUNK)])
    order = rows[np.argsort(proj, kind="stable")]
    return [np.sort(order[: len(rows) // 2]), np.sort(order[len(rows) // 2:])]


def balanced_cells(x: np.ndarray, cell_rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Partition the rows of ``x`` into cells of about ``cell_rows`` and at most ``2 * cell_rows`` rows.

    A group with more than ``2 * cell_rows`` rows is split by k-means into ``ceil(rows / cell_rows)`` clusters,
    or, past ``KMEANS_FANOUT``, into ~sqrt of that many (so 1M rows in 1k-row cells cost two k-means levels of
    ~32 clusters, not one of 1,000); parts still too big are split again. If k-means leaves more than
    ``SPLIT_MAX_SHARE`` of a group in one part, the group is halved along its principal axis instead, so the cap
    holds for any data distribution. Cells are returned as ascending row indices, in a seed-determined order.
    """
    cap = 2 * cell_rows
    cells: list[np.ndarray] = []
    stack = [np.arange(len(x))]
    while stack:
        rows = stack.pop()
        if len(rows) <= cap:
            if len(rows):
                cells.append(rows)
            continue
        parts = math.ceil(len(rows) / cell_rows)
        clusters = parts if parts <= KMEANS_FANOUT else min(KMEANS_FANOUT, math.ceil(math.sqrt(parts)))
        children = _kmeans_split(x, rows, clusters, rng)
        if max(len(c) for c in children) > SPLIT_MAX_SHARE * len(rows):
            children = _halves(x, rows)
        stack.extend(reversed(children))  # depth first, children in order
    return cells


def partitioned(solver: Solver, x: np.ndarray, k: int, rng: np.random.Generator, cell_rows: int) -> np.ndarray:
    """Run ``solver`` per ``balanced_cells`` cell with budgets proportional to cell size (largest remainders).

    Cells are solved one at a time and only ``x[cell]`` is copied, so memory beyond the input is the cell index
    arrays (8 bytes a row) plus one cell's working set.
    """
    n = len(x)
    k = min(k, n)
    cells = balanced_cells(x, cell_rows, rng)
    sizes = np.array([len(c) for c in cells])
    quota = sizes / n * k
    budgets = np.floor(quota).astype(int)
    budgets[np.argsort(-(quota - budgets), kind="stable")[: k - budgets.sum()]] += 1
    picked = [rows[solver(x[rows], int(b), rng)] for rows, b in zip(cells, budgets, strict=True) if b]
    return np.concatenate(picked) if picked else np.empty(0, np.int64)


def kcenter(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-center: exact up to ``KCENTER_EXACT_MAX`` rows, else per ``KCENTER_CELL_ROWS`` cell."""
    with single_threaded():
        if len(x) <= KCENTER_EXACT_MAX:
            return kcenter_exact(x, k, rng)
        return partitioned(kcenter_exact, x, k, rng, KCENTER_CELL_ROWS)


def facility_location(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Facility location, lazy greedy: exact up to ``FACILITY_EXACT_MAX`` rows, else per ``FACILITY_CELL_ROWS``
    cell (measured against stochastic greedy per cell in bench/README.md: 30% faster, lower objective)."""
    with single_threaded():
        if len(x) <= FACILITY_EXACT_MAX:
            return facility_location_exact(x, k, rng)
        return partitioned(facility_location_exact, x, k, rng, FACILITY_CELL_ROWS)


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

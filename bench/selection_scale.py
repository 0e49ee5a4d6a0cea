"""Selection at scale: seconds and peak memory of each ``tasks.selection.strategies`` strategy on 1M embeddings.

Data: ``--n`` (default 1,000,000) generated 384-d L2-normalised float32 vectors from a Gaussian mixture with 200
components (unit-norm random centres, Dirichlet(2) weights, per-component spread 0.6-1.4 so same-component
cosines are ~0.3-0.7 and cross-component ~0), and 1,000 target vectors from 10 of the components (a "target
domain"). Both are generated once (fixed seed) and cached as ``.npy`` in ``/tmp/custody-bench-cache/``.

Strategies, budget 20% of the pool (k = 200,000 at 1M), each called exactly as ``tasks.selection`` calls it:

* ``random``: ``strategies.random_pick(n, k, rng)``;
* ``top_k``: ``strategies.top_k(scores, k)`` on a float64 score per row (as for ``quality`` / ``influence``);
* ``target``: ``top_k(target_similarity(x, targets), k)`` with 1,000 targets;
* ``kcenter``: ``strategies.kcenter`` - above ``KCENTER_EXACT_MAX`` rows it is the partitioned approximation
  (MiniBatchKMeans cells of about ``KCENTER_EXACT_MAX / 2`` rows, greedy k-center per cell, budgets
  proportional to cell size);
* ``facility``: ``strategies.facility_location`` - the same scheme with cells of about ``FACILITY_EXACT_MAX / 2``
  rows and lazy-greedy facility location per cell.

Each strategy runs in a fresh subprocess (``--worker NAME``) so its memory is its own: the worker loads the data
(not timed), records RSS after loading, resets the kernel's high-water mark (``/proc/self/clear_refs``), runs the
strategy once and reports wall seconds, CPU seconds (user + sys, ``resource.getrusage``), the peak RSS while the
strategy ran (``VmHWM``; ``ru_maxrss``, which also covers loading, is kept too) and that peak above the loaded
data ("overhead"). BLAS runs with 2 threads. For the
partitioned strategies the worker also wraps (without changing them) ``sklearn.cluster.MiniBatchKMeans`` and the
per-cell solver to record the partition scheme (cells, cell sizes) and where the time goes: k-means fit+predict,
per-cell solves, and the rest (cell gathering). For facility location it re-times the similarity matrix alone on
a sample of cells to split the per-cell time into the matmul and the Python lazy-greedy loop.

Targets: each strategy finishes in under 120 s on 2 cores, with bounded memory, taken here as a peak overhead
of at most the size of the input matrix (1.5 GB at 1M x 384 float32) and no term that grows with n x targets.
Other jobs may share the two cores; the load average and the CPU/wall ratio are recorded with every run.

Unless ``--no-prototype``, two **bench-local prototypes** (not in tasks/selection, labelled PROTOTYPE in the
table and JSON) run the same way, to measure what a concrete change would buy:

* ``facility_prototype``: a balanced two-level partition (k-means with ~sqrt(n / 1000) coarse clusters, each
  split by k-means into ~1k-row cells; every k-means fitted on <= 50k rows and assigned in chunks; cells capped
  at 2k rows by cutting along the top principal axis) and, per cell, stochastic greedy (Mirzasoleiman et al.
  2015, "lazier than lazy greedy", eps = 0.01) with the gains of the sampled candidates evaluated in one float32
  pass;
* ``kcenter_prototype``: the same partition with ~2k-row cells (so each per-pick matvec stays in cache) and the
  unchanged ``strategies.kcenter_exact`` per cell;
* ``target_prototype``: ``strategies.target_similarity`` blocked over candidate rows (65,536 at a time) as well as
  over targets, so its temporary is 256 MB instead of n x 1024 float32 (4 GB at 1M).

A further worker compares objectives on a ``--subset`` (20k) sample of the pool, budget 20%: facility location
``f(S) = sum_j max_{i in S} max(0, cos(i, j))`` for the current implementation, the prototype, the two mixes
(prototype cells + lazy greedy, current cells + stochastic greedy), the exact lazy greedy on the whole subset
(reference) and random; and the k-center covering radius (max cosine distance to the nearest pick; lower is
better) for the exact k-center, the current partitioned scheme forced onto the subset, the prototype and random.

Run from the repository root (~6 minutes on 2 quiet cores, 15+ when other jobs share them; each strategy is
stopped at ``--timeout``, default 240 s, and then reports its partial progress and an extrapolated total;
generating the data adds ~15 s)::

    .venv/bin/python bench/selection_scale.py                    # writes bench/results/selection_scale.json
    .venv/bin/python bench/selection_scale.py --n 200000 --strategies random,kcenter --out /tmp/scale.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = Path("/tmp/custody-bench-cache")
STRATEGY_NAMES = ("random", "top_k", "target", "kcenter", "facility")
DIM = 384
COMPONENTS = 200
N_TARGETS = 1000
TARGET_COMPONENTS = 10
BUDGET = 0.2
TIME_TARGET_S = 120.0
THREADS = 2
console = Console(width=140)

if __name__ == "__main__" and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------------------------- data


def data_paths(n: int, seed: int) -> tuple[Path, Path]:
    stem = f"selection_gmm_n{n}_d{DIM}_c{COMPONENTS}_s{seed}"
    return CACHE_DIR / f"{stem}.npy", CACHE_DIR / f"{stem}_targets{N_TARGETS}.npy"


def mixture_rows(rng: np.random.Generator, centres: np.ndarray, spread: np.ndarray,
                 comps: np.ndarray) -> np.ndarray:
    """Normalised ``centre + spread * N(0, I / d)`` rows, float32."""
    noise = rng.standard_normal((len(comps), DIM), dtype=np.float32)
    rows = centres[comps] + noise * (spread[comps, None] / np.sqrt(DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def generate(n: int, seed: int) -> tuple[Path, Path]:
    """Write the pool (chunked, through a memmap) and the targets, unless already cached."""
    path, tpath = data_paths(n, seed)
    if path.exists() and tpath.exists():
        return path, tpath
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((COMPONENTS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.6, 1.4, COMPONENTS)
    weights = rng.dirichlet(np.full(COMPONENTS, 2.0))
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, DIM))
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = mixture_rows(rng, centres, spread, rng.choice(COMPONENTS, size=hi - lo, p=weights))
    out.flush()
    del out
    target_comps = rng.choice(COMPONENTS, size=TARGET_COMPONENTS, replace=False)
    np.save(tpath, mixture_rows(rng, centres, spread, rng.choice(target_comps, size=N_TARGETS)))
    tmp.rename(path)
    return path, tpath


# ----------------------------------------------------------------------------------------------- worker


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) so the strategy's own peak can be read afterwards."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


class Interrupted(BaseException):
    """Raised in the worker on SIGTERM (the parent's timeout) so it can report partial progress."""


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Instrument:
    """Wraps MiniBatchKMeans and a per-cell solver of ``tasks.selection.strategies`` to time them (no change in
    what they compute)."""

    def __init__(self, solver_name: str) -> None:
        import sklearn.cluster

        from tasks.selection import strategies

        self.kmeans_s = 0.0
        self.kmeans_done = False
        self.k = 0
        self.kmeans_params: dict[str, Any] = {}
        self.solve_s = 0.0
        self.cells: list[tuple[int, int]] = []  # (rows, budget)
        self.samples: list[np.ndarray] = []  # a few cells' rows, for the matmul split
        original_kmeans = sklearn.cluster.MiniBatchKMeans
        original_solver = getattr(strategies, solver_name)
        instrument = self

        class TimedMiniBatchKMeans(original_kmeans):  # type: ignore[misc, valid-type]
            def fit_predict(self, x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
                start = time.perf_counter()
                labels = super().fit_predict(x, *args, **kwargs)
                instrument.kmeans_s += time.perf_counter() - start
                instrument.kmeans_done = True
                instrument.kmeans_params = {**{k: v for k, v in self.get_params().items()
                                               if k in ("n_clusters", "batch_size", "max_iter", "n_init",
                                                        "init_size", "max_no_improvement")},
                                            "n_steps": int(self.n_steps_), "n_iter": int(self.n_iter_)}
                return labels

        def timed_solver(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
            start = time.perf_counter()
            out = original_solver(x, k, rng)
            instrument.solve_s += time.perf_counter() - start
            instrument.cells.append((len(x), k))
            if len(instrument.samples) < 20 and len(instrument.cells) % 7 == 1:
                instrument.samples.append(np.array(x))
            return out

        sklearn.cluster.MiniBatchKMeans = TimedMiniBatchKMeans
        setattr(strategies, solver_name, timed_solver)

    def report(self, total_s: float, facility: bool, complete: bool) -> dict[str, Any]:
        rows = np.array([c[0] for c in self.cells]) if self.cells else np.zeros(1, int)
        out: dict[str, Any] = {
            "cells": len(self.cells), "cell_rows": {"min": int(rows.min()), "median": float(np.median(rows)),
                                                    "max": int(rows.max()), "mean": float(rows.mean())},
            "kmeans": self.kmeans_params, "kmeans_s": self.kmeans_s if self.kmeans_done else None,
            "solve_s": self.solve_s, "other_s": total_s - self.kmeans_s - self.solve_s}
        if not complete:
            done = sum(c[1] for c in self.cells) / max(self.k, 1)
            out["partial"] = {"kmeans_finished": self.kmeans_done, "budget_done": done,
                              "elapsed_s": total_s, "cells_done": len(self.cells)}
            if self.kmeans_done and done > 0:  # cells are solved in label order: extrapolate the per-cell phase
                out["partial"]["estimated_total_s"] = total_s + self.solve_s * (1 / done - 1)
            return out
        if facility and self.samples:
            start = time.perf_counter()
            for x in self.samples:
                np.clip(x @ x.T, 0.0, None).astype(np.float32)
            per_row2 = (time.perf_counter() - start) / sum(len(x) ** 2 for x in self.samples)
            matmul = per_row2 * float((rows.astype(np.float64) ** 2).sum())
            out["solve_split_estimate"] = {"similarity_matrix_s": matmul, "lazy_greedy_loop_s": self.solve_s - matmul,
                                           "sampled_cells": len(self.samples)}
        return out


def run_strategy(name: str, x: np.ndarray, targets: np.ndarray, scores: np.ndarray, k: int,
                 seed: int) -> np.ndarray:
    """The strategy as ``tasks.selection`` runs it."""
    from tasks.selection import strategies

    rng = np.random.default_rng(seed)
    if name == "random":
        return strategies.random_pick(len(x), k, rng)
    if name == "top_k":
        return strategies.top_k(scores, k)
    if name == "target":
        return strategies.top_k(strategies.target_similarity(x, targets), k)
    if name == "kcenter":
        return strategies.kcenter(x, k, rng)
    if name == "facility":
        return strategies.facility_location(x, k, rng)
    if name == "facility_prototype":
        return facility_location_prototype(x, k, rng)
    if name == "kcenter_prototype":
        return kcenter_prototype(x, k, rng)
    if name == "target_prototype":
        return strategies.top_k(target_similarity_chunked(x, targets), k)
    raise ValueError(name)


def worker(args: argparse.Namespace) -> None:
    import signal

    from tasks.selection import strategies

    def on_term(*_: Any) -> None:
        raise Interrupted

    path, tpath = data_paths(args.n, args.seed)
    x = np.load(path)
    targets = np.load(tpath)
    scores = np.random.default_rng(args.seed + 1).standard_normal(len(x))  # a float64 score per row, untimed
    k = round(BUDGET * len(x))
    inst = None
    if args.worker in ("kcenter", "facility"):
        inst = Instrument("kcenter_exact" if args.worker == "kcenter" else "facility_location_exact")
        inst.k = k
    loaded_rss, process_peak_before = rss_mb(), peak_rss_mb()
    precise = reset_peak()
    signal.signal(signal.SIGTERM, on_term)
    complete = True
    picked = np.empty(0, np.int64)
    cpu0, start = cpu_seconds(), time.perf_counter()
    try:
        picked = np.asarray(run_strategy(args.worker, x, targets, scores, k, args.seed))
    except Interrupted:
        complete = False
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu0
    peak = hwm_mb() if precise else peak_rss_mb()
    doc: dict[str, Any] = {
        "strategy": args.worker, "complete": complete, "n": len(x), "k": k, "selected": len(picked),
        "unique": len(np.unique(picked)), "seconds": wall if complete else None, "elapsed_s": wall,
        "cpu_seconds": cpu, "cpu_per_wall": cpu / wall, "loaded_rss_mb": loaded_rss,
        "process_peak_before_mb": process_peak_before, "peak_rss_mb": peak, "ru_maxrss_mb": peak_rss_mb(),
        "peak_source": "VmHWM reset after loading" if precise else "ru_maxrss", "overhead_mb": peak - loaded_rss,
        "input_mb": x.nbytes / 2**20, "load_avg_after": os.getloadavg(),
        "exact_max": {"kcenter": strategies.KCENTER_EXACT_MAX, "facility": strategies.FACILITY_EXACT_MAX}}
    if inst is not None:
        doc["partition"] = inst.report(wall, args.worker == "facility", complete)
    if args.worker.endswith("_prototype"):
        doc["partition"] = PROTOTYPE_STATS
    Path(args.worker_out).write_text(json.dumps(doc, indent=2))


# ----------------------------------------------------------------------------------------------- prototype
# PROTOTYPE, bench-local: candidate replacements for the partitioned strategies.facility_location / kcenter.
# They are not used by tasks/selection; they exist to measure what a concrete change would buy.

PROTO_FACILITY_CELL_ROWS = 1000  # as now (FACILITY_EXACT_MAX / 2): the (m, m) matmul is n * m * d flops
PROTO_KCENTER_CELL_ROWS = 2000  # 3 MB a cell: the per-pick matvec stays in cache (now ~10k rows, 15 MB)
PROTO_KMEANS_SAMPLE = 50_000  # each k-means is fitted on at most this many rows, then every row is assigned
PROTO_EPSILON = 0.01  # stochastic greedy: each step evaluates (m / b) * ln(1 / eps) random candidates
PROTOTYPE_STATS: dict[str, Any] = {}


def kmeans_assign(x: np.ndarray, clusters: int, rng: np.random.Generator, sample: int) -> np.ndarray:
    """PROTOTYPE. MiniBatchKMeans fitted on a subsample, then every row assigned in chunks (bounded memory)."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(x)
    if clusters <= 1:
        return np.zeros(n, dtype=np.int64)
    fit = x if n <= sample else x[np.sort(rng.choice(n, size=sample, replace=False))]
    km = MiniBatchKMeans(n_clusters=clusters, random_state=int(rng.integers(2**31)), n_init=1,
                         batch_size=min(8192, len(fit)), max_iter=20).fit(fit)
    centres = km.cluster_centers_.astype(np.float32)
    half_norms = 0.5 * (centres**2).sum(1)
    labels = np.empty(n, dtype=np.int64)
    for lo in range(0, n, 65_536):
        labels[lo:lo + 65_536] = np.argmax(x[lo:lo + 65_536] @ centres.T - half_norms, axis=1)
    return labels


def groups_of(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """Row indices per label with one stable sort (instead of a ``labels == cell`` scan per cell)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=count))])
    return [order[bounds[i]:bounds[i + 1]] for i in range(count)]


def split_oversized(x: np.ndarray, rows: np.ndarray, cell_rows: int) -> list[np.ndarray]:
    """PROTOTYPE. Cap a cell at 2 x ``cell_rows``: cut it into contiguous runs along its top principal axis."""
    if len(rows) <= 2 * cell_rows:
        return [rows]
    sub = x[rows[:: max(1, len(rows) // 4096)]]
    _, _, vt = np.linalg.svd(sub - sub.mean(0), full_matrices=False)
    ordered = rows[np.argsort(x[rows] @ vt[0], kind="stable")]
    return np.array_split(ordered, int(np.ceil(len(rows) / cell_rows)))


def balanced_cells(x: np.ndarray, cell_rows: int, rng: np.random.Generator,
                   sample: int = PROTO_KMEANS_SAMPLE) -> list[np.ndarray]:
    """PROTOTYPE. Two-level k-means: ~sqrt(n / cell_rows) coarse clusters, each split into ~cell_rows-row cells;
    cells capped at 2 x cell_rows. Cost ~ n * d * 2 sqrt(n / cell_rows) instead of n * d * n / cell_rows."""
    n = len(x)
    coarse = max(1, round(np.sqrt(n / cell_rows)))
    cells: list[np.ndarray] = []
    for group in groups_of(kmeans_assign(x, coarse, rng, sample), coarse):
        if not len(group):
            continue
        fine = int(np.ceil(len(group) / cell_rows))
        for sub in groups_of(kmeans_assign(x[group], fine, rng, sample), fine):
            if len(sub):
                cells.extend(split_oversized(x, group[sub], cell_rows))
    return cells


def stochastic_greedy_facility(x: np.ndarray, k: int, rng: np.random.Generator,
                               epsilon: float = PROTO_EPSILON) -> np.ndarray:
    """PROTOTYPE. Stochastic greedy for facility location on one cell: (1 - 1/e - eps) in expectation.

    The clipped similarity matrix is built once in float32 (m x m), ``covered`` is float32, and each step
    evaluates the gains of a random sample of candidates in one vectorised pass (``(s, m)`` float32) instead of a
    Python heap loop."""
    m = len(x)
    k = min(k, m)
    if k == 0:
        return np.empty(0, np.int64)
    sims = x @ x.T
    np.maximum(sims, 0.0, out=sims)
    covered = np.zeros(m, dtype=np.float32)
    available = np.ones(m, dtype=bool)
    sample = max(1, min(m, int(np.ceil(m / k * np.log(1 / epsilon)))))
    chosen = np.empty(k, dtype=np.int64)
    buf = np.empty((sample, m), dtype=np.float32)
    for step in range(k):
        pool = np.flatnonzero(available)
        cand = pool if len(pool) <= sample else pool[rng.choice(len(pool), size=sample, replace=False)]
        block = buf[: len(cand)]
        np.subtract(sims[cand], covered, out=block)
        np.maximum(block, 0.0, out=block)
        best = int(cand[int(np.argmax(block.sum(1)))])
        chosen[step] = best
        available[best] = False
        np.maximum(covered, sims[best], out=covered)
    return chosen


def partitioned_prototype(solver: Callable[[np.ndarray, int, np.random.Generator], np.ndarray], x: np.ndarray,
                          k: int, rng: np.random.Generator, cell_rows: int, exact_max: int,
                          stats: dict[str, Any] | None = None) -> np.ndarray:
    """PROTOTYPE. ``strategies.partitioned`` with ``balanced_cells`` and the same proportional budgets."""
    n = len(x)
    if n <= exact_max:
        return solver(x, k, rng)
    start = time.perf_counter()
    cells = balanced_cells(x, cell_rows, rng)
    partition_s = time.perf_counter() - start
    sizes = np.array([len(c) for c in cells])
    budgets = np.floor(sizes / n * k).astype(int)
    budgets[np.argsort(-(sizes / n * k - budgets))[: k - budgets.sum()]] += 1  # largest remainders, as now
    picked = []
    start = time.perf_counter()
    for rows, budget in zip(cells, budgets, strict=True):
        if budget:
            picked.append(rows[solver(x[rows], int(budget), rng)])
    if stats is not None:
        stats.update({"scheme": f"two-level k-means (fitted on <= {PROTO_KMEANS_SAMPLE:,} rows each), cells of "
                                f"~{cell_rows} rows capped at {2 * cell_rows}", "cells": len(cells),
                      "cell_rows": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                                    "max": int(sizes.max())},
                      "kmeans_s": partition_s, "solve_s": time.perf_counter() - start})
    return np.concatenate(picked) if picked else np.empty(0, np.int64)


def facility_location_prototype(x: np.ndarray, k: int, rng: np.random.Generator,
                                cell_rows: int = PROTO_FACILITY_CELL_ROWS) -> np.ndarray:
    """PROTOTYPE. Balanced two-level cells + stochastic greedy per cell."""
    from tasks.selection import strategies

    return partitioned_prototype(stochastic_greedy_facility, x, k, rng, cell_rows, strategies.FACILITY_EXACT_MAX,
                                 PROTOTYPE_STATS)


def kcenter_prototype(x: np.ndarray, k: int, rng: np.random.Generator,
                      cell_rows: int = PROTO_KCENTER_CELL_ROWS) -> np.ndarray:
    """PROTOTYPE. Balanced two-level cells of ~2k rows + the unchanged ``strategies.kcenter_exact`` per cell."""
    from tasks.selection import strategies

    return partitioned_prototype(strategies.kcenter_exact, x, k, rng, cell_rows, strategies.KCENTER_EXACT_MAX,
                                 PROTOTYPE_STATS)


def target_similarity_chunked(x: np.ndarray, targets: np.ndarray, rows: int = 65_536) -> np.ndarray:
    """PROTOTYPE. ``strategies.target_similarity`` blocked over candidate rows too: the temporary is
    (rows, targets) float32 (256 MB at 1,000 targets) instead of (n, 1024) (4 GB at 1M)."""
    best = np.empty(len(x), dtype=np.float32)
    for lo in range(0, len(x), rows):
        best[lo:lo + rows] = (x[lo:lo + rows] @ targets.T).max(1)
    return best


def facility_objective(x: np.ndarray, chosen: np.ndarray, block: int = 4096) -> float:
    """f(S) = sum_j max_{i in S} max(0, cos(i, j)), blockwise over j."""
    xs = x[chosen]
    total = 0.0
    for lo in range(0, len(x), block):
        total += float(np.maximum((x[lo:lo + block] @ xs.T).max(1), 0.0).sum())
    return total


def kcenter_objective(x: np.ndarray, chosen: np.ndarray, block: int = 4096) -> dict[str, float]:
    """Covering radius (max over rows of the cosine distance to the nearest chosen row; lower is better) and the
    mean of that distance."""
    xs = x[chosen]
    nearest = np.concatenate([1.0 - (x[lo:lo + block] @ xs.T).max(1) for lo in range(0, len(x), block)])
    return {"radius": float(nearest.max()), "mean_distance": float(nearest.mean())}


def exact_lazy_greedy_inplace(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``strategies.facility_location_exact`` (same lazy greedy, same tie-breaking) with the similarity matrix
    clipped in place, so a 20k reference fits in 1.6 GB instead of ~5 GB."""
    n = len(x)
    sims = x @ x.T
    np.maximum(sims, 0.0, out=sims)
    covered = np.zeros(n)
    tie = rng.random(n) * 1e-9
    heap = [(-(float(sims[i].sum()) + tie[i]), i) for i in range(n)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while heap and len(chosen) < k:
        _, i = heapq.heappop(heap)
        gain = np.maximum(sims[i] - covered, 0.0).sum() + tie[i]
        if heap and gain < -heap[0][0] - 1e-12:
            heapq.heappush(heap, (-gain, i))
            continue
        chosen.append(i)
        np.maximum(covered, sims[i], out=covered)
    return np.array(chosen, dtype=np.int64)


def prototype_quality(args: argparse.Namespace) -> None:
    """Objectives of current vs prototype vs exact on a ``--subset`` subsample (budget 20%)."""
    from tasks.selection import strategies

    path, _ = data_paths(args.n, args.seed)
    full = np.load(path, mmap_mode="r")
    rows = np.sort(np.random.default_rng(args.seed + 7).choice(len(full), size=args.subset, replace=False))
    x = np.ascontiguousarray(full[rows])
    k = round(BUDGET * len(x))
    facility: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "current: strategies.facility_location (k-means cells, lazy greedy)":
            lambda rng: strategies.facility_location(x, k, rng),
        "prototype: two-level cells ~1k + stochastic greedy": lambda rng: partitioned_prototype(
            stochastic_greedy_facility, x, k, rng, PROTO_FACILITY_CELL_ROWS, strategies.FACILITY_EXACT_MAX),
        "prototype cells + current lazy greedy": lambda rng: partitioned_prototype(
            strategies.facility_location_exact, x, k, rng, PROTO_FACILITY_CELL_ROWS, strategies.FACILITY_EXACT_MAX),
        "current k-means cells + stochastic greedy": lambda rng: strategies.partitioned(
            stochastic_greedy_facility, x, k, rng, strategies.FACILITY_EXACT_MAX),
        "exact lazy greedy on the whole subset (reference)": lambda rng: exact_lazy_greedy_inplace(x, k, rng),
        "random": lambda rng: strategies.random_pick(len(x), k, rng)}
    kcenter: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "exact: strategies.kcenter (subset <= KCENTER_EXACT_MAX)": lambda rng: strategies.kcenter(x, k, rng),
        "current partitioned scheme (forced: exact_max = n - 1, 3 cells)": lambda rng: strategies.partitioned(
            strategies.kcenter_exact, x, k, rng, len(x) - 1),
        "prototype: two-level cells ~2k + kcenter_exact": lambda rng: partitioned_prototype(
            strategies.kcenter_exact, x, k, rng, PROTO_KCENTER_CELL_ROWS, len(x) - 1),
        "random": lambda rng: strategies.random_pick(len(x), k, rng)}
    out: dict[str, Any] = {"subset": len(x), "k": k, "seed": args.seed, "facility": {}, "kcenter": {},
                           "note": "k-center is exact at this size; its partitioned variants are forced with "
                                   "exact_max = n - 1 to measure what partitioning costs in covering radius"}
    for name, fn in facility.items():
        start, cpu0 = time.perf_counter(), time.process_time()
        chosen = fn(np.random.default_rng(args.seed))
        out["facility"][name] = {"objective": facility_objective(x, chosen), "seconds": time.perf_counter() - start,
                                 "cpu_seconds": time.process_time() - cpu0,
                                 "selected": len(chosen), "unique": len(np.unique(chosen))}
    best = out["facility"]["exact lazy greedy on the whole subset (reference)"]["objective"]
    for res in out["facility"].values():
        res["vs_exact"] = res["objective"] / best
    for name, fn in kcenter.items():
        start, cpu0 = time.perf_counter(), time.process_time()
        chosen = fn(np.random.default_rng(args.seed))
        out["kcenter"][name] = {**kcenter_objective(x, chosen), "seconds": time.perf_counter() - start,
                                "cpu_seconds": time.process_time() - cpu0,
                                "selected": len(chosen), "unique": len(np.unique(chosen))}
    Path(args.worker_out).write_text(json.dumps(out, indent=2))


# ----------------------------------------------------------------------------------------------- parent


def spawn(args: argparse.Namespace, worker_name: str, out: Path, extra: list[str] | None = None) -> dict[str, Any]:
    """Run one worker; on ``--timeout`` send SIGTERM so it reports its partial progress."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "OPENBLAS_NUM_THREADS": str(THREADS),
           "MKL_NUM_THREADS": str(THREADS), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker_name, "--worker-out", str(out),
           "--n", str(args.n), "--seed", str(args.seed), *(extra or [])]
    out.unlink(missing_ok=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timed_out = False
    try:
        _, stderr = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    if not out.exists():
        return {"strategy": worker_name, "error": f"timed out after {args.timeout:.0f}s" if timed_out else
                stderr[-3000:], "seconds": None, "load_avg_before": load_before}
    doc = json.loads(out.read_text())
    if timed_out:
        doc["error"] = f"timed out after {args.timeout:.0f}s (partial progress in 'partition.partial')"
    return {**doc, "process_seconds": time.perf_counter() - start, "load_avg_before": load_before}


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    ap.add_argument("--timeout", type=float, default=240.0,
                    help="seconds before a strategy's worker is stopped (it then reports partial progress)")
    ap.add_argument("--no-prototype", dest="prototype", action="store_false")
    ap.add_argument("--subset", type=int, default=20_000, help="rows for the prototype's objective comparison")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "selection_scale.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "prototype_quality":
        prototype_quality(args)
        return
    if args.worker:
        worker(args)
        return

    wall = time.perf_counter()
    start = time.perf_counter()
    path, _ = generate(args.n, args.seed)
    console.print(f"data: {path} ({path.stat().st_size / 2**30:.2f} GiB), ready in {time.perf_counter() - start:.0f}s;"
                  f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    tmp = CACHE_DIR / f"selection_scale_worker_{os.getpid()}.json"
    names = [s for s in args.strategies.split(",") if s]
    if args.prototype:
        names += [f"{name}_prototype" for name in ("target", "kcenter", "facility") if name in names]
    results: dict[str, Any] = {}
    for name in names:
        console.print(f"running {name} ...")
        results[name] = res = spawn(args, name, tmp)
        if res.get("error"):
            console.print(f"[red]{name}: {res['error'][-600:]}[/]")
        if "cpu_seconds" in res:
            console.print(f"  {fmt(res['seconds'])}s (cpu {res['cpu_seconds']:.1f}s), peak RSS "
                          f"{res['peak_rss_mb']:.0f} MB, overhead {res['overhead_mb']:.0f} MB"
                          + (f"; partition {json.dumps(res['partition'])}" if "partition" in res else ""))
    quality = None
    if args.prototype:
        console.print(f"prototype objective on a {args.subset:,}-row subset ...")
        quality = spawn(args, "prototype_quality", tmp, ["--subset", str(args.subset)])
        console.print(json.dumps(quality, indent=1))
    tmp.unlink(missing_ok=True)

    input_mb = args.n * DIM * 4 / 2**20
    table = Table(title=f"selection at scale: n={args.n:,}, d={DIM}, k={round(BUDGET * args.n):,} (20%), "
                        f"{THREADS} BLAS threads", title_justify="left")
    for col in ("strategy", "wall s", "cpu s", "peak RSS MB", "overhead MB", "< 120 s", "bounded mem", "scheme"):
        table.add_column(col, justify="left" if col in ("strategy", "scheme") else "right")
    verdict: dict[str, Any] = {}
    for name, res in results.items():
        ok_time = res.get("seconds") is not None and res["seconds"] < TIME_TARGET_S
        ok_mem = res.get("overhead_mb") is not None and res["overhead_mb"] <= input_mb
        verdict[name] = {"time_ok": ok_time, "memory_ok": ok_mem}
        part = res.get("partition") or {}
        partial = part.get("partial") or {}
        scheme = ""
        if part.get("cells"):
            scheme = (f"{part['cells']} cells ({part['cell_rows']['min']}-{part['cell_rows']['max']} rows); kmeans "
                      f"{fmt(part.get('kmeans_s'), '.0f')}s, cells {fmt(part.get('solve_s'), '.0f')}s")
        if partial:
            state = "done" if partial["kmeans_finished"] else "running"
            scheme = (f"stopped at {partial['elapsed_s']:.0f}s: k-means {state}, {partial['budget_done']:.0%} of "
                      "the budget picked; " + scheme)
        label = name + (" (PROTOTYPE)" if name.endswith("_prototype") else "")
        seconds = fmt(res.get("seconds"))
        if res.get("seconds") is None and partial.get("estimated_total_s"):
            seconds = f"~{partial['estimated_total_s']:.0f} (est.)"
        elif res.get("seconds") is None and partial:
            seconds = f"> {partial['elapsed_s']:.0f}"
        table.add_row(label, seconds, fmt(res.get("cpu_seconds")), fmt(res.get("peak_rss_mb"), ".0f"),
                      fmt(res.get("overhead_mb"), ".0f"), "[green]yes[/]" if ok_time else "[red]no[/]",
                      "[green]yes[/]" if ok_mem else "[red]no[/]", scheme or res.get("error", "")[:60])
    console.print(table)
    current = [n for n in results if not n.endswith("_prototype")]
    passed = all(verdict[n]["time_ok"] and verdict[n]["memory_ok"] for n in current)
    console.print(("[green]PASS[/]" if passed else "[red]FAIL[/]") + ": every strategy < 120 s with overhead <= "
                  f"input size ({input_mb:.0f} MB): " + ", ".join(
                      f"{n} {'ok' if verdict[n]['time_ok'] and verdict[n]['memory_ok'] else 'missed'}"
                      for n in current))
    doc = {"benchmark": "selection_scale", "created_at": dt.datetime.now(dt.UTC).isoformat(),
           "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
           "config": {"n": args.n, "dim": DIM, "components": COMPONENTS, "targets": N_TARGETS, "budget": BUDGET,
                      "seed": args.seed, "blas_threads": THREADS, "time_target_s": TIME_TARGET_S,
                      "memory_target": "peak RSS above the loaded input <= input size", "input_mb": input_mb},
           "results": results, "prototype_quality": quality, "verdict": {**verdict, "pass": passed},
           "wall_seconds": time.perf_counter() - wall}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

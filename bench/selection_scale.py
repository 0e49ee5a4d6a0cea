"""Selection at scale: seconds and peak memory of each ``tasks.selection.strategies`` strategy on 1M embeddings,
side by side with the partition scheme the diversity strategies used before the cell cap.

Data: ``--n`` (default 1,000,000) generated 384-d L2-normalised float32 vectors from a Gaussian mixture with 200
components (unit-norm random centres, Dirichlet(2) weights, per-component spread 0.6-1.4 so same-component
cosines are ~0.3-0.7 and cross-component ~0), and 1,000 target vectors from 10 of the components (a "target
domain"). Both are generated once (fixed seed) and cached as ``.npy`` in ``/tmp/custody-bench-cache/``.

Strategies, budget 20% of the pool (k = 200,000 at 1M), each called exactly as ``tasks.selection`` calls it:

* ``random``: ``strategies.random_pick(n, k, rng)``;
* ``top_k``: ``strategies.top_k(scores, k)`` on a float64 score per row (as for ``quality`` / ``influence``);
* ``target``: ``top_k(target_similarity(x, targets), k)`` with 1,000 targets;
* ``kcenter``: ``strategies.kcenter`` - above ``KCENTER_EXACT_MAX`` rows, greedy k-center per cell of
  ``strategies.balanced_cells`` (cells of ~``KCENTER_CELL_ROWS`` rows, capped at twice that), budgets
  proportional to cell size;
* ``facility``: ``strategies.facility_location`` - the same scheme with ~``FACILITY_CELL_ROWS``-row cells and
  lazy-greedy facility location per cell.

Unless ``--no-before``, two **BEFORE** rows (bench-local copies of the scheme replaced in tasks/selection, labelled
in the table and JSON) run the same way for the side-by-side comparison: ``kcenter_before`` / ``facility_before``
partition the whole pool with one ``MiniBatchKMeans(ceil(2 n / exact_max))`` (exact_max 20,000 / 2,000 as then;
cells not capped) and run ``kcenter_exact`` / ``facility_location_exact`` per cell, with the environment's 2 BLAS
/ OpenMP threads.

Each strategy runs in a fresh subprocess (``--worker NAME``) so its memory is its own: the worker loads the data
(not timed), records RSS after loading, resets the kernel's high-water mark (``/proc/self/clear_refs``), runs the
strategy once and reports wall seconds, CPU seconds (user + sys, ``resource.getrusage``), the peak RSS while the
strategy ran (``VmHWM``; ``ru_maxrss``, which also covers loading, is kept too), that peak above the loaded data
("overhead") and a sha256 of the picked indices. The environment has 2 BLAS/OpenMP threads (``kcenter`` and
``facility`` limit themselves to one). For the partitioned strategies the worker also wraps, without changing
them, the partition function and the per-cell solver to record the cells (count, sizes, largest vs the cap) and
where the time goes; for facility location it re-times the similarity matrix alone for every cell's shape.

Determinism: unless ``--no-determinism``, ``kcenter`` and ``facility`` run a second time in another fresh
process with 1 BLAS/OpenMP thread instead of 2, and the two index hashes are compared.

Targets: each strategy finishes in under 120 s on 2 cores, with bounded memory, taken here as a peak overhead
of at most the size of the input matrix (1.5 GB at 1M x 384 float32), no cell above its cap, and no term that
grows with n x targets. Other jobs may share the two cores; the load average and the CPU/wall ratio are recorded
with every run.

A further worker (``--subset`` rows, default 20k, budget 20%) compares objectives: facility location
``f(S) = sum_j max_{i in S} max(0, cos(i, j))`` for the current implementation, the current cells with a
bench-local stochastic greedy (Mirzasoleiman et al. 2015, eps = 0.01; measured, not used), ~1k-row cells, the
before scheme, the exact lazy greedy on the whole subset (reference) and random; and the k-center
covering radius (max cosine distance to the nearest pick; lower is better) for the exact k-center, the current
and before partitioned schemes forced onto the subset, 2k-row cells, and random.

Run from the repository root (~13 minutes at load ~6, most of it the BEFORE rows; each strategy is stopped at
``--timeout``, default 240 s, and then reports its partial progress and an extrapolated total; generating the
data adds ~15 s)::

    .venv/bin/python bench/selection_scale.py                    # writes bench/results/selection_scale.json
    .venv/bin/python bench/selection_scale.py --n 200000 --strategies random,kcenter --out /tmp/scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
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
PARTITIONED = ("kcenter", "facility")
DIM = 384
COMPONENTS = 200
N_TARGETS = 1000
TARGET_COMPONENTS = 10
BUDGET = 0.2
TIME_TARGET_S = 120.0
THREADS = 2
console = Console(width=150)

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
    """Wraps ``strategies.balanced_cells`` and a per-cell solver to time them and record the cells (no change in
    what they compute)."""

    def __init__(self, solver_name: str, cell_rows: int) -> None:
        from tasks.selection import strategies

        self.k = 0
        self.cap = 2 * cell_rows
        self.partition_s = 0.0
        self.partition_done = False
        self.cell_sizes: list[int] = []
        self.solve_s = 0.0
        self.cells: list[tuple[int, int]] = []  # (rows, budget) of each cell solved
        original_cells = strategies.balanced_cells
        original_solver = getattr(strategies, solver_name)
        instrument = self

        def timed_cells(x: np.ndarray, cell_rows: int, rng: np.random.Generator) -> list[np.ndarray]:
            start = time.perf_counter()
            cells = original_cells(x, cell_rows, rng)
            instrument.partition_s += time.perf_counter() - start
            instrument.partition_done = True
            instrument.cell_sizes = [len(c) for c in cells]
            return cells

        def timed_solver(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
            start = time.perf_counter()
            out = original_solver(x, k, rng)
            instrument.solve_s += time.perf_counter() - start
            instrument.cells.append((len(x), k))
            return out

        strategies.balanced_cells = timed_cells
        setattr(strategies, solver_name, timed_solver)

    def report(self, total_s: float, facility: bool, complete: bool) -> dict[str, Any]:
        sizes = np.array(self.cell_sizes or [0])
        solved = np.array([c[0] for c in self.cells] or [0])
        out: dict[str, Any] = {
            "scheme": f"balanced_cells: k-means levels on samples, cells capped at {self.cap} rows",
            "cells": len(self.cell_sizes), "cells_with_budget": len(self.cells), "cap": self.cap,
            "cell_rows": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
                          "mean": float(sizes.mean())},
            "max_solved_cell_rows": int(solved.max()), "within_cap": bool(solved.max() <= self.cap),
            "partition_s": self.partition_s if self.partition_done else None, "solve_s": self.solve_s,
            "other_s": total_s - self.partition_s - self.solve_s}
        return finish_report(out, solved, total_s, self.solve_s, self.cells, self.k,
                             self.partition_done, facility, complete, single=True)


def finish_report(out: dict[str, Any], solved: np.ndarray, total_s: float,
                  solve_s: float, cells: list[tuple[int, int]], k: int, partition_done: bool, facility: bool,
                  complete: bool, single: bool) -> dict[str, Any]:
    """Partial progress (when stopped at the timeout) or, for facility location, the matmul share of the
    per-cell time, re-timed for every solved cell's shape with the threads the strategy used."""
    if not complete:
        done = sum(c[1] for c in cells) / max(k, 1)
        out["partial"] = {"partition_finished": partition_done, "budget_done": done, "elapsed_s": total_s,
                          "cells_done": len(cells)}
        if partition_done and done > 0:  # cells are solved in order: extrapolate the per-cell phase
            out["partial"]["estimated_total_s"] = total_s + solve_s * (1 / done - 1)
        return out
    if facility and solved.any():  # GEMM time depends on the shape only: re-time every cell's on stand-in rows
        stand_in = np.random.default_rng(0).standard_normal((int(solved.max()), DIM), dtype=np.float32)
        from tasks.selection import strategies

        with strategies.single_threaded() if single else contextlib.nullcontext():
            start = time.perf_counter()
            for m in solved:
                np.maximum(stand_in[:m] @ stand_in[:m].T, 0.0)
            matmul = time.perf_counter() - start
        out["solve_split_estimate"] = {"similarity_matrix_s": matmul, "greedy_loop_s": solve_s - matmul,
                                       "cells_retimed": len(solved)}
    return out


def run_strategy(name: str, x: np.ndarray, targets: np.ndarray, scores: np.ndarray, k: int,
                 seed: int) -> np.ndarray:
    """The strategy as ``tasks.selection`` runs it (or the BEFORE copy)."""
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
    if name == "kcenter_before":
        return partitioned_before(strategies.kcenter_exact, x, k, rng, BEFORE_KCENTER_EXACT_MAX)
    if name == "facility_before":
        return partitioned_before(strategies.facility_location_exact, x, k, rng, BEFORE_FACILITY_EXACT_MAX)
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
    if args.worker == "kcenter":
        inst = Instrument("kcenter_exact", strategies.KCENTER_CELL_ROWS)
    elif args.worker == "facility":
        inst = Instrument("facility_location_exact", strategies.FACILITY_CELL_ROWS)
    if inst is not None:
        inst.k = k
    BEFORE_STATS["k"] = k
    loaded_rss, process_peak_before = rss_mb(), peak_rss_mb()
    precise = reset_peak()
    signal.signal(signal.SIGTERM, on_term)
    complete = True
    picked = np.empty(0, np.int64)
    cpu0, start = cpu_seconds(), time.perf_counter()
    try:
        picked = np.asarray(run_strategy(args.worker, x, targets, scores, k, args.seed), dtype=np.int64)
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
        "env_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "picked_sha256": hashlib.sha256(picked.tobytes()).hexdigest() if complete else None,
        "exact_max": {"kcenter": strategies.KCENTER_EXACT_MAX, "facility": strategies.FACILITY_EXACT_MAX},
        "cell_rows": {"kcenter": strategies.KCENTER_CELL_ROWS, "facility": strategies.FACILITY_CELL_ROWS}}
    if inst is not None:
        doc["partition"] = inst.report(wall, args.worker == "facility", complete)
    if args.worker.endswith("_before"):
        doc["partition"] = before_report(wall, args.worker == "facility_before", complete)
    Path(args.worker_out).write_text(json.dumps(doc, indent=2))


# ----------------------------------------------------------------------------------------------- before
# BEFORE, bench-local: the partition scheme tasks/selection used until the cell cap (commit 60f47ca), verbatim
# except for the timing hooks. Kept to measure the change side by side under the same load.

BEFORE_KCENTER_EXACT_MAX = 20_000  # the constants of that scheme (FACILITY_EXACT_MAX is 4,000 now)
BEFORE_FACILITY_EXACT_MAX = 2_000
BEFORE_STATS: dict[str, Any] = {"cells_solved": [], "solve_s": 0.0, "kmeans_s": None}


def partitioned_before(solver: Callable[[np.ndarray, int, np.random.Generator], np.ndarray], x: np.ndarray, k: int,
                       rng: np.random.Generator, exact_max: int) -> np.ndarray:
    """BEFORE. Run ``solver`` exactly when small, else per MiniBatchKMeans cell with proportional budgets."""
    n = len(x)
    if n <= exact_max:
        return solver(x, k, rng)
    from sklearn.cluster import MiniBatchKMeans

    start = time.perf_counter()
    cells = int(np.ceil(n / exact_max * 2))
    km = MiniBatchKMeans(n_clusters=cells, random_state=int(rng.integers(2**31)), n_init=1, batch_size=8192,
                         max_iter=20)
    labels = km.fit_predict(x)
    BEFORE_STATS.update(kmeans_s=time.perf_counter() - start, n_clusters=cells, n_steps=int(km.n_steps_),
                        n_iter=int(km.n_iter_))
    sizes = np.bincount(labels, minlength=cells)
    budgets = np.floor(sizes / n * k).astype(int)
    budgets[np.argsort(-(sizes / n * k - budgets))[: k - budgets.sum()]] += 1  # largest remainders
    BEFORE_STATS["cell_sizes"] = sizes.tolist()
    picked = []
    for cell in range(cells):
        rows = np.flatnonzero(labels == cell)
        if budgets[cell] and len(rows):
            start = time.perf_counter()
            picked.append(rows[solver(x[rows], int(budgets[cell]), rng)])
            BEFORE_STATS["solve_s"] += time.perf_counter() - start
            BEFORE_STATS["cells_solved"].append((len(rows), int(budgets[cell])))
    return np.concatenate(picked) if picked else np.empty(0, np.int64)


def before_report(total_s: float, facility: bool, complete: bool) -> dict[str, Any]:
    s = BEFORE_STATS
    sizes = np.array(s.get("cell_sizes") or [0])
    solved = np.array([c[0] for c in s["cells_solved"]] or [0])
    kmeans_s = s["kmeans_s"] or 0.0
    out: dict[str, Any] = {
        "scheme": f"BEFORE: MiniBatchKMeans({s.get('n_clusters')}) over all rows, cells not capped",
        "cells": int((sizes > 0).sum()), "cells_with_budget": len(s["cells_solved"]),
        "kmeans": {k: s.get(k) for k in ("n_clusters", "n_steps", "n_iter")},
        "cell_rows": {"min": int(sizes[sizes > 0].min()) if (sizes > 0).any() else 0,
                      "median": float(np.median(sizes[sizes > 0])) if (sizes > 0).any() else 0.0,
                      "max": int(sizes.max()), "mean": float(sizes[sizes > 0].mean()) if (sizes > 0).any() else 0.0},
        "max_solved_cell_rows": int(solved.max()), "partition_s": s["kmeans_s"], "solve_s": s["solve_s"],
        "other_s": total_s - kmeans_s - s["solve_s"]}
    return finish_report(out, solved, total_s, s["solve_s"], s["cells_solved"], s["k"],
                         s["kmeans_s"] is not None, facility, complete, single=False)


# ----------------------------------------------------------------------------------------------- quality


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
    import heapq

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


def stochastic_greedy_facility(x: np.ndarray, k: int, rng: np.random.Generator,
                                  epsilon: float = 0.01) -> np.ndarray:
    """ALTERNATIVE, bench-local (measured, not used by tasks/selection). Stochastic greedy (Mirzasoleiman et al.
    2015) for facility location: each step takes the best of a random ``(m / k) ln(1 / epsilon)``
    candidates, a (1 - 1/e - epsilon) approximation in expectation. Unlike lazy greedy, whose re-evaluations are
    data-dependent, the cost is fixed: one (m, m) similarity matrix plus ``k`` vectorised ``(s, m)`` passes."""
    m = len(x)
    k = min(k, m)
    if k == 0:
        return np.empty(0, np.int64)
    sims = (x @ x.T).astype(np.float32, copy=False)  # (m, m)
    np.maximum(sims, 0.0, out=sims)
    covered = np.zeros(m, dtype=np.float32)
    available = np.ones(m, dtype=bool)
    sample = max(1, min(m, math.ceil(m / k * math.log(1 / epsilon))))
    buf = np.empty((sample, m), dtype=np.float32)  # (s, m) gains of the sampled candidates
    chosen = np.empty(k, dtype=np.int64)
    for step in range(k):
        pool = np.flatnonzero(available)
        cand = pool if len(pool) <= sample else pool[rng.choice(len(pool), size=sample, replace=False)]
        gains = buf[: len(cand)]
        np.subtract(sims[cand], covered, out=gains)
        np.maximum(gains, 0.0, out=gains)
        best = int(cand[int(np.argmax(gains.sum(1)))])
        chosen[step] = best
        available[best] = False
        np.maximum(covered, sims[best], out=covered)
    return chosen


def subset_quality(args: argparse.Namespace) -> None:
    """Objectives of current vs before vs exact on a ``--subset`` subsample (budget 20%)."""
    from tasks.selection import strategies

    path, _ = data_paths(args.n, args.seed)
    full = np.load(path, mmap_mode="r")
    rows = np.sort(np.random.default_rng(args.seed + 7).choice(len(full), size=args.subset, replace=False))
    x = np.ascontiguousarray(full[rows])
    k = round(BUDGET * len(x))
    st = strategies
    facility: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "current: strategies.facility_location (capped cells ~2k, lazy greedy)":
            lambda rng: st.facility_location(x, k, rng),
        "current cells + stochastic greedy (eps 0.01, bench-local alternative)": lambda rng: st.partitioned(
            stochastic_greedy_facility, x, k, rng, st.FACILITY_CELL_ROWS),
        "current cells ~1k + lazy greedy": lambda rng: st.partitioned(st.facility_location_exact, x, k, rng, 1_000),
        "BEFORE: MiniBatchKMeans cells + lazy greedy": lambda rng: partitioned_before(
            st.facility_location_exact, x, k, rng, BEFORE_FACILITY_EXACT_MAX),
        "exact lazy greedy on the whole subset (reference)": lambda rng: exact_lazy_greedy_inplace(x, k, rng),
        "random": lambda rng: st.random_pick(len(x), k, rng)}
    kcenter: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "exact: strategies.kcenter (subset <= KCENTER_EXACT_MAX)": lambda rng: st.kcenter(x, k, rng),
        "current scheme forced (capped cells ~5k)": lambda rng: st.partitioned(
            st.kcenter_exact, x, k, rng, st.KCENTER_CELL_ROWS),
        "current scheme forced, cells ~2k": lambda rng: st.partitioned(st.kcenter_exact, x, k, rng, 2_000),
        "BEFORE scheme forced (exact_max = n - 1: 3 MiniBatchKMeans cells)": lambda rng: partitioned_before(
            st.kcenter_exact, x, k, rng, len(x) - 1),
        "random": lambda rng: st.random_pick(len(x), k, rng)}
    out: dict[str, Any] = {"subset": len(x), "k": k, "seed": args.seed, "facility": {}, "kcenter": {},
                           "note": "k-center is exact at this size; its partitioned variants are forced onto the "
                                   "subset to measure what partitioning costs in covering radius"}
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


def spawn(args: argparse.Namespace, worker_name: str, out: Path, extra: list[str] | None = None,
          threads: int = THREADS) -> dict[str, Any]:
    """Run one worker; on ``--timeout`` send SIGTERM so it reports its partial progress."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
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


def scheme_text(res: dict[str, Any]) -> str:
    part = res.get("partition") or {}
    if not part.get("cells"):
        return res.get("error", "")[:60]
    text = (f"{part['cells']} cells of {part['cell_rows']['min']}-{part['cell_rows']['max']} rows"
            + (f" (cap {part['cap']})" if "cap" in part else " (no cap)")
            + f"; partition {fmt(part.get('partition_s'), '.0f')}s, cells {fmt(part.get('solve_s'), '.0f')}s")
    partial = part.get("partial") or {}
    if partial:
        state = "done" if partial["partition_finished"] else "running"
        text = (f"stopped at {partial['elapsed_s']:.0f}s: partition {state}, {partial['budget_done']:.0%} of the "
                "budget picked; " + text)
    return text


def seconds_text(res: dict[str, Any]) -> str:
    partial = (res.get("partition") or {}).get("partial") or {}
    if res.get("seconds") is None and partial.get("estimated_total_s"):
        return f"~{partial['estimated_total_s']:.0f} (est.)"
    if res.get("seconds") is None and partial:
        return f"> {partial['elapsed_s']:.0f}"
    return fmt(res.get("seconds"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    ap.add_argument("--timeout", type=float, default=240.0,
                    help="seconds before a strategy's worker is stopped (it then reports partial progress)")
    ap.add_argument("--no-before", dest="before", action="store_false",
                    help="skip the BEFORE (uncapped MiniBatchKMeans) rows and their subset objectives")
    ap.add_argument("--no-determinism", dest="determinism", action="store_false",
                    help="skip the second, 1-thread run of kcenter and facility")
    ap.add_argument("--subset", type=int, default=20_000, help="rows for the objective comparison (0: skip)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "selection_scale.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "subset_quality":
        subset_quality(args)
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
    names: list[str] = []
    for name in (s for s in args.strategies.split(",") if s):
        names += [name, f"{name}_before"] if args.before and name in PARTITIONED else [name]
    results: dict[str, Any] = {}
    for name in names:
        console.print(f"running {name} ...")
        results[name] = res = spawn(args, name, tmp)
        if res.get("error"):
            console.print(f"[red]{name}: {res['error'][-600:]}[/]")
        if "cpu_seconds" in res:
            console.print(f"  {seconds_text(res)}s (cpu {res['cpu_seconds']:.1f}s), peak RSS "
                          f"{res['peak_rss_mb']:.0f} MB, overhead {res['overhead_mb']:.0f} MB, load "
                          f"{res['load_avg_after'][0]:.1f}" + (f"; {scheme_text(res)}" if "partition" in res else ""))
    determinism: dict[str, Any] = {}
    if args.determinism:
        for name in (n for n in names if n in PARTITIONED and results[n].get("picked_sha256")):
            console.print(f"determinism: {name} again in a fresh process with 1 thread ...")
            again = spawn(args, name, tmp, threads=1)
            determinism[name] = {"threads_2_sha256": results[name]["picked_sha256"],
                                 "threads_1_sha256": again.get("picked_sha256"),
                                 "same": again.get("picked_sha256") == results[name]["picked_sha256"],
                                 "threads_1_seconds": again.get("seconds"),
                                 "threads_1_load_avg_after": again.get("load_avg_after")}
            console.print(f"  same indices: {determinism[name]['same']}")
    quality = None
    if args.subset:
        console.print(f"objectives on a {args.subset:,}-row subset ...")
        quality = spawn(args, "subset_quality", tmp, ["--subset", str(args.subset)])
        console.print(json.dumps(quality, indent=1))
    tmp.unlink(missing_ok=True)

    input_mb = args.n * DIM * 4 / 2**20
    table = Table(title=f"selection at scale: n={args.n:,}, d={DIM}, k={round(BUDGET * args.n):,} (20%), "
                        f"{THREADS} BLAS threads in the environment", title_justify="left")
    for col in ("strategy", "wall s", "cpu s", "peak RSS MB", "overhead MB", "load", "< 120 s", "bounded mem",
                "scheme"):
        table.add_column(col, justify="left" if col in ("strategy", "scheme") else "right")
    verdict: dict[str, Any] = {}
    for name, res in results.items():
        part = res.get("partition") or {}
        ok_time = res.get("seconds") is not None and res["seconds"] < TIME_TARGET_S
        capped = part.get("within_cap", not part)  # BEFORE rows have no cap: not bounded by design
        ok_mem = res.get("overhead_mb") is not None and res["overhead_mb"] <= input_mb and capped
        verdict[name] = {"time_ok": ok_time, "memory_ok": bool(ok_mem)}
        label = name + (" (BEFORE)" if name.endswith("_before") else "")
        table.add_row(label, seconds_text(res), fmt(res.get("cpu_seconds")), fmt(res.get("peak_rss_mb"), ".0f"),
                      fmt(res.get("overhead_mb"), ".0f"), fmt((res.get("load_avg_after") or [None])[0]),
                      "[green]yes[/]" if ok_time else "[red]no[/]", "[green]yes[/]" if ok_mem else "[red]no[/]",
                      scheme_text(res))
    console.print(table)
    current = [n for n in results if not n.endswith("_before")]
    passed = all(verdict[n]["time_ok"] and verdict[n]["memory_ok"] for n in current)
    console.print(("[green]PASS[/]" if passed else "[red]FAIL[/]") + ": every strategy < 120 s with overhead <= "
                  f"input size ({input_mb:.0f} MB) and cells within their cap: " + ", ".join(
                      f"{n} {'ok' if verdict[n]['time_ok'] and verdict[n]['memory_ok'] else 'missed'}"
                      for n in current))
    if determinism:
        console.print("determinism (same seed, fresh process, 2 vs 1 threads): " + ", ".join(
            f"{n} {'same' if d['same'] else 'DIFFERENT'}" for n, d in determinism.items()))
    doc = {"benchmark": "selection_scale", "created_at": dt.datetime.now(dt.UTC).isoformat(),
           "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
           "config": {"n": args.n, "dim": DIM, "components": COMPONENTS, "targets": N_TARGETS, "budget": BUDGET,
                      "seed": args.seed, "blas_threads": THREADS, "time_target_s": TIME_TARGET_S,
                      "memory_target": "peak RSS above the loaded input <= input size, no cell above its cap",
                      "input_mb": input_mb},
           "results": results, "determinism": determinism, "subset_quality": quality,
           "verdict": {**verdict, "pass": passed, "deterministic": all(d["same"] for d in determinism.values())},
           "wall_seconds": time.perf_counter() - wall}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

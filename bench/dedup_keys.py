"""Store-wide clustering's key work, side by side: LSH bucket pairs and first-equal rows, ours against the
argsort-everything version they replaced, at 1M, 3M and 10M rows.

``custody ingest`` clusters the whole store at once (``tasks.dedup.sharded.cluster_partitions``): per LSH band,
the rows sharing a key (``tasks.dedup.clusters._bucket_pairs``), and per record id and content hash, each row's
first equal (``first_equal``). The version before sorted every row's index by key (a stable argsort, then a gather
of the keys in that order): at 10M rows the arrays outgrow the caches and it cost 3 s a band, 16 bands an ingest,
growing as n^1.2. Ours sorts the keys alone (no gather), finds the few repeated values, and sorts only the rows
holding them. Keys are random 64-bit values (band keys are hashes) with a share of rows given another row's key:
0 (the synthetic scale corpus: no near-duplicates), 5% and 20% (a corpus dense in copies).

Both versions run in this one process on the same arrays; the pairs they find are checked equal. Results
(seconds, best of ``--repeat``; growth exponents between sizes) go to ``bench/results/dedup_keys.json``::

    .venv/bin/python bench/dedup_keys.py [--sizes 1000000,3000000,10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks.dedup.clusters import _ALL_PAIRS_MAX_BUCKET, _bucket_pairs, first_equal

RESULTS = Path(__file__).parent / "results" / "dedup_keys.json"
SHARES = (0.0, 0.05, 0.20)


def bucket_pairs_before(keys: np.ndarray) -> np.ndarray:
    """The reference: ``_bucket_pairs`` as it was (every row argsorted, keys gathered in that order)."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    starts = np.flatnonzero(np.r_[True, ~same])
    sizes = np.diff(np.r_[starts, n])
    chained = np.repeat(sizes > _ALL_PAIRS_MAX_BUCKET, sizes)[1:] & same
    found = [order[:-1][chained] * n + order[1:][chained]]
    for size in range(2, _ALL_PAIRS_MAX_BUCKET + 1):
        members = order[starts[sizes == size][:, None] + np.arange(size)]
        ii, jj = np.triu_indices(size, k=1)
        found.append((members[:, ii] * n + members[:, jj]).ravel())
    return np.concatenate(found)


def first_equal_before(*keys: np.ndarray) -> np.ndarray:
    """The reference: ``first_equal`` as it was (every row lexsorted)."""
    n = len(keys[0])
    order = np.lexsort((np.arange(n), *keys[::-1]))
    differ = np.zeros(n, bool)
    differ[0] = True
    for key in keys:
        ranked = key[order]
        differ[1:] |= ranked[1:] != ranked[:-1]
    first = np.empty(n, np.int64)
    first[order] = order[np.maximum.accumulate(np.where(differ, np.arange(n), 0))]
    return first


def keys_with_copies(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    keys = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    copies = int(n * share)
    keys[rng.integers(0, n, copies)] = keys[rng.integers(0, n, copies)]
    return keys


def best_of(repeat: int, fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 4), out


def measure(n: int, share: float, repeat: int) -> dict[str, float]:
    rng = np.random.default_rng(n)
    band, hash_hi, hash_lo = (keys_with_copies(rng, n, share) for _ in range(3))
    hash_lo[:] = np.where(rng.random(n) < 0.5, hash_lo, 0)
    out = {}
    out["bucket_pairs_before_s"], before = best_of(repeat, lambda: bucket_pairs_before(band))
    out["bucket_pairs_ours_s"], ours = best_of(repeat, lambda: _bucket_pairs(band))
    if not np.array_equal(np.sort(before), np.sort(ours)):
        raise AssertionError(f"bucket pairs differ at n={n}, share={share}")
    out["bucket_pairs"] = len(ours)
    out["first_equal_before_s"], before = best_of(repeat, lambda: first_equal_before(hash_hi, hash_lo))
    out["first_equal_ours_s"], ours = best_of(repeat, lambda: first_equal(hash_hi, hash_lo))
    if not np.array_equal(before, ours):
        raise AssertionError(f"first_equal differs at n={n}, share={share}")
    out["first_equal_repeated_rows"] = int(np.sum(ours != np.arange(n)))
    return out


def exponents(rows: dict[int, dict[str, float]]) -> dict[str, float]:
    sizes = sorted(rows)
    return {k: round(math.log(rows[sizes[-1]][k] / rows[sizes[-2]][k]) / math.log(sizes[-1] / sizes[-2]), 3)
            for k in rows[sizes[-1]] if k.endswith("_s")} if len(sizes) > 1 else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    doc = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                       "numpy": np.__version__},
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "repeat": args.repeat, "shares": {}}
    for share in SHARES:
        rows = {}
        for n in sizes:
            rows[n] = measure(n, share, args.repeat)
            print(f"share {share:.0%} n {n:>10,}: {rows[n]}", flush=True)
        doc["shares"][f"{share:.2f}"] = {"sizes": {str(n): r for n, r in rows.items()},
                                         "exponents_largest_two": exponents(rows)}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Partitioned diversity strategies: every cell within the cap whatever the data, and the same seed giving the
same indices in a fresh process with a different thread count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.selection import strategies

ROOT = Path(__file__).resolve().parents[2]


def skewed_pool(n: int = 6_000, d: int = 16, seed: int = 0) -> np.ndarray:
    """80% of the rows in one tight blob (a third of them exact duplicates), the rest in 5 looser clusters:
    k-means alone leaves one huge cell here."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d))
    comp = np.where(rng.random(n) < 0.8, 0, rng.integers(1, 6, n))
    x = centres[comp] + rng.standard_normal((n, d)) * np.where(comp == 0, 0.01, 0.5)[:, None]
    blob = np.flatnonzero(comp == 0)
    x[blob[: len(blob) // 3]] = x[blob[0]]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def shrink_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small exact limits and cells, so a few thousand rows take the partitioned path."""
    monkeypatch.setattr(strategies, "KCENTER_EXACT_MAX", 400)
    monkeypatch.setattr(strategies, "KCENTER_CELL_ROWS", 150)
    monkeypatch.setattr(strategies, "FACILITY_EXACT_MAX", 200)
    monkeypatch.setattr(strategies, "FACILITY_CELL_ROWS", 100)


@pytest.mark.parametrize("pool", ["skewed", "identical"])
def test_balanced_cells_cover_every_row_once_and_respect_the_cap(pool: str) -> None:
    x = skewed_pool() if pool == "skewed" else np.full((3_000, 16), 0.25, dtype=np.float32)
    cells = strategies.balanced_cells(x, 100, np.random.default_rng(0))
    sizes = np.array([len(c) for c in cells])
    assert sizes.max() <= 200 and sizes.min() >= 1
    rows = np.concatenate(cells)
    assert len(rows) == len(x) and np.array_equal(np.sort(rows), np.arange(len(x)))
    assert all(np.all(np.diff(c) > 0) for c in cells)


@pytest.mark.parametrize("name", ["kcenter", "facility_location"])
def test_partitioned_solvers_never_see_a_cell_above_the_cap(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    shrink_thresholds(monkeypatch)
    solver_name, cell_rows = (("kcenter_exact", 150) if name == "kcenter" else
                              ("facility_location_exact", 100))
    seen: list[int] = []
    original = getattr(strategies, solver_name)

    def recording(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        seen.append(len(x))
        return original(x, k, rng)

    monkeypatch.setattr(strategies, solver_name, recording)
    x = skewed_pool()
    picked = getattr(strategies, name)(x, 600, np.random.default_rng(0))
    assert len(seen) > 1 and max(seen) <= 2 * cell_rows
    assert len(picked) == len(np.unique(picked)) == 600


SCRIPT = """
import json, sys
import numpy as np
from tasks.selection import strategies
from tests.selection.test_strategies import skewed_pool
strategies.KCENTER_EXACT_MAX, strategies.KCENTER_CELL_ROWS = 400, 150
strategies.FACILITY_EXACT_MAX, strategies.FACILITY_CELL_ROWS = 200, 100
x = skewed_pool()
out = {name: getattr(strategies, name)(x, 600, np.random.default_rng(int(sys.argv[1]))).tolist()
       for name in ("kcenter", "facility_location")}
print(json.dumps(out))
"""


def picks_in_fresh_process(seed: int, threads: int) -> dict[str, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(seed)], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=300)
    return json.loads(proc.stdout)


def test_same_seed_same_indices_across_processes_and_thread_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    first = picks_in_fresh_process(seed=5, threads=1)
    second = picks_in_fresh_process(seed=5, threads=2)
    assert first == second
    shrink_thresholds(monkeypatch)
    x = skewed_pool()
    for name, picked in first.items():
        assert len(set(picked)) == 600
        assert getattr(strategies, name)(x, 600, np.random.default_rng(5)).tolist() == picked
        assert getattr(strategies, name)(x, 600, np.random.default_rng(6)).tolist() != picked

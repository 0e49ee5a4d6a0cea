"""Synthetic records with random labels: a setting where a model can only memorise, for the unlearning gate's
tests and calibration bench (``bench/gate_calibration.py``).

Beside ``tasks.tiny`` (whose vocabulary the texts use) rather than in it: ``tasks.tiny`` sits below the scoring
stage, and building ``Split``s here imports training, which imports selection and scoring.
"""

from __future__ import annotations

import numpy as np

from tasks.tiny import COMMON
from tasks.training.data import Split


def random_label_splits(n_train: int, n_test: int, seed: int = 0, words: int = 8) -> dict[str, Split]:
    """Train/validation/test ``Split``s of synthetic texts (``words`` random common words each, all distinct) with
    labels drawn at random: nothing generalises, so whatever a model knows about a train record it memorised —
    the setting where membership evidence must have power (``bench/gate_calibration.py``, the gate's tests).
    The validation split is empty (no learning curves to pay for)."""
    rng = np.random.default_rng(seed)
    texts: dict[str, None] = {}
    while len(texts) < n_train + n_test:
        texts[" ".join(rng.choice(COMMON, words))] = None
    pool, y = list(texts), rng.integers(0, 2, n_train + n_test)

    def split(name: str, lo: int, hi: int) -> Split:
        return Split([f"{name}-{i:05d}" for i in range(lo, hi)], pool[lo:hi], y[lo:hi], np.zeros(hi - lo, np.int64))

    return {"train": split("train", 0, n_train), "validation": split("validation", 0, 0),
            "test": split("test", n_train, n_train + n_test)}

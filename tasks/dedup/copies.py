"""Near copies of short texts: what makes two texts copies, and the LSH keys that find candidates.

Word 5-gram MinHash at Jaccard 0.8 (``minhash``, ``clusters``) finds long near-duplicates, but a one-word edit of a
20-word text keeps only ~0.6 of its word 5-grams, so it misses the light edits of tweets and review snippets that
a deletion must follow. Here a text is the set of character n-grams of its match form (``tasks.fingerprints``:
case, punctuation and spacing differences gone), and two texts are copies when the Jaccard of those sets reaches
``CopyConfig.threshold``.

Candidates come from MinHash LSH so that a query is never compared with every stored text: each text's signature
is cut into bands whose keys a store keeps per staging partition (``tasks.dedup.copy_index``) and a deletion's
fingerprints keep salted (``tasks.dedup.withdrawn``). Candidates are verified exactly on the shingle sets: the
keys decide what is compared, never what is a copy. The parameters are the ones ``bench/near_copies.py`` chose
(its numbers are in bench/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tasks.dedup.minhash import MinhashConfig, signatures_of_hashes
from tasks.dedup.minhash import band_keys as lsh_band_keys
from tasks.fingerprints import SHINGLE_CHARS, distinct_sets, jaccard, ngram_hashes


@dataclass(frozen=True)
class CopyConfig:
    """Near-copy parameters (defaults chosen by ``bench/near_copies.py``).

    Attributes:
        ngram: characters per shingle of the match form.
        bands, rows: LSH banding over ``bands * rows`` MinHash permutations; a pair of Jaccard ``s`` becomes a
            candidate when they share ``min_shared`` bands, each with probability ``s**rows``
            (``candidate_probability``): 0.989 at the threshold for two of 21 x 3 (0.9988 for one).
        min_shared: bands a pair must share to be a candidate. Two instead of one cut a 1,000-text search's
            candidates in 5 partitions of a 3M-record store 2,300-fold (42,722 pairs sharing one band, all of
            Jaccard < 0.16, against 18 sharing two), so verifying them no longer grows with the store; on the
            benchmark's planted copies LSH recall stays 1.0 (2,903 of 2,903 true pairs, ``bench/near_copies.py``).
        threshold: exact character-shingle Jaccard at or above which two texts are copies.
        seed: permutation seed.
    """

    ngram: int = SHINGLE_CHARS
    bands: int = 21
    rows: int = 3
    min_shared: int = 2
    threshold: float = 0.65
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if min(self.ngram, self.bands, self.rows) < 1:
            raise ValueError(f"ngram, bands and rows must be positive, got {self.ngram}, {self.bands}, {self.rows}")
        if not 1 <= self.min_shared <= self.bands:
            raise ValueError(f"min_shared must be in [1, bands], got {self.min_shared}")

    def __str__(self) -> str:
        return f"{self.index_name}_m{self.min_shared}"

    @property
    def index_name(self) -> str:
        """What the copy index depends on (``min_shared`` is applied when it is read, so it is not part of it)."""
        return f"copies_c{self.ngram}_b{self.bands}r{self.rows}_t{self.threshold:.2f}_s{self.seed}"

    @cached_property
    def minhash(self) -> MinhashConfig:
        """The permutations (the word-shingle fields of ``MinhashConfig`` play no part here)."""
        return MinhashConfig(num_perm=self.bands * self.rows, seed=self.seed, bands=self.bands, rows=self.rows,
                             verify=False)

    def candidate_probability(self, similarity: float) -> float:
        """Chance that two texts of this Jaccard share at least ``min_shared`` bands."""
        p = similarity ** self.rows
        fewer = sum(math.comb(self.bands, k) * p ** k * (1.0 - p) ** (self.bands - k) for k in range(self.min_shared))
        return 1.0 - fewer


DEFAULT = CopyConfig()


def shingle_sets(texts: list[str], cfg: CopyConfig = DEFAULT) -> list[np.ndarray]:
    """Sorted distinct character-shingle hashes of each text (what verification compares)."""
    return distinct_sets(*ngram_hashes(texts, cfg.ngram), len(texts))


def band_keys(texts: list[str], cfg: CopyConfig = DEFAULT) -> np.ndarray:
    """LSH band keys, shape ``(len(texts), bands)`` uint64; equal keys in one band mean a candidate pair."""
    return band_keys_of_hashes(*ngram_hashes(texts, cfg.ngram), len(texts), cfg)


def band_keys_of_hashes(hashes: np.ndarray, owner: np.ndarray, n_sets: int, cfg: CopyConfig = DEFAULT) -> np.ndarray:
    """Band keys of ``n_sets`` shingle-hash sets given as uint64 ``hashes`` grouped by ``owner`` (set after set):
    the texts' own hashes, or the salted ones a deletion fingerprint keeps."""
    folded = (hashes ^ (hashes >> np.uint64(32))).astype(np.uint32)
    sigs = signatures_of_hashes(folded, np.bincount(owner, minlength=n_sets), cfg.minhash)
    keys = lsh_band_keys(sigs, cfg.minhash)
    return keys * np.uint64(0x9E3779B97F4A7C15) + np.arange(cfg.bands, dtype=np.uint64)  # a band's keys are its own


def candidate_pairs(query_keys: np.ndarray, stored_keys: np.ndarray, min_shared: int = 1) -> np.ndarray:
    """``(stored row, query row)`` pairs sharing at least ``min_shared`` band keys, distinct, shape ``(k, 2)``."""
    q_flat, s_flat = query_keys.ravel(), stored_keys.ravel()
    order = np.argsort(q_flat, kind="stable")
    q_sorted = q_flat[order]
    lo, hi = np.searchsorted(q_sorted, s_flat, "left"), np.searchsorted(q_sorted, s_flat, "right")
    counts = hi - lo
    if not counts.any():
        return np.empty((0, 2), dtype=np.int64)
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
    stored = np.repeat(np.arange(len(s_flat)) // stored_keys.shape[1], counts)
    query = order[starts] // query_keys.shape[1]
    pairs, shared = np.unique(np.stack([stored, query], axis=1), axis=0, return_counts=True)
    return pairs[shared >= min_shared]


def verified(pairs: np.ndarray, stored_sets: list[np.ndarray], query_sets: list[np.ndarray],
             threshold: float) -> np.ndarray:
    """The pairs whose exact shingle Jaccard reaches ``threshold``, and only those."""
    keep = [jaccard(stored_sets[s], query_sets[q]) >= threshold for s, q in pairs]
    return pairs[np.asarray(keep, dtype=bool)] if len(pairs) else pairs

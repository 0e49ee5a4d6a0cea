"""Batched MinHash signatures, bit-for-bit compatible with datasketch's default ``affine32`` scheme.

A signature value is ``min over shingles of (a_k * fmix32(sha1_32(shingle)) + b_k) mod 2^32`` with odd
``a_k`` and ``(a_k, b_k)`` drawn exactly as datasketch 2.x draws them, so our signatures equal
``datasketch.MinHash()`` fed the same shingles (tests check this). The difference is speed: we hash every shingle
of a whole batch of documents once and apply all permutations with a single numpy broadcast plus
``np.minimum.reduceat``, instead of one Python call per document (see ``bench/near_dup.py``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
from scipy.integrate import quad

MAX_HASH = np.uint32((1 << 32) - 1)
_WORD = re.compile(r"\w+", re.UNICODE)
_CHUNK_SHINGLES = 16_384  # 16k shingles x 128 perms x 4 bytes = 8 MiB of temporaries per chunk


def _lsh_error(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """False-positive and false-negative mass of the S-curve ``1 - (1 - s^r)^b`` around ``threshold``."""

    def p(s: float) -> float:
        return 1.0 - (1.0 - s ** float(rows)) ** float(bands)

    fp, _ = quad(p, 0.0, threshold)
    fn, _ = quad(lambda s: 1.0 - p(s), threshold, 1.0)
    return fp, fn


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fn_weight: float = 0.95) -> tuple[int, int]:
    """Bands and rows minimising weighted LSH error for ``threshold`` (datasketch's criterion).

    Misses weigh 19x more than false candidates by default: candidates are verified by signature
    agreement afterwards, so a false candidate costs one comparison while a miss loses a duplicate.
    """
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp, fn = _lsh_error(threshold, bands, rows)
            err = (1.0 - fn_weight) * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


@dataclass(frozen=True)
class MinhashConfig:
    """Near-duplicate detection parameters.

    Attributes:
        num_perm: permutations per signature (more: tighter Jaccard estimates, more memory).
        ngram: words per shingle; 5 word-grams is the datatrove/Gopher default for web text.
        threshold: Jaccard similarity at or above which two texts are near-duplicates.
        seed: permutation seed (datasketch's default is 1).
        bands, rows: LSH banding; derived from ``threshold`` and ``num_perm`` when left at 0.
        verify: drop LSH candidate pairs whose estimated Jaccard is below ``verify_threshold``.
        verify_sigmas: how far below ``threshold`` verification accepts, in standard errors of the estimate
            (sqrt(t(1-t)/num_perm), 0.035 at t=0.8 and 128 permutations): a pair whose true Jaccard is just
            above the threshold must not be lost to estimation noise.
    """

    num_perm: int = 128
    ngram: int = 5
    threshold: float = 0.8
    seed: int = 1
    bands: int = 0
    rows: int = 0
    verify: bool = True
    verify_sigmas: float = 1.5
    _banding: tuple[int, int] = field(init=False, repr=False, compare=False, default=(0, 0))

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.ngram < 1 or self.num_perm < 1:
            raise ValueError("ngram and num_perm must be positive")
        banding = (self.bands, self.rows) if self.bands and self.rows else optimal_bands(self.threshold, self.num_perm)
        if banding[0] * banding[1] > self.num_perm:
            raise ValueError(f"bands x rows = {banding[0] * banding[1]} exceeds num_perm={self.num_perm}")
        object.__setattr__(self, "_banding", banding)

    @property
    def verify_threshold(self) -> float:
        stderr = (self.threshold * (1.0 - self.threshold) / self.num_perm) ** 0.5
        return self.threshold - self.verify_sigmas * stderr

    @property
    def banding(self) -> tuple[int, int]:
        return self._banding

    def __str__(self) -> str:
        b, r = self.banding
        return f"minhash_p{self.num_perm}_n{self.ngram}_t{self.threshold:.2f}_b{b}r{r}_s{self.seed}"

    @cached_property
    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` uint32 arrays drawn in datasketch's order from ``RandomState(seed)``; ``a`` is odd."""
        gen = np.random.RandomState(self.seed)
        a = gen.randint(0, 1 << 31, self.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, self.num_perm, dtype=np.uint32)
        return a, b


def shingles(text: str, ngram: int) -> list[bytes]:
    """Lower-cased word n-grams as UTF-8 bytes; a text shorter than ``ngram`` words is one shingle."""
    words = _WORD.findall(text.lower())
    if not words:
        return []
    if len(words) <= ngram:
        return [" ".join(words).encode()]
    return [" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)]


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: a bijection that spreads structured hash inputs (uint32 wraps)."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


def signatures(texts: list[str], cfg: MinhashConfig) -> np.ndarray:
    """MinHash signatures of ``texts``, shape ``(len(texts), num_perm)``, dtype uint32.

    A text without any word gets the all-``MAX_HASH`` signature (similar only to other empty texts).
    """
    counts = np.zeros(len(texts), dtype=np.int64)
    hashes: list[int] = []
    for i, text in enumerate(texts):
        hs = [int.from_bytes(hashlib.sha1(s).digest()[:4], "little") for s in shingles(text, cfg.ngram)]
        hashes.extend(hs)
        counts[i] = len(hs)
    return signatures_of_hashes(np.fromiter(hashes, dtype=np.uint32, count=len(hashes)), counts, cfg)


def signatures_of_hashes(hashes: np.ndarray, counts: np.ndarray, cfg: MinhashConfig) -> np.ndarray:
    """MinHash signatures from 32-bit shingle hashes already computed, shape ``(len(counts), num_perm)``.

    Args:
        hashes: uint32 shingle hashes of every text, text after text (any shingling: words, characters).
        counts: how many of ``hashes`` belong to each text, in order; a text with none keeps ``MAX_HASH``.
        cfg: permutations (``num_perm``, ``seed``).
    """
    a, b = cfg.permutations
    out = np.full((len(counts), cfg.num_perm), MAX_HASH, dtype=np.uint32)
    if not len(hashes):
        return out
    hv = _fmix32(np.asarray(hashes, dtype=np.uint32))
    own = np.repeat(np.arange(len(counts)), counts)
    a_col, b_col = a[:, None], b[:, None]
    for lo in range(0, len(hv), _CHUNK_SHINGLES):
        chunk, chunk_own = hv[lo:lo + _CHUNK_SHINGLES], own[lo:lo + _CHUNK_SHINGLES]
        # (num_perm, n_shingles): shingles along the fast axis keep each row's reduction in cache
        phv = a_col * chunk[None, :]  # uint32 wraps: the arithmetic is mod 2^32
        phv += b_col
        starts = np.flatnonzero(np.r_[True, chunk_own[1:] != chunk_own[:-1]])
        mins = np.minimum.reduceat(phv, starts, axis=1).T  # (docs in chunk, num_perm)
        docs = chunk_own[starts]
        out[docs] = np.minimum(out[docs], mins)
    return out


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature positions (rows of two equal-shaped arrays)."""
    return np.mean(np.atleast_2d(sig_a) == np.atleast_2d(sig_b), axis=1)

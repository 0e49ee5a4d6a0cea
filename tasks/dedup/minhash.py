"""Batched MinHash signatures of word n-grams: shingled in bulk with Arrow and numpy, sketched by ``rensa``.

``signatures`` never builds a shingle string. One Arrow pass lower-cases and splits a whole batch into words,
each distinct word is hashed once (rensa's 64-bit token hash), and a word n-gram's hash is a polynomial of its
words' hashes, computed for every window of the batch with a few numpy passes. rensa's ``RMinHash`` then turns
each text's n-gram hashes into ``num_perm`` values ``(a_k * h + b_k) >> 32`` (mod 2^64, odd ``a_k`` drawn from
``seed``), minimised per text, in Rust. ``bench/near_dup.py`` measures this against the numpy path it replaced
(Python shingles, sha1, numpy permutations): the same F1; shingling and signatures 5.4x faster on long texts,
1.3x on tweets, where turning rensa's digests (Python lists) into numpy is most of the cost.

The values depend on rensa's algorithm, so ``MinhashConfig.__str__`` names its version: signatures stored under
another string are recomputed, never compared with these. rensa may use a Rayon thread pool (``RAYON_NUM_THREADS``
bounds it).

``signatures_of_hashes`` is another scheme, kept for the character-shingle copy index (``tasks.dedup.copies``),
whose stored band keys depend on it: 32-bit hashes, ``(a_k * fmix32(h) + b_k) mod 2^32`` with ``(a_k, b_k)``
drawn in datasketch's order, in numpy.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rensa import RMinHash
from scipy.integrate import quad

MAX_HASH = np.uint32((1 << 32) - 1)
_NOT_WORD = r"[^\p{L}\p{M}\p{N}_\s]"  # RE2: a character neither in a word (Unicode letter, mark, digit, _) nor a space
_NGRAM_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: the n-gram polynomial's base (2^64 / golden ratio)
_DIGEST_ROWS = 4096  # texts per rensa call: 4096 x 128 Python ints (~20 MB) live at once in ``to_rows``
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
        seed: permutation seed (rensa's for word signatures; numpy's ``RandomState`` for ``signatures_of_hashes``).
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
        return (f"minhash_rensa{RMinHash.ALGORITHM_VERSION}_p{self.num_perm}_n{self.ngram}_t{self.threshold:.2f}"
                f"_b{b}r{r}_s{self.seed}")

    @cached_property
    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` uint32 arrays of ``signatures_of_hashes``, in datasketch's order from ``RandomState(seed)``;
        ``a`` is odd."""
        gen = np.random.RandomState(self.seed)
        a = gen.randint(0, 1 << 31, self.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, self.num_perm, dtype=np.uint32)
        return a, b


Texts = Sequence[str] | pa.Array | pa.ChunkedArray


def _word_lists(texts: Texts) -> pa.ListArray:
    """Each text lower-cased and split into words (maximal runs of letters, marks, digits and underscores).

    Punctuation and symbols become spaces, then a whitespace split: the regex matches only them, not every gap
    between words, which halves the time of a regex split on long texts. Runs of separators leave empty strings
    (dropped by the callers); a null text is empty.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    array = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())
    return pc.utf8_split_whitespace(pc.replace_substring_regex(pc.utf8_lower(array), _NOT_WORD, " "))


def shingles(texts: Texts, ngram: int) -> list[list[bytes]]:
    """The word n-grams of each text, joined by spaces, as UTF-8: the sets whose Jaccard the signatures estimate.

    The same words as ``shingle_hashes``, as readable strings for tests and benchmarks (exact Jaccard); the
    signatures never build them. A text of fewer than ``ngram`` words is one shingle, one without words none.
    """
    out = []
    for words in _word_lists(texts).to_pylist():
        words = [w for w in words or () if w]
        grams = [words[i:i + ngram] for i in range(max(len(words) - ngram + 1, 1))] if words else []
        out.append([" ".join(g).encode() for g in grams])
    return out


def _word_hashes(texts: Texts) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hashes of every word, text after text, and the number of words of each text.

    Arrow dictionary-encodes the words, so rensa hashes each distinct word of the batch once.
    """
    lists = _word_lists(texts)
    coded = pc.dictionary_encode(lists.flatten())
    vocab = coded.dictionary
    codes = coded.indices.to_numpy()
    vocab_hashes = np.array(RMinHash.hash_token_sets([vocab.to_pylist()])[0], dtype=np.uint64)
    is_word = pc.greater(pc.binary_length(vocab), 0).to_numpy(zero_copy_only=False)[codes]
    tokens = np.r_[0, np.cumsum(pc.list_value_length(lists).fill_null(0).to_numpy())]
    words_before = np.r_[0, np.cumsum(is_word)]
    return vocab_hashes[codes[is_word]], words_before[tokens[1:]] - words_before[tokens[:-1]]


def shingle_hashes(texts: Texts, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hashes of every text's word n-grams (the windows of ``shingles``), computed for a whole batch at once.

    A window's hash is ``sum_k word_hash[k] * M^(ngram-1-k)`` (mod 2^64). Each text is followed by ``ngram`` zero
    words, so no window spans two texts and a text shorter than ``ngram`` words hashes as one padded window.

    Returns:
        ``(hashes, counts)``: the hashes text after text in reading order (a repeated n-gram repeats) and how many
        belong to each text.
    """
    words, n_words = _word_hashes(texts)
    n_texts = len(n_words)
    padded = np.zeros(len(words) + ngram * n_texts, dtype=np.uint64)
    padded[np.arange(len(words)) + ngram * np.repeat(np.arange(n_texts), n_words)] = words
    every = np.zeros(max(len(padded) - ngram + 1, 0), dtype=np.uint64)  # the window at every position
    for k in range(ngram):
        every = every * _NGRAM_MULT + padded[k:k + len(every)]  # uint64 wraps
    counts = np.where(n_words >= ngram, n_words - ngram + 1, (n_words > 0).astype(np.int64))
    owner = np.repeat(np.arange(n_texts), counts)
    text_start = np.cumsum(n_words + ngram) - (n_words + ngram)
    first = np.cumsum(counts) - counts
    return every[text_start[owner] + np.arange(len(owner)) - first[owner]], counts


@contextmanager
def _collector_paused() -> Iterator[None]:
    """rensa hands digests back as lists of Python ints; the collector's passes over those lists cost ~20% of
    ``signatures_of_shingle_hashes`` on tweets (``bench/near_dup.py``), and they cannot form a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def signatures_of_shingle_hashes(hashes: np.ndarray, counts: np.ndarray, cfg: MinhashConfig) -> np.ndarray:
    """rensa ``RMinHash`` signatures of ``shingle_hashes`` output, shape ``(len(counts), num_perm)``, uint32.

    A text with no hash gets the all-``MAX_HASH`` signature (similar only to other empty texts).
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    bounds = np.r_[0, np.cumsum(counts)].astype(np.uint64)
    out = np.empty((len(counts), cfg.num_perm), dtype=np.uint32)
    with _collector_paused():
        for lo in range(0, len(counts), _DIGEST_ROWS):
            hi = min(lo + _DIGEST_ROWS, len(counts))
            digests = RMinHash.digest_matrix_from_flat_token_hashes(
                hashes[bounds[lo]:bounds[hi]], bounds[lo:hi + 1] - bounds[lo], cfg.num_perm, cfg.seed)
            out[lo:hi] = digests.to_rows()
    return out


def signatures(texts: Texts, cfg: MinhashConfig) -> np.ndarray:
    """MinHash signatures of ``texts``' word ``cfg.ngram``-grams, shape ``(len(texts), num_perm)``, dtype uint32.

    Args:
        texts: strings, or an Arrow string column (no copy into Python objects); a null counts as empty.
        cfg: ``ngram``, ``num_perm`` and ``seed``.
    """
    return signatures_of_shingle_hashes(*shingle_hashes(texts, cfg.ngram), cfg)


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: a bijection that spreads structured hash inputs (uint32 wraps)."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


def signatures_of_hashes(hashes: np.ndarray, counts: np.ndarray, cfg: MinhashConfig) -> np.ndarray:
    """Signatures of the copy index's scheme from 32-bit hashes already computed, shape ``(len(counts), num_perm)``.

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


def band_keys(sigs: np.ndarray, cfg: MinhashConfig) -> np.ndarray:
    """LSH band keys of signatures, shape ``(n, bands)`` uint64: each band's values times fixed odd multipliers,
    summed mod 2^64 (the word-shingle clusters and the character-shingle copy index both band this way)."""
    bands, rows = cfg.banding
    mult = np.random.RandomState(7).randint(1, 2**62, size=rows, dtype=np.int64).astype(np.uint64) | np.uint64(1)
    out = np.empty((len(sigs), bands), dtype=np.uint64)
    for band in range(bands):
        out[:, band] = (sigs[:, band * rows:(band + 1) * rows].astype(np.uint64) * mult).sum(axis=1)
    return out

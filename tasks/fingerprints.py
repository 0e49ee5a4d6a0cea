"""Fingerprints of text: what the platform keeps of a deleted text so it can find it again, never the text.

A deleted text is remembered as salted 64-bit hashes of its *match form* (NFKC, case-folded, punctuation and
runs of whitespace reduced to one space) and of that form's character n-grams. The match form makes copies
that differ only in case, punctuation or spacing identical; the character shingles let short texts with a word
swapped still share most of their pieces (a one-word edit of a 20-word text keeps ~0.6 Jaccard on 5-word
shingles but ~0.85 on character 5-grams). The salt is the store's own (kept in the ledger), so a hash cannot be
looked up in a precomputed table of common phrases, and one pass over new rows checks them against every request.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

SHINGLE_CHARS = 5
SALT_BYTES = 16
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def match_form(text: str) -> str:
    """NFKC, case-folded, every run of non-word characters (punctuation, whitespace) to one space, stripped."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def char_shingles(text: str, n: int = SHINGLE_CHARS) -> list[str]:
    """Distinct character n-grams of the match form, in order of first appearance (a short text is one shingle)."""
    form = match_form(text)
    if len(form) <= n:
        return [form] if form else []
    return list(dict.fromkeys(form[i:i + n] for i in range(len(form) - n + 1)))


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


def salted_hashes(items: Iterable[str], salt: bytes) -> np.ndarray:
    """64-bit keyed BLAKE2b of each item, as ``uint64`` (order kept)."""
    digests = [hashlib.blake2b(item.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
               for item in items]
    return np.frombuffer(b"".join(digests), dtype="<u8").copy() if digests else np.empty(0, dtype=np.uint64)


def text_hash(text: str, salt: bytes) -> int:
    """The salted hash of a whole text's match form."""
    return int(salted_hashes([match_form(text)], salt)[0])


def shingle_hashes(text: str, salt: bytes, n: int = SHINGLE_CHARS) -> np.ndarray:
    """Sorted distinct salted hashes of a text's character shingles."""
    return np.unique(salted_hashes(char_shingles(text, n), salt))


def containment(needle: np.ndarray, haystack: np.ndarray) -> float:
    """Share of ``needle``'s shingle hashes found in ``haystack`` (both sorted, distinct): 1.0 when the whole
    text of ``needle`` appears inside the text of ``haystack``."""
    if needle.size == 0:
        return 0.0
    return float(np.isin(needle, haystack, assume_unique=True).sum()) / needle.size


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted, distinct shingle-hash sets."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


_POLY = np.uint64(0x100000001B3)  # FNV-64 prime: an odd multiplier for the rolling polynomial over code points


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (uint64 wraps): spreads the polynomial's low-entropy bits over all 64.
    In place (no temporaries the size of ``h``): ``h`` is overwritten and returned."""
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h ^= h >> np.uint64(33)
        h *= np.uint64(multiplier)
    h ^= h >> np.uint64(33)
    return h


def ngram_hashes(texts: list[str], n: int = SHINGLE_CHARS) -> tuple[np.ndarray, np.ndarray]:
    """Unsalted 64-bit hashes of the character n-grams of many texts' match forms, computed at once.

    The same shingles as ``char_shingles`` (a match form of at most ``n`` characters is one shingle, an empty one
    none), hashed with numpy instead of one Python call per shingle: this is what ingest pays per record for
    the copy index, so it must cost about what today's word signatures cost. Unsalted, so it never leaves the
    store's own index (the ledger keeps only ``salted_hashes``).

    Returns:
        ``(hashes, owner)``: uint64 hashes text after text in reading order (a repeated n-gram repeats), and the
        index of the text each belongs to.
    """
    forms = [match_form(t) for t in texts]
    lengths = np.fromiter((len(f) for f in forms), dtype=np.int64, count=len(forms))
    pad = "\0" * n  # match forms hold no NUL; each form is followed by n of them so no window spans two texts
    points = np.frombuffer(pad.join(forms).encode("utf-32-le") + pad.encode("utf-32-le"), dtype=np.uint32)
    every = np.zeros(max(len(points) - n + 1, 0), dtype=np.uint64)  # the hash of the window at every position
    for k in range(n):  # in place: a 16 MB file of text makes these arrays 128 MB each
        every *= _POLY
        every += points[k:k + len(every)]
    windows = np.where(lengths > n, lengths - n + 1, (lengths > 0).astype(np.int64))
    owner = np.repeat(np.arange(len(forms)), windows)
    first_window = np.cumsum(windows) - windows
    text_start = np.cumsum(lengths + n) - (lengths + n)
    positions = np.arange(len(owner))
    positions += (text_start - first_window)[owner]
    return _fmix64(every[positions]), owner


def distinct_sets(hashes: np.ndarray, owner: np.ndarray, n_texts: int) -> list[np.ndarray]:
    """Per text, the sorted distinct hashes (the sets ``jaccard`` and ``containment`` compare)."""
    order = np.lexsort((hashes, owner))
    hashes, owner = hashes[order], owner[order]
    fresh = np.r_[True, (hashes[1:] != hashes[:-1]) | (owner[1:] != owner[:-1])] if len(hashes) else []
    hashes, owner = hashes[fresh], owner[fresh]
    return np.split(hashes, np.searchsorted(owner, np.arange(1, n_texts)))

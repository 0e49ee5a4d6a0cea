"""Near copies of deleted texts among new rows, from the deletion fingerprints alone: no deleted text is kept.

A deletion leaves salted hashes of each deleted text's character shingles (``tasks.deletion.fingerprints``). A new
row is a near copy of a deleted text when the Jaccard of their salted shingle sets reaches the threshold the
store-side copy finder uses (``CopyConfig.threshold``), so "a copy" means one thing before and after ingest.

Comparing every new row with every fingerprint costs rows x fingerprints, and an inverted index from shingle hash
to fingerprint drowns in common shingles (" the ", "http"): with 5,000 deleted tweets and reviews even its exact
prefix-filtered form left ~70 candidates per row. So the index is inverted on LSH band keys instead — MinHash of
the salted sets, banded as in ``tasks.dedup.copies`` — which leaves a few candidates per row, each verified
exactly. ``bench/near_copies.py`` measures its recall and speed beside the store-side finder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tasks.dedup.copies import DEFAULT, CopyConfig, band_keys_of_hashes, candidate_pairs, verified
from tasks.fingerprints import shingle_hashes


def _keys(sets: list[np.ndarray], cfg: CopyConfig) -> np.ndarray:
    sizes = [len(s) for s in sets]
    flat = np.concatenate(sets).astype(np.uint64) if sets else np.empty(0, dtype=np.uint64)
    return band_keys_of_hashes(flat, np.repeat(np.arange(len(sets)), sizes), len(sets), cfg)


@dataclass(frozen=True)
class WithdrawnIndex:
    """Fingerprints of deleted texts, indexed for matching many new rows (build once per ingest, match per file)."""

    salt: bytes
    cfg: CopyConfig
    request_ids: list[str]
    sets: list[np.ndarray]  # per fingerprint: sorted distinct salted shingle hashes
    keys: np.ndarray  # per fingerprint: its LSH band keys, shape (fingerprints, bands)

    @classmethod
    def build(cls, fingerprints: pa.Table, salt: bytes, cfg: CopyConfig = DEFAULT) -> WithdrawnIndex:
        """Index a ``read_fingerprints`` table (``request_id``, ``shingles``) made with ``salt``."""
        sets = [np.asarray(s, dtype=np.uint64) for s in fingerprints.column("shingles").to_pylist()]
        return cls(salt, cfg, fingerprints.column("request_id").to_pylist(), sets, _keys(sets, cfg))

    def match(self, texts: list[str]) -> list[str | None]:
        """For each text, the request id of a deleted text it is a near copy of, or None."""
        out: list[str | None] = [None] * len(texts)
        if not texts or not self.sets:
            return out
        sets = [shingle_hashes(t or "", self.salt, self.cfg.ngram) for t in texts]
        pairs = candidate_pairs(self.keys, _keys(sets, self.cfg), self.cfg.min_shared)  # (row, fingerprint)
        pairs = pairs[[len(sets[row]) > 0 for row in pairs[:, 0]]] if len(pairs) else pairs  # no shingle, no copy
        for row, fp in verified(pairs, sets, self.sets, self.cfg.threshold):
            out[row] = out[row] or self.request_ids[fp]
        return out


def match_fingerprints(texts: list[str], fingerprints: pa.Table, salt: bytes,
                       cfg: CopyConfig = DEFAULT) -> list[str | None]:
    """One-off form of ``WithdrawnIndex.build(fingerprints, salt, cfg).match(texts)``."""
    return WithdrawnIndex.build(fingerprints, salt, cfg).match(texts)

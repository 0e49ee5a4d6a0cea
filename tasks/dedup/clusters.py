"""Exact and near-duplicate clusters over the whole store, from content hashes and MinHash signatures.

Exact duplicates share a ``content_hash``; the earliest-delivered copy (by rank) is kept. Near duplicates are found by
LSH banding over the kept copies' signatures; candidate pairs are verified by estimated Jaccard and joined
into clusters with connected components. The output is membership — cluster id, the kept record, each
member's estimated similarity to it — so that a deletion can follow a text to all of its copies.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tasks.dedup.minhash import MinhashConfig, estimate_jaccard

CLUSTER_SCHEMA = pa.schema([
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),
    pa.field("kept_record_id", pa.string(), nullable=False),
    pa.field("similarity", pa.float32(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # kept | exact | near
])
_ALL_PAIRS_MAX_BUCKET = 16  # larger buckets (boilerplate) are chained instead of all-pairs: O(k) not O(k^2)


@dataclass
class ClusterStats:
    records: int = 0
    exact_duplicates: int = 0
    candidate_pairs: int = 0
    verified_pairs: int = 0
    near_dup_clusters: int = 0
    near_dup_records: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def cluster_id_of(kept_record_id: str) -> str:
    return "ndc-" + hashlib.sha256(kept_record_id.encode()).hexdigest()[:16]


def _band_pairs(sigs: np.ndarray, cfg: MinhashConfig) -> np.ndarray:
    """Candidate pairs (i, j), i < j, of rows sharing at least one LSH band."""
    bands, rows = cfg.banding
    mult = np.random.RandomState(7).randint(1, 2**62, size=rows, dtype=np.int64).astype(np.uint64) | np.uint64(1)
    found: list[np.ndarray] = []
    for band in range(bands):
        block = sigs[:, band * rows:(band + 1) * rows].astype(np.uint64)
        keys = (block * mult).sum(axis=1)  # wraps mod 2^64: a 64-bit bucket key per row
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, len(keys)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = np.sort(order[start:start + size])
            if size <= _ALL_PAIRS_MAX_BUCKET:
                ii, jj = np.triu_indices(size, k=1)
                found.append(np.stack([members[ii], members[jj]], axis=1))
            else:
                found.append(np.stack([members[:-1], members[1:]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def cluster_records(record_ids: list[str], content_hashes: list[str], rank: np.ndarray, sigs: np.ndarray,
                    cfg: MinhashConfig) -> tuple[pa.Table, ClusterStats]:
    """Cluster records into exact and near-duplicate groups.

    Args:
        record_ids: one id per row.
        content_hashes: hash of each row's normalized text.
        rank: delivery order (lower is earlier); the earliest member of a cluster is kept.
        sigs: MinHash signatures, shape ``(n, num_perm)``.
        cfg: thresholds and banding.

    Returns:
        Membership rows for every record in a cluster of two or more (singletons are omitted), and stats.
    """
    n = len(record_ids)
    stats = ClusterStats(records=n)
    if n == 0:
        return CLUSTER_SCHEMA.empty_table(), stats
    order = np.lexsort((np.asarray(record_ids), rank))
    hashes = np.asarray(content_hashes)[order]
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    rep_of = order[first][inverse]  # for each row in `order`, the earliest row with the same hash
    rep_rows = np.sort(order[first])
    exact_rep = np.empty(n, dtype=np.int64)
    exact_rep[order] = rep_of
    stats.exact_duplicates = int(n - len(rep_rows))

    pairs = _band_pairs(sigs[rep_rows], cfg)
    stats.candidate_pairs = len(pairs)
    if len(pairs) and cfg.verify:
        est = estimate_jaccard(sigs[rep_rows[pairs[:, 0]]], sigs[rep_rows[pairs[:, 1]]])
        pairs = pairs[est >= cfg.verify_threshold]
    stats.verified_pairs = len(pairs)
    m = len(rep_rows)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m)) if len(pairs) else None
    _, labels = connected_components(graph, directed=False) if graph is not None else (m, np.arange(m))

    # the kept row of each component is its earliest member by rank (last write wins, so assign reversed)
    by_rank = np.lexsort((np.asarray(record_ids)[rep_rows], rank[rep_rows]))[::-1]
    kept_of_label = np.empty(labels.max() + 1, dtype=np.int64)
    kept_of_label[labels[by_rank]] = rep_rows[by_rank]
    label_of_row = np.full(n, -1, dtype=np.int64)
    label_of_row[rep_rows] = labels
    row_label = label_of_row[exact_rep]
    comp_size = np.bincount(labels)
    exact_size = np.bincount(exact_rep, minlength=n)
    rows = np.flatnonzero((comp_size[row_label] > 1) | (exact_size[exact_rep] > 1))
    kept = kept_of_label[row_label[rows]]
    kind = np.where(rows == kept, "kept", np.where(exact_rep[rows] != rows, "exact", "near"))
    ids = np.asarray(record_ids, dtype=object)
    out = {
        "record_id": ids[rows],
        "cluster_id": [cluster_id_of(r) for r in ids[kept]],
        "kept_record_id": ids[kept],
        "similarity": estimate_jaccard(sigs[rows], sigs[kept]).astype(np.float32),
        "kind": kind,
    }
    stats.near_dup_clusters = int(np.sum(comp_size > 1))
    stats.near_dup_records = int(np.sum(comp_size[comp_size > 1]))
    return pa.table(out, schema=CLUSTER_SCHEMA), stats

"""Exact and near-duplicate clusters from content hashes and MinHash signatures.

Exact duplicates share a ``content_hash``; the earliest-delivered copy is kept. Near duplicates are found by LSH
banding over the kept copies' signatures, one band at a time (datatrove's bucket stage): rows with equal band keys
are candidate pairs, verified by estimated Jaccard and joined into clusters with connected components; a cluster
keeps its earliest member. The output is membership — cluster id, the kept record, each member's estimated
similarity to it — so that a deletion can follow a text to all of its copies.

A store is clustered partition by partition (``tasks.dedup.sharded``); its membership and id conflicts are written
per staging partition, and read back here: one partition's (``partition_dedup``) or any (``read_clusters``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tasks import layout
from tasks.dedup.minhash import MinhashConfig, band_keys, estimate_jaccard
from tasks.storage import Store

CLUSTER_SCHEMA = pa.schema([
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),
    pa.field("kept_record_id", pa.string(), nullable=False),
    pa.field("similarity", pa.float32(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # kept | exact | near
])
CONFLICT_SCHEMA = pa.schema([("source_uri", pa.string()), ("record_id", pa.string()), ("reason", pa.string())])
ROW_COLUMNS = ["record_id", "content_hash", "source_uri", "delivered_at"]
SIGNATURE_FORMAT = "sig2"  # the signature files' columns (2: band keys), in the parse fingerprint: older are re-parsed
_ALL_PAIRS_MAX_BUCKET = 16  # larger buckets (boilerplate) are chained instead of all-pairs: O(k) not O(k^2)
_DENSE_REPEATS = 0.2  # share of rows with a repeated key above which clustering sorts every row (bench/dedup_keys.py)
_PROBE_MASK = np.uint64(127)  # keys whose low 7 bits are 0 (1/128) estimate the share of repeats first
_PAIR_CHUNK = 1 << 16  # candidate pairs compared at once: 64k x 128 permutations x 2 signatures x 4 B = 64 MiB


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


def _repeat_share(probe: np.ndarray) -> float:
    """The share of rows with a repeated key, estimated from the rows of some key values (0 when too few)."""
    if len(probe) < 1024:
        return 0.0
    ranked = np.sort(probe)
    return 2 * int(np.sum(ranked[1:] == ranked[:-1])) / len(probe)


def repeated_rows(keys: np.ndarray) -> np.ndarray:
    """Rows (ascending) whose key some other row shares, or every row when they are many (``_DENSE_REPEATS``).

    Found from a sort of the keys alone and a look-up of the few repeated values (a bitmap of their low bits
    first), so the store-sized work streams through memory: an argsort of every row and the gather it needs cost
    3x more at 10M rows and grew faster than the rows (``bench/dedup_keys.py``). When repeats are dense the
    look-up costs more than it saves, and sorting every row is the cheaper superset."""
    keys = keys.astype(np.uint64, copy=False)  # integer keys of any width (the band keys are already)
    if _repeat_share(keys[(keys & _PROBE_MASK) == 0]) > _DENSE_REPEATS:  # a key's copies are probed together
        return np.arange(len(keys), dtype=np.int64)
    ranked = np.sort(keys)
    repeated = ranked[1:][ranked[1:] == ranked[:-1]]  # sorted: each value once per extra copy
    if not len(repeated):
        return np.empty(0, np.int64)
    if 2 * len(repeated) > len(keys) * _DENSE_REPEATS:
        return np.arange(len(keys), dtype=np.int64)
    values = repeated[np.r_[True, repeated[1:] != repeated[:-1]]]
    bits = int(min(30, max(16, np.ceil(np.log2(len(values))) + 6)))  # ~1/64 of the bitmap set
    low_mask = np.uint64((1 << bits) - 1)
    bitmap = np.zeros(1 << (bits - 3), np.uint8)
    low = (values & low_mask).astype(np.int64)
    np.bitwise_or.at(bitmap, low >> 3, np.left_shift(1, low & 7).astype(np.uint8))
    low = (keys & low_mask).astype(np.int64)
    maybe = np.flatnonzero(np.right_shift(bitmap[low >> 3], (low & 7).astype(np.uint8)) & 1)
    at = np.minimum(np.searchsorted(values, keys[maybe]), len(values) - 1)
    return maybe[values[at] == keys[maybe]]


def _bucket_pairs(keys: np.ndarray) -> np.ndarray:
    """Pairs of rows with equal ``keys`` (one band), each as ``i * n + j`` with ``i < j``: every pair of a bucket
    of at most ``_ALL_PAIRS_MAX_BUCKET`` rows, consecutive members of a larger one (a chain: the same component).
    Only rows in a bucket of two or more are sorted."""
    n, rows = len(keys), repeated_rows(keys)
    ranked = np.argsort(keys if len(rows) == n else keys[rows], kind="stable")  # ties keep row order: a bucket's
    order = ranked if len(rows) == n else rows[ranked]  # members ascend
    same = keys[order[1:]] == keys[order[:-1]]
    starts = np.flatnonzero(np.r_[True, ~same])
    sizes = np.diff(np.r_[starts, len(order)])
    chained = np.repeat(sizes > _ALL_PAIRS_MAX_BUCKET, sizes)[1:] & same
    found = [order[:-1][chained] * n + order[1:][chained]]
    for size in range(2, _ALL_PAIRS_MAX_BUCKET + 1):
        members = order[starts[sizes == size][:, None] + np.arange(size)]  # (buckets of this size, size)
        ii, jj = np.triu_indices(size, k=1)
        found.append((members[:, ii] * n + members[:, jj]).ravel())
    return np.concatenate(found)


def candidate_pairs(bands: Iterator[np.ndarray]) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, sorted, of rows sharing a key in at least one band; ``bands`` yields each band's
    keys of the same rows, so one band is held at a time."""
    codes, n = np.empty(0, np.int64), 0
    for keys in bands:
        codes, n = np.union1d(codes, _bucket_pairs(keys)), len(keys)
    return np.stack([codes // n, codes % n], axis=1) if n else np.empty((0, 2), np.int64)


def _band_pairs(sigs: np.ndarray, cfg: MinhashConfig) -> np.ndarray:
    """Candidate pairs (i, j), i < j, of rows sharing at least one LSH band."""
    return candidate_pairs(iter(band_keys(sigs, cfg).T))


def first_equal(*keys: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same ``keys`` (equal integer arrays, most significant first). Only rows
    whose first key repeats are sorted: the rest are their own first."""
    n = len(keys[0])
    first = np.arange(n, dtype=np.int64)
    rows = repeated_rows(keys[0])
    if not len(rows):
        return first
    every = len(rows) == n  # dense repeats: no subset to gather
    order = np.lexsort((rows, *(key if every else key[rows] for key in keys[::-1])))
    order = order if every else rows[order]
    differ = np.zeros(len(order), bool)
    differ[0] = True
    for key in keys:
        ranked = key[order]
        differ[1:] |= ranked[1:] != ranked[:-1]
    first[order] = order[np.maximum.accumulate(np.where(differ, np.arange(len(order)), 0))]
    return first


def _pair_jaccard(sigs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of the rows of ``sigs`` in each pair, in chunks (bounded temporaries)."""
    return np.concatenate([np.empty(0), *(estimate_jaccard(sigs[c[:, 0]], sigs[c[:, 1]])
                                          for c in np.split(pairs, range(_PAIR_CHUNK, len(pairs), _PAIR_CHUNK)))])


@dataclass
class Membership:
    """Rows in a cluster of two or more (indices in delivery order), each with its cluster's kept row."""

    rows: np.ndarray
    kept: np.ndarray
    kind: np.ndarray  # kept | exact | near
    similarity: np.ndarray  # float32, estimated Jaccard to the kept row


def membership(exact_rep: np.ndarray, pairs_of: Callable[[np.ndarray], np.ndarray],
               fetch: Callable[[np.ndarray], np.ndarray], cfg: MinhashConfig) -> tuple[Membership, ClusterStats]:
    """Clusters of ``n`` rows in delivery order (row 0 came first).

    Args:
        exact_rep: ``(n,)`` for each row, the first row with its content hash (equal hashes, equal signatures).
        pairs_of: the candidate pairs of the given representative rows (``exact_rep[i] == i``), as indices into them.
        fetch: the signatures of the given rows (ascending), ``(k, num_perm)``.
        cfg: verification threshold.
    """
    n = len(exact_rep)
    reps = np.flatnonzero(exact_rep == np.arange(n))
    stats = ClusterStats(records=n, exact_duplicates=n - len(reps))
    pairs = pairs_of(reps)
    stats.candidate_pairs = len(pairs)
    nodes = np.unique(pairs)  # representatives in a candidate pair, in delivery order
    sigs = fetch(reps[nodes])
    pairs = np.searchsorted(nodes, pairs)
    if len(pairs) and cfg.verify:
        pairs = pairs[_pair_jaccard(sigs, pairs) >= cfg.verify_threshold]
    stats.verified_pairs = len(pairs)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(len(nodes), len(nodes)))
    label = connected_components(graph, directed=False)[1] if len(nodes) else np.empty(0, np.int32)
    size, kept_node = np.bincount(label), np.unique(label, return_index=True)[1]  # a component keeps its first
    stats.near_dup_clusters, stats.near_dup_records = int(np.sum(size > 1)), int(np.sum(size[size > 1]))
    node_of = np.full(n, -1, np.int64)
    node_of[reps[nodes]] = np.arange(len(nodes))
    node = node_of[exact_rep]  # each row's representative's node, -1 when in no candidate pair
    near = node >= 0
    near[near] = size[label[node[near]]] > 1
    rows = np.flatnonzero(near | (np.bincount(exact_rep, minlength=n)[exact_rep] > 1))
    kept, similarity = exact_rep[rows], np.ones(len(rows), np.float32)
    in_near = near[rows]
    ends = np.stack([node[rows[in_near]], kept_node[label[node[rows[in_near]]]]], axis=1)
    kept[in_near] = reps[nodes[ends[:, 1]]]
    similarity[in_near] = _pair_jaccard(sigs, ends)
    kind = np.where(rows == kept, "kept", np.where(exact_rep[rows] != rows, "exact", "near"))
    return Membership(rows, kept, kind, similarity), stats


def membership_table(ids: pa.Array, kept_ids: pa.Array, members: Membership) -> pa.Table:
    """Cluster rows, given the record ids of ``members.rows`` and of their kept rows."""
    unique = pc.unique(kept_ids)
    cluster_ids = pa.array([cluster_id_of(k) for k in unique.to_pylist()], pa.string())
    return pa.table({"record_id": ids, "cluster_id": cluster_ids.take(pc.index_in(kept_ids, value_set=unique)),
                     "kept_record_id": kept_ids, "similarity": members.similarity, "kind": members.kind},
                    schema=CLUSTER_SCHEMA)


def cluster_records(record_ids: list[str], content_hashes: list[str], rank: np.ndarray, sigs: np.ndarray,
                    cfg: MinhashConfig) -> tuple[pa.Table, ClusterStats]:
    """Cluster records held in memory into exact and near-duplicate groups (a store: ``tasks.dedup.sharded``).

    Args:
        record_ids: one id per row.
        content_hashes: hash of each row's normalized text.
        rank: delivery order (lower is earlier); the earliest member of a cluster is kept.
        sigs: MinHash signatures, shape ``(n, num_perm)``.
        cfg: thresholds and banding.

    Returns:
        Membership rows for every record in a cluster of two or more (singletons are omitted), and stats.
    """
    ids = np.asarray(record_ids, dtype=object)
    order = np.lexsort((ids.astype(str), rank)) if len(ids) else np.empty(0, np.int64)
    exact_rep = first_equal(np.unique(np.asarray(content_hashes, dtype=object)[order].astype(str),
                                       return_inverse=True)[1]) if len(ids) else order
    members, stats = membership(exact_rep, lambda reps: _band_pairs(sigs[order[reps]], cfg),
                                lambda rows: sigs[order[rows]], cfg)
    return membership_table(pa.array(ids[order[members.rows]], pa.string()),
                            pa.array(ids[order[members.kept]], pa.string()), members), stats


def partition_dedup(store: Store, source: str, file_id: str) -> tuple[pa.Table, pa.Table]:
    """The cluster rows and the id conflicts of one staging partition's rows (what publishing it needs)."""
    keys = [layout.dedup_part(kind, source, file_id) for kind in (layout.CLUSTERS, layout.ID_CONFLICTS)]
    clusters, conflicts = (store.read_parquet(k) if store.exists(k) else s.empty_table()
                           for k, s in zip(keys, (CLUSTER_SCHEMA, CONFLICT_SCHEMA), strict=True))
    return clusters, conflicts


def read_clusters(store: Store, columns: list[str] | None = None, **values: set[str]) -> pa.Table:
    """Cluster rows of the whole store (``CLUSTER_SCHEMA``), or those whose ``column=`` is one of the given values
    (``record_id={...}``, ``cluster_id={...}``; filtered file by file, so memory follows the answer)."""
    tables = []
    for key in store.list(layout.dedup_part(layout.CLUSTERS), layout.PARQUET):
        table = store.read_parquet(key, columns)
        for column, wanted in values.items():
            table = table.filter(pc.is_in(table[column], value_set=pa.array(sorted(wanted), pa.string())))
        tables.append(table)
    return pa.concat_tables(tables) if tables else CLUSTER_SCHEMA.empty_table().select(columns or CLUSTER_SCHEMA.names)

"""Near copies of short texts: a character-shingle copy index written at ingest, queried when a deletion resolves.

Word 5-gram MinHash at Jaccard 0.8 (``minhash``, ``clusters``) finds long near-duplicates, but a one-word edit of a
20-word text keeps only ~0.6 of its word 5-grams, so it misses the light edits of tweets and review snippets that
a deletion must follow. Here a text is the set of character n-grams of its match form (``tasks.fingerprints``:
case, punctuation and spacing differences gone), and two texts are copies when the Jaccard of those sets reaches
``CopyConfig.threshold``.

Candidates come from MinHash LSH so that a query is never compared with every stored text: at ingest each staged
row's signature is cut into bands and the band keys are written per staging partition (``layout.copies``), sorted
into 1,024 buckets (by the top bits); a query computes its own keys and reads only their buckets, partition by
partition (memory and reads bounded by a partition's buckets, not the store), and each candidate's text from the
one staging row group the index names for it.
Candidates are verified exactly on the shingle sets: the index decides what is compared, never what is a copy.
The parameters are the ones ``bench/near_copies.py`` chose (its numbers are in bench/README.md).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout
from tasks.dedup.minhash import MinhashConfig, signatures_of_hashes
from tasks.dedup.minhash import band_keys as lsh_band_keys
from tasks.fingerprints import SHINGLE_CHARS, distinct_sets, jaccard, match_form, ngram_hashes
from tasks.ids import record_id_keys
from tasks.storage import Store
from tasks.tables import bucket_groups, bucketed_bytes, group_of_rows, groups_of, rows_matching, whole_if_wide

_CONFIG_KEY = b"copy_config"
SEARCH_THREADS = 4  # partitions' indexes read at once by a search
# a key's bucket is its top bits: a one-text query (21 keys) reads 21/1024 of each partition's index. 256 buckets
# read 4x the bytes (8 s a deletion at 10M records, cold cache); 4096 make the footer cost more than the reads
BUCKET_BITS = 10


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


def index_schema(cfg: CopyConfig) -> pa.Schema:
    """The copy index of one partition: one row per band key, sorted, in row groups by the key's top byte (keys are
    hashes, so the buckets are even) — a query reads only its keys' buckets. The config and this format are
    kept in the file, so a stale index is rebuilt, not misread. ``record_key`` names the key's record by a 64-bit
    hash of its id (``tasks.ids.record_id_keys``; the purge removes a deleted record's rows by it), ``group`` the
    staging row group holding it, so verification reads only the groups of its candidates. A partition's index
    has 21 rows a record: as id strings, ``record_id`` was 60% of the bytes a purge reads and rewrites."""
    return pa.schema([("bucket", pa.uint16()), ("key", pa.uint64()), ("record_key", pa.uint64()),
                      ("group", pa.uint32())],
                     metadata={_CONFIG_KEY: f"{cfg.index_name}/bucketed{BUCKET_BITS}/grouped/keyed".encode()})


def _bucket(keys: np.ndarray) -> np.ndarray:
    return (keys >> np.uint64(64 - BUCKET_BITS)).astype(np.uint16)


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


def index_table(staged: pa.Table, groups: np.ndarray, cfg: CopyConfig = DEFAULT) -> pa.Table:
    """The copy index of staged rows (``record_id``, ``text``, each row's staging row group in ``groups``): no
    text, only band keys, whose they are and where that record sits."""
    keys = band_keys(staged.column("text").to_pylist(), cfg).ravel()
    order = np.argsort(keys, kind="stable")  # by key, hence by bucket (its top byte)
    rows = (np.arange(keys.size) // cfg.bands)[order]
    owners = record_id_keys(staged.column("record_id"))[rows]
    return pa.table({"bucket": _bucket(keys[order]), "key": keys[order], "record_key": owners,
                     "group": np.asarray(groups, np.uint32)[rows]}, schema=index_schema(cfg))


def _index_bytes(table: pa.Table) -> bytes:
    return bucketed_bytes(table, hashes=("key", "record_key"))


def write_copy_index(store: Store, source: str, fid: str, staged: pa.Table, cfg: CopyConfig = DEFAULT) -> str:
    """Write a staging partition's copy index (ingest's parse step calls this beside the MinHash signatures, with
    staging just written in groups of ``layout.STAGING_GROUP_ROWS``)."""
    groups = np.arange(staged.num_rows) // layout.STAGING_GROUP_ROWS
    return store.write_bytes(layout.copies(source, fid), _index_bytes(index_table(staged, groups, cfg)))


def partition_index(store: Store, source: str, fid: str, cfg: CopyConfig = DEFAULT,
                    keys: pa.Array | None = None) -> pa.Table:
    """A partition's copy index (only the rows of band ``keys``, uint64, when given: the key column of their
    buckets is read to look, the other columns only from the row groups holding one); built from staging (and
    written) when missing or made with another config or format, so stores ingested before it are still searched."""
    key = layout.copies(source, fid)
    if store.exists(key):
        with store.open(key) as fh:
            parquet = pq.ParquetFile(fh)  # one footer read for the check and the buckets
            current = (parquet.schema_arrow.metadata or {}).get(_CONFIG_KEY) == index_schema(cfg).metadata[_CONFIG_KEY]
            if current and keys is None:
                return parquet.read(use_threads=False)
            if current:
                read = groups_of(bucket_groups(parquet), _bucket(keys.to_numpy()).tolist())
                if not read:
                    return index_schema(cfg).empty_table()
                parquet = whole_if_wide(parquet, read, lambda: store.read_bytes(key))
                return rows_matching(parquet, read, "key", keys, index_schema(cfg).names)
    with store.open(layout.staging(source, fid)) as fh:
        parquet = pq.ParquetFile(fh)
        staged, groups = parquet.read(["record_id", "text"], use_threads=False), group_of_rows(parquet)
    table = index_table(staged, groups, cfg)
    store.write_bytes(layout.copies(source, fid), _index_bytes(table))
    return table if keys is None else table.filter(pc.is_in(table.column("key"), value_set=keys))


def _keyed(rows: pa.Table, wanted: pa.Array) -> pa.Table:
    """The staged rows whose record key is ``wanted``, with their keys as a ``record_key`` column."""
    keys = pa.array(record_id_keys(rows.column("record_id")), pa.uint64())
    rows = rows.append_column("record_key", keys)
    return rows.filter(pc.is_in(keys, value_set=wanted))


def _candidate_rows(store: Store, key: str, wanted_keys: Iterable[int], groups: set[int]) -> pa.Table:
    """The staged ``record_id``, ``text`` and ``record_key`` of the candidates (by record key) from the row
    ``groups`` the index names; the whole partition when one is not there (a staging file rewritten by an older
    version, or a record gone from it)."""
    wanted = pa.array(sorted(wanted_keys), pa.uint64())
    with store.open(key) as fh:
        parquet = pq.ParquetFile(fh)
        rows = _keyed(parquet.read_row_groups(sorted(groups), ["record_id", "text"], use_threads=False), wanted) \
            if max(groups) < parquet.num_row_groups else None
        if rows is None or rows.num_rows < len(wanted):
            rows = _keyed(parquet.read(["record_id", "text"], use_threads=False), wanted)
    return rows


def _sharing(index: pa.Table, queries_with: dict[int, list[int]], min_shared: int,
             own: list[int | None]) -> dict[int, list[int]]:
    """Record key -> the queries it shares at least ``min_shared`` bands with, from a partition's index rows of the
    queries' keys (a record has one key per band, so its rows matching a query count the bands they share); a
    query's ``own`` record (by key) is not its candidate."""
    shared: Counter[tuple[int, int]] = Counter()
    for k, rid in zip(index.column("key").to_pylist(), index.column("record_key").to_pylist(), strict=True):
        shared.update((rid, q) for q in queries_with[k])
    out: dict[int, list[int]] = {}
    for (rid, q), bands in shared.items():
        if bands >= min_shared and rid != own[q]:
            out.setdefault(rid, []).append(q)
    return out


def find_copies(store: Store, texts: list[str], cfg: CopyConfig = DEFAULT,
                own: list[str] | None = None) -> list[set[str]]:
    """For each of ``texts``, the record ids of staged rows, in any source and under any owner, that are near
    copies of it (a deletion resolving many requests at once needs to know which request each copy follows),
    but for its ``own`` record, when the text is a record's: that one is known, and verifying it would read the
    staging groups of every deleted record (at 1,000 requests, nearly all the store's text).

    One pass over the staging partitions: the row groups of the queries' key buckets in each partition's index
    give the candidates (1/1024 of the index per key; their key column is read to look, the record ids only of the
    groups where a key matched), and only the staging row groups holding them (8,192 rows
    each, named by the index) are read back for their texts and verified.
    """
    found: list[set[str]] = [set() for _ in texts]
    searched = [i for i, t in enumerate(texts) if t and match_form(t)]  # punctuation alone has no shingle
    if not searched:
        return found
    queries = [texts[i] for i in searched]
    query_keys, query_sets = band_keys(queries, cfg), shingle_sets(queries, cfg)
    queries_with: dict[int, list[int]] = {}
    for q, row in enumerate(query_keys):
        for k in set(row.tolist()):
            queries_with.setdefault(k, []).append(q)
    key_set = pa.array(sorted(queries_with), pa.uint64())
    own_keys = record_id_keys([own[i] for i in searched]).tolist() if own is not None else [None] * len(searched)

    def candidates(key: str) -> tuple[dict[int, list[int]], pa.Table | None]:  # threads: I/O and Arrow decoding
        """A partition's candidates (record key -> the queries it shares ``min_shared`` bands with) and their
        staged rows (None when none)."""
        index = partition_index(store, *layout.staged_partition(key), cfg, key_set)
        queries_of = _sharing(index, queries_with, cfg.min_shared, own_keys)
        if not queries_of:
            return queries_of, None
        groups = {g for rid, g in zip(index.column("record_key").to_pylist(), index.column("group").to_pylist(),
                                      strict=True) if rid in queries_of}
        return queries_of, _candidate_rows(store, key, queries_of, groups)

    staged = store.list(layout.staging_dir(), layout.PARQUET)
    # threads overlap the reads; memory holds a few partitions' key columns (of the queries' buckets) and the
    # groups where a key matched, never whole indexes
    with ThreadPoolExecutor(SEARCH_THREADS) as pool:
        found_in = list(pool.map(candidates, staged))
    for queries_of, rows in found_in:
        if rows is None:
            continue
        row_ids = rows.column("record_id").to_pylist()
        owners = rows.column("record_key").to_pylist()
        local = np.array([(i, q) for i, rk in enumerate(owners) for q in queries_of[rk]], dtype=np.int64)
        hits = verified(local.reshape(-1, 2), shingle_sets(rows.column("text").to_pylist(), cfg), query_sets,
                        cfg.threshold)
        for i, q in hits:
            found[searched[q]].add(row_ids[i])
    return found

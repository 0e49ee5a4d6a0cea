"""The copy index: each staging partition's character-shingle band keys (``tasks.dedup.copies``), written at
ingest beside the MinHash signatures, searched when a deletion resolves, purged with its partition.

A partition's index is an Arrow IPC file (``layout.copies``) of 1,024 record batches, one per bucket of the keys'
top bits, sorted: a query computes its own keys, maps (on disk; a range read each on S3) and bisects only their
buckets, partition by partition (memory and reads bounded by a partition's buckets, not the store), and reads
each candidate's text from the one staging row group the index names for it. A purge blanks a deleted record's
rows in place (``purge_index``): its few bytes are written, not the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout
from tasks.dedup.copies import DEFAULT, CopyConfig, band_keys, shingle_sets, verified
from tasks.fingerprints import match_form
from tasks.ids import record_id_keys
from tasks.storage import Store
from tasks.tables import (
    bucket_bounds,
    bucketed_ipc_bytes,
    group_of_rows,
    ipc_buckets,
    ipc_reader,
    patches,
    reads_whole,
    top_bits,
    view_offset,
)

_CONFIG_KEY = b"copy_config"
SEARCH_THREADS = 4  # partitions' indexes read at once by a search
# a key's bucket is its top bits: a one-text query (21 keys) reads 21/1024 of each partition's index. 256 buckets
# read 4x the bytes (8 s a deletion at 10M records, cold cache); 4096 make the footer cost more than the reads
BUCKET_BITS = 10
# what the index keeps of a band key: the 32 bits after its bucket's (the bucket is its batch). 42 bits of a hash
# tell a partition's 2.1M keys apart (a query key matches another key by chance once in ~2,000 partitions), a pair
# shares chance matches in two bands never, and candidates are verified exactly anyway
STORED_BITS = 32
_STORED_SHIFT = np.uint64(64 - BUCKET_BITS - STORED_BITS)
_STORED_MASK = np.uint64((1 << STORED_BITS) - 1)
BUCKETS = 1 << BUCKET_BITS
RECORD = pa.struct([("key", pa.uint64()), ("group", pa.uint16())])  # a record's id key and its staging row group


def index_schema(cfg: CopyConfig) -> pa.Schema:
    """The copy index of one partition, an Arrow IPC file of 1,024 record batches, one per bucket (a key's top
    bits: keys are hashes, so the buckets are even): ``key`` holds the 32 bits of each band key after its
    bucket's, sorted, and ``record`` its record, dictionary-encoded: the dictionary lists each staged record once
    as its id's 64-bit hash (``tasks.ids.record_id_keys``; the purge blanks a deleted record's rows by it) and the
    staging row group holding it (verification reads only the groups of its candidates). 8 bytes a key and 10 a
    record, 18 MB for 100k records, where Parquet took 35; a query reads only its keys' batches (memory-mapped on
    disk, a range read each on S3; the whole file in one read when they are most) and a purge patches it in
    place. The config and this format are kept in the file, so a stale index is rebuilt, not
    misread."""
    return pa.schema([("key", pa.uint32()), ("record", pa.dictionary(pa.int32(), RECORD))],
                     metadata={_CONFIG_KEY: f"{cfg.index_name}/ipc-bucketed{BUCKET_BITS}/key{STORED_BITS}".encode()})


def _split(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band keys' buckets and stored bits."""
    return top_bits(keys, BUCKET_BITS), ((keys >> _STORED_SHIFT) & _STORED_MASK).astype(np.uint32)


@dataclass(frozen=True)
class IndexRows:
    """A copy index (or some of its buckets) in memory: each band key's stored bits (sorted within its bucket;
    ``bounds[b]:bounds[b + 1]`` are bucket ``b``'s rows, its ``BUCKETS + 1`` offsets) and its record's position
    in ``record_keys`` and ``groups`` (one entry per staged record), kept as the file holds them, without a 64-bit
    temporary (fresh memory is the cost at this size: every page zeroed)."""

    stored: np.ndarray  # uint32
    bounds: np.ndarray  # int64
    records: np.ndarray  # int32
    record_keys: np.ndarray  # uint64
    groups: np.ndarray  # uint16

    def matching(self, keys: np.ndarray) -> pa.Table:
        """For each band key of ``keys`` (uint64, distinct), the rows holding its bits in its bucket, as ``key``
        (the query's key), ``record_key`` and ``group``: a binary search in each bucket the keys fall in."""
        queries = np.unique(keys)
        buckets, wanted = _split(queries)
        lo, hi = np.empty(len(queries), np.int64), np.empty(len(queries), np.int64)
        edges = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1], True]).tolist()  # queries by bucket
        for start, stop in pairwise(edges):
            first, last = self.bounds[buckets[start]], self.bounds[buckets[start] + 1]
            rows = self.stored[first:last]
            lo[start:stop] = first + np.searchsorted(rows, wanted[start:stop], "left")
            hi[start:stop] = first + np.searchsorted(rows, wanted[start:stop], "right")
        counts = hi - lo
        found = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        owners = self.records[found]
        live = self.record_keys[owners] != 0  # a blanked record's rows (``purge_index``) name none
        return pa.table({"key": np.repeat(queries, counts)[live], "record_key": self.record_keys[owners[live]],
                         "group": self.groups[owners[live]]})

    def to_bytes(self, schema: pa.Schema) -> pa.Buffer:
        """As the IPC file ``index_schema`` describes: one batch per bucket, one dictionary."""
        records = pa.DictionaryArray.from_arrays(
            pa.array(self.records, pa.int32()),
            pa.StructArray.from_arrays([pa.array(self.record_keys, pa.uint64()), pa.array(self.groups, pa.uint16())],
                                       fields=list(RECORD)))
        return bucketed_ipc_bytes(pa.record_batch([pa.array(self.stored, pa.uint32()), records], schema=schema),
                                  self.bounds)


def _read_rows(reader: pa.ipc.RecordBatchFileReader, buckets: list[int]) -> IndexRows:
    """The rows of (at least) ``buckets`` (sorted) of an open copy index (the others' offsets are empty ranges)."""
    columns, bounds = ipc_buckets(reader, buckets)
    if not len(columns["key"]):
        return IndexRows(np.empty(0, np.uint32), bounds, np.empty(0, np.int32), np.empty(0, np.uint64),
                         np.empty(0, np.uint16))
    record = columns["record"]
    return IndexRows(columns["key"].to_numpy(), bounds, record.indices.to_numpy(),
                     record.dictionary.field("key").to_numpy(), record.dictionary.field("group").to_numpy())


def index_rows(staged: pa.Table, groups: np.ndarray, cfg: CopyConfig = DEFAULT) -> IndexRows:
    """The copy index of staged rows (``record_id``, ``text``, each row's staging row group in ``groups``): no
    text, only band keys, whose they are and where that record sits."""
    if len(groups) and int(np.max(groups)) > np.iinfo(np.uint16).max:
        raise ValueError(f"a staging partition of {len(groups):,} rows has more row groups than a copy index names")
    keys = band_keys(staged.column("text").to_pylist(), cfg).ravel()
    order = np.argsort(keys >> _STORED_SHIFT, kind="stable")  # by bucket (the top bits), then by stored bits
    buckets, stored = _split(keys[order])
    bounds = bucket_bounds(buckets, BUCKETS)
    ids = record_id_keys(staged.column("record_id"))
    return IndexRows(stored, bounds, (order // cfg.bands).astype(np.int32), ids, np.asarray(groups, np.uint16))


def write_copy_index(store: Store, source: str, fid: str, staged: pa.Table, cfg: CopyConfig = DEFAULT) -> str:
    """Write a staging partition's copy index (ingest's parse step calls this beside the MinHash signatures, with
    staging just written in groups of ``layout.GROUP_ROWS``)."""
    groups = np.arange(staged.num_rows) // layout.GROUP_ROWS
    return store.write_bytes(layout.copies(source, fid), index_rows(staged, groups, cfg).to_bytes(index_schema(cfg)))


def _current_reader(source_file: pa.NativeFile, cfg: CopyConfig) -> pa.ipc.RecordBatchFileReader | None:
    """The copy index open, or None when it is damaged or stale (made with another config or format)."""
    reader = ipc_reader(source_file, BUCKETS)
    config = (reader.schema.metadata or {}).get(_CONFIG_KEY) if reader is not None else None
    return reader if config == index_schema(cfg).metadata[_CONFIG_KEY] else None


def _rebuilt(store: Store, source: str, fid: str, cfg: CopyConfig) -> IndexRows:
    """A partition's copy index made from its staging and written, in place of a missing or stale one (made with
    another config, as Parquet before 2026-12-05, or damaged: that file goes)."""
    with store.open(layout.staging(source, fid)) as fh:
        parquet = pq.ParquetFile(fh)
        staged, groups = parquet.read(["record_id", "text"], use_threads=False), group_of_rows(parquet)
    rows = index_rows(staged, groups, cfg)
    store.write_bytes(layout.copies(source, fid), rows.to_bytes(index_schema(cfg)))
    store.delete(layout.copies_before_ipc(source, fid))
    return rows


def partition_index(store: Store, source: str, fid: str, keys: np.ndarray, cfg: CopyConfig = DEFAULT) -> pa.Table:
    """The rows of a partition's copy index whose key (its prefix) is one of the band ``keys`` (uint64), as
    ``IndexRows.matching`` gives them: only their buckets are read. An index missing, damaged, or made with
    another config or format, is rebuilt from staging first, so stores ingested before it are still searched."""
    key = layout.copies(source, fid)
    buckets = np.unique(_split(keys)[0]).tolist()
    if store.exists(key):
        with store.random_access(key, whole=reads_whole(len(buckets), BUCKETS)) as source_file:
            if (reader := _current_reader(source_file, cfg)) is not None:
                return _read_rows(reader, buckets).matching(keys)
    return _rebuilt(store, source, fid, cfg).matching(keys)


def purge_index(store: Store, source: str, fid: str, ids: set[str], cfg: CopyConfig = DEFAULT) -> int:
    """Blank the deleted records' rows (by id) of a partition's copy index, in place; returns how many. Only their
    bytes are written (``_blanks``), not the file's 18 MB; a stale or damaged index is removed instead, to be
    rebuilt from the purged staging when next searched. A record once blanked is no longer found by its id, so a
    re-run writes nothing."""
    key = layout.copies(source, fid)
    if not ids or not store.exists(key):
        return 0
    with store.random_access(key, whole=store.protocol != "file") as fh:
        data = fh.read_buffer()  # locally a view of the file's mapping: no copy of its 18 MB
        reader = _current_reader(pa.BufferReader(data), cfg)
        blanks = _blanks(reader, data, record_id_keys(sorted(ids))) if reader is not None else None
    if blanks is None:
        store.delete(key)
        return 0
    rows, records, count = blanks
    if count:
        store.patch(key, rows)  # the rows first: cut short after them, a re-run still finds their records
        store.patch(key, records)
    return count


def _blanks(reader: pa.ipc.RecordBatchFileReader, data: pa.Buffer, dead_keys: np.ndarray
            ) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], int] | None:
    """The patches blanking the records ``dead_keys`` names in a copy index read (zero-copy) from ``data``: each of
    their rows' stored bits set to its bucket's previous live row's (else the next's, else 0), so every bucket
    stays sorted and holds nothing of their texts, and their dictionary entries set to record key 0, no record,
    which look-ups leave out. Also the count of rows blanked; None when the arrays are not views of ``data``."""
    table = reader.read_all()
    dictionary = table.column("record").chunk(0).dictionary.field("key")
    record_keys = dictionary.to_numpy()
    dead = np.isin(record_keys, dead_keys) & (record_keys != 0)
    chunks = table.column("key").chunks
    starts = [view_offset(data, chunk) for chunk in chunks] + [view_offset(data, dictionary)]
    if None in starts:
        return None
    bounds = np.r_[0, np.cumsum([len(chunk) for chunk in chunks])]
    owners = np.concatenate([chunk.indices.to_numpy() for chunk in table.column("record").chunks])
    hit, live = np.flatnonzero(dead[owners]), np.flatnonzero(~dead[owners])
    bucket = np.searchsorted(bounds, hit, "right") - 1
    after = np.searchsorted(live, hit)  # the first live row after each: the one before is at after - 1
    before = live[np.maximum(after - 1, 0)] if len(live) else hit
    nxt = live[np.minimum(after, len(live) - 1)] if len(live) else hit
    source = np.where((after > 0) & (before >= bounds[bucket]), before,
                      np.where((after < len(live)) & (nxt < bounds[bucket + 1]), nxt, -1))
    stored = np.concatenate([chunk.to_numpy() for chunk in chunks])
    fill = np.where(source >= 0, stored[np.maximum(source, 0)], 0).astype("<u4")
    offsets = np.asarray(starts[:-1], np.int64)[bucket] + 4 * (hit - bounds[bucket])
    rows = patches(offsets, fill)
    return rows, patches(starts[-1] + 8 * np.flatnonzero(dead), np.zeros(int(dead.sum()), "<u8")), len(hit)


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
    with store.random_access(key) as fh:
        parquet = pq.ParquetFile(fh)
        rows = _keyed(parquet.read_row_groups(sorted(groups), ["record_id", "text"], use_threads=False), wanted) \
            if max(groups) < parquet.num_row_groups else None
        if rows is None or rows.num_rows < len(wanted):
            rows = _keyed(parquet.read(["record_id", "text"], use_threads=False), wanted)
    return rows


@dataclass(frozen=True)
class _QueryKeys:
    """The queries' band keys as (key, query) pairs sorted by key, and each query's own record key (0: none)."""

    keys: np.ndarray  # uint64
    queries: np.ndarray  # int64
    own: np.ndarray  # uint64

    @classmethod
    def of(cls, query_keys: list[np.ndarray], own: np.ndarray) -> _QueryKeys:
        pairs = [(k, q) for q, row in enumerate(query_keys) for k in set(row.tolist())]  # a key once a query
        keys = np.fromiter((k for k, _ in pairs), np.uint64, len(pairs))
        queries = np.fromiter((q for _, q in pairs), np.int64, len(pairs))
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], queries[order], own)

    def distinct(self) -> np.ndarray:
        return np.unique(self.keys)


def _sharing(index: pa.Table, query_keys: _QueryKeys, min_shared: int) -> dict[int, list[int]]:
    """Record key -> the queries it shares at least ``min_shared`` bands with, from a partition's index rows of the
    queries' keys (a record has one key per band, so its rows matching a query count the bands they share); a
    query's ``own`` record (by key) is not its candidate. In numpy: the index rows matching a thousand queries' keys
    are thousands a partition, and counting them pair by pair in Python took 1.5 s of a search."""
    keys, record_keys = index.column("key").to_numpy(), index.column("record_key").to_numpy()
    lo = np.searchsorted(query_keys.keys, keys, "left")
    counts = np.searchsorted(query_keys.keys, keys, "right") - lo
    if not counts.sum():
        return {}
    rows = np.repeat(np.arange(len(keys)), counts)
    at = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
    records, queries = record_keys[rows], query_keys.queries[at]
    order = np.lexsort((queries, records))
    records, queries = records[order], queries[order]
    starts = np.flatnonzero(np.r_[True, (records[1:] != records[:-1]) | (queries[1:] != queries[:-1])])
    shared = np.diff(np.r_[starts, len(records)])
    first = starts[(shared >= min_shared) & (records[starts] != query_keys.own[queries[starts]])]
    out: dict[int, list[int]] = {}
    for rid, q in zip(records[first].tolist(), queries[first].tolist(), strict=True):
        out.setdefault(rid, []).append(q)
    return out


def find_copies(store: Store, texts: list[str], cfg: CopyConfig = DEFAULT,
                own: list[str] | None = None) -> list[set[str]]:
    """For each of ``texts``, the record ids of staged rows, in any source and under any owner, that are near
    copies of it (a deletion resolving many requests at once needs to know which request each copy follows),
    but for its ``own`` record, when the text is a record's: that one is known, and verifying it would read the
    staging groups of every deleted record (at 1,000 requests, nearly all the store's text).

    One pass over the staging partitions: the batches of the queries' key buckets in each partition's index give
    the candidates (1/1024 of the index per key, searched by binary search), and only the staging row groups
    holding them (``layout.GROUP_ROWS`` rows each, named by the index) are read back for their texts and verified.
    """
    found: list[set[str]] = [set() for _ in texts]
    searched = [i for i, t in enumerate(texts) if t and match_form(t)]  # punctuation alone has no shingle
    if not searched:
        return found
    queries = [texts[i] for i in searched]
    query_keys, query_sets = band_keys(queries, cfg), shingle_sets(queries, cfg)
    own_keys = record_id_keys([own[i] for i in searched]) if own is not None else np.zeros(len(searched), np.uint64)
    pairs = _QueryKeys.of(list(query_keys), np.asarray(own_keys, np.uint64))
    key_set = pairs.distinct()

    def candidates(key: str) -> tuple[dict[int, list[int]], pa.Table | None]:  # threads: I/O and Arrow decoding
        """A partition's candidates (record key -> the queries it shares ``min_shared`` bands with) and their
        staged rows (None when none)."""
        index = partition_index(store, *layout.staged_partition(key), key_set, cfg)
        queries_of = _sharing(index, pairs, cfg.min_shared)
        if not queries_of:
            return queries_of, None
        groups = {g for rid, g in zip(index.column("record_key").to_pylist(), index.column("group").to_pylist(),
                                      strict=True) if rid in queries_of}
        return queries_of, _candidate_rows(store, key, queries_of, groups)

    staged = store.list(layout.staging_dir(), layout.PARQUET)
    # threads overlap the reads; memory holds a few partitions' indexes (of the queries' buckets) and the groups
    # where a key matched
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

"""The deletion locator: from a record id, a content hash or an owner to the partitions that hold them.

Every partitioned prefix names its files by the raw file they came from (``tasks.layout``), so knowing a row's
partition — ``(source, file id)`` — is knowing every file a deletion has to read and rewrite. Ingest's parse step
writes one locator file per partition from the keys of every row it read (staged or quarantined; the raw file
holds them all), so a deletion reads the locator instead of the store.

A locator file holds one entry per distinct ``(kind, key)``: a 64-bit blake2b hash of the two (``entry_key``; a
hash, so no owner name or id is kept twice) with the lines holding it, as an Arrow IPC file of 256 batches, one
per bucket of the hash's top bits, sorted: a look-up maps (or range-reads) only its keys' batches and bisects them,
and a purge filters the arrays and writes them back without encoding anything. A hash that matched by chance
names a partition that does not hold the key, which the reading that confirms every located partition tells; a
blake2b hash of another's key cannot be made on purpose. Entries are never missing
(each partition's are written with its staging) and may be stale (a purged row's entries go with the purge): a
located partition is always read to confirm. A partition without a locator (a store ingested before it existed)
is always a candidate, so old stores are searched as before, only slower.

For a JSONL raw file each entry also lists the lines holding its key (``lines``), and the file's metadata the
raw file's size when they were counted and how many of its lines the reader could not parse. A purge then reads
the located lines alone (``located_lines``) instead of parsing the whole raw file, confirms each by its content
(the keys the reader gives it), and renumbers the remaining entries' lines after rewriting the file
(``drop_entries``); a raw file of another size than recorded, or a located line that does not confirm, sends the
purge back to the full parse.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.rows import RowKeys
from tasks.storage import Store
from tasks.tables import (
    bucket_bounds,
    bucketed_ipc_bytes,
    ipc_buckets,
    ipc_reader,
    kept_bounds,
    reads_whole,
    top_bits,
)

log = logging.getLogger(__name__)

BUCKET_BITS = 8
BUCKETS = 1 << BUCKET_BITS
KINDS = ("record_id", "content_hash", "owner")
LOCATOR_SCHEMA = pa.schema([("key", pa.uint64()), ("lines", pa.list_(pa.int32()))])
FORMAT, LOCATOR_FORMAT = b"locator_format", b"ipc-bucketed8/blake2b64"
RAW_SIZE, UNREADABLE = b"raw_size", b"unreadable_rows"  # the locator's metadata: what its lines are valid for
PartitionRef = tuple[str, str]  # (source, file id)


def entry_key(kind: str, key: str) -> int:
    """The 64-bit hash a locator keeps of a key of ``kind``."""
    return int.from_bytes(hashlib.blake2b(f"{kind}\0{key}".encode(), digest_size=8).digest(), "big")


def entry_keys(withdrawn: Mapping[str, Iterable[str]]) -> np.ndarray:
    """The entry keys of some keys by kind, sorted and distinct (uint64)."""
    return np.unique(np.array([entry_key(kind, v) for kind, values in withdrawn.items() for v in values], np.uint64))


def _bounds(keys: np.ndarray) -> np.ndarray:
    """Each bucket's first entry and the end, for entry keys sorted."""
    return bucket_bounds(top_bits(keys, BUCKET_BITS), BUCKETS)


def _line(location: str) -> int | None:
    """A JSONL location's line number (``#L12`` -> 12); None for other formats' locations."""
    return int(location[2:]) if location.startswith("#L") else None


@dataclass(frozen=True)
class Entries:
    """A locator (or some of its buckets) in memory: entry keys sorted, each entry's lines, the file's metadata."""

    keys: np.ndarray  # uint64
    lines: pa.Array  # list<int32>, null for a raw file of another format than JSONL
    bounds: np.ndarray  # each bucket's first entry, and the end
    meta: dict[bytes, bytes]

    def find(self, wanted: np.ndarray) -> np.ndarray:
        """Which entries are of the ``wanted`` entry keys (sorted), as a mask."""
        at = np.minimum(np.searchsorted(wanted, self.keys), max(len(wanted) - 1, 0))
        return wanted[at] == self.keys if len(wanted) else np.zeros(len(self.keys), bool)

    def holds(self, wanted: np.ndarray) -> np.ndarray:
        """Which of the ``wanted`` entry keys (sorted) the entries hold, as a mask over them."""
        at = np.minimum(np.searchsorted(self.keys, wanted), max(len(self.keys) - 1, 0))
        return self.keys[at] == wanted if len(self.keys) else np.zeros(len(wanted), bool)

    def to_bytes(self) -> pa.Buffer:
        schema = LOCATOR_SCHEMA.with_metadata({**self.meta, FORMAT: LOCATOR_FORMAT})
        return bucketed_ipc_bytes(pa.record_batch([pa.array(self.keys, pa.uint64()), self.lines], schema=schema),
                                  self.bounds)


def locator_entries(keys: Mapping[str, RowKeys], raw_size: int | None = None, unreadable: int = 0) -> Entries:
    """The distinct ``(kind, key)`` entries of rows (by location), each with its JSONL lines (null for other
    formats), and the raw file's size and unreadable rows as metadata (when ``raw_size``); ingest writes one per
    raw file, ~3 entries a row."""
    jsonl = all(loc.startswith("#L") for loc in keys)
    hashed, lines = [], []
    for location, row in keys.items():
        line = _line(location) if jsonl else 0
        for kind, value in zip(KINDS, (row.record_id, row.content_hash, row.owner), strict=True):
            if value:
                hashed.append(entry_key(kind, value))
                lines.append(line)
    flat, numbers = np.array(hashed, np.uint64), np.array(lines, np.int32)
    order = np.lexsort((numbers, flat))
    flat, numbers = flat[order], numbers[order]
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]]) if len(flat) else np.empty(0, np.int64)
    distinct = flat[starts]
    offsets = pa.array(np.r_[starts, len(flat)].astype(np.int32))
    listed = pa.ListArray.from_arrays(offsets, pa.array(numbers, pa.int32())) if jsonl \
        else pa.nulls(len(distinct), pa.list_(pa.int32()))
    meta = {RAW_SIZE: str(raw_size).encode(), UNREADABLE: str(unreadable).encode()} \
        if raw_size is not None and jsonl else {}
    return Entries(distinct, listed, _bounds(distinct), meta)


def write_locator(store: Store, source: str, fid: str, keys: Mapping[str, RowKeys], raw_size: int | None = None,
                  unreadable: int = 0) -> str:
    """The partition's locator from the keys of every row its raw file holds, by location (ingest's parse step);
    ``raw_size`` and ``unreadable`` (rows the reader could not parse) make its lines usable by a purge."""
    return store.write_bytes(layout.locator(source, fid), locator_entries(keys, raw_size, unreadable).to_bytes())


def _converted(store: Store, source: str, fid: str) -> None:
    """A Parquet locator (``(bucket, kind, key, lines)`` rows, as stores ingested before 2026-12-05 kept them)
    rewritten as entry keys; the Parquet file goes."""
    old = store.read_parquet(layout.locator_before_ipc(source, fid))
    keys = np.array([entry_key(k, v) for k, v in zip(old.column("kind").to_pylist(), old.column("key").to_pylist(),
                                                     strict=True)], np.uint64)
    order = np.argsort(keys, kind="stable")
    meta = {k: v for k, v in (old.schema.metadata or {}).items() if k in (RAW_SIZE, UNREADABLE)}
    entries = Entries(keys[order], old.column("lines").combine_chunks().take(pa.array(order)), _bounds(keys[order]),
                      meta)
    store.write_bytes(layout.locator(source, fid), entries.to_bytes())
    store.delete(layout.locator_before_ipc(source, fid))


def _opened(store: Store, source: str, fid: str, whole: bool = False) -> pa.NativeFile | None:
    """A partition's locator file opened (``Store.random_access``; converted first, if it is still Parquet); None
    when it has none."""
    key = layout.locator(source, fid)
    if not store.exists(key):
        if not store.exists(layout.locator_before_ipc(source, fid)):
            return None
        _converted(store, source, fid)
    return store.random_access(key, whole)


def _read(reader: pa.ipc.RecordBatchFileReader, buckets: list[int]) -> Entries:
    """The entries of ``buckets`` (sorted) of an open locator."""
    columns, bounds = ipc_buckets(reader, buckets)
    keys = columns["key"].to_numpy() if len(columns["key"]) else np.empty(0, np.uint64)
    lines = columns["lines"] if len(columns["lines"]) else pa.array([], pa.list_(pa.int32()))
    return Entries(keys, lines, bounds, dict(reader.schema.metadata or {}))


def _buckets_of(wanted: np.ndarray) -> list[int]:
    return np.unique(top_bits(wanted, BUCKET_BITS)).tolist()


@dataclass(frozen=True)
class Located:
    """The lines of a JSONL raw file that hold any of some keys (by the locator), and its unreadable rows."""

    lines: set[int]
    unreadable: int


def located_lines(store: Store, source: str, fid: str, raw_key: str, withdrawn: Mapping[str, Iterable[str]]
                  ) -> Located | None:
    """The lines of the partition's raw file holding any of ``withdrawn`` keys (by kind), read from the buckets
    of those keys; None when the locator cannot say (no locator, no lines, or a raw file changed since)."""
    opened = _opened(store, source, fid)
    if opened is None:
        return None
    with opened:
        reader = ipc_reader(opened, BUCKETS)
        meta = (reader.schema.metadata or {}) if reader is not None else {}
        if reader is None or RAW_SIZE not in meta or int(meta[RAW_SIZE]) != store.size(raw_key):
            return None
        wanted = entry_keys(withdrawn)
        entries = _read(reader, _buckets_of(wanted))
    found = pc.list_flatten(entries.lines.filter(pa.array(entries.find(wanted)))).to_pylist()
    return Located(set(found), int(meta[UNREADABLE]))


def _renumbered(lines: pa.Array, removed: np.ndarray) -> pa.Array:
    """Each entry's lines once ``removed`` (sorted line numbers) left the file: those go, later ones move up."""
    lengths = pc.fill_null(pc.list_value_length(lines), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(lines).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = ~np.isin(flat, removed)
    counts = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[keep], minlength=len(lengths))
    shifted = flat[keep] - np.searchsorted(removed, flat[keep], side="left")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(shifted, pa.int32()))


def drop_entries(store: Store, source: str, fid: str, withdrawn: Mapping[str, set[str]],
                 removed_lines: Iterable[str] = (), raw_key: str | None = None) -> int:
    """Remove the entries of withdrawn keys (by kind) from a partition's locator (the purge); returns how many.
    When the purge removed ``removed_lines`` (locations) from the raw file ``raw_key``, the other entries' lines
    are renumbered and its new size recorded, so the next purge can trust them. A damaged locator is removed: the
    partition is then looked at whole, as one ingested before there were locators."""
    opened = _opened(store, source, fid, whole=True)
    if opened is None:
        return 0
    with opened:
        reader = ipc_reader(opened, BUCKETS)
        entries = _read(reader, list(range(BUCKETS))) if reader is not None else None
    if entries is None:
        log.warning("the locator of %s/%s is damaged: removed", source, fid)
        store.delete(layout.locator(source, fid))
        return 0
    hit = entries.find(entry_keys(withdrawn))
    removed = int(hit.sum())
    gone = np.array(sorted(n for loc in removed_lines if (n := _line(loc)) is not None), np.int64)
    if not removed and not len(gone):
        return 0
    kept = ~hit
    lines, meta = entries.lines.filter(pa.array(kept)), entries.meta
    if RAW_SIZE in meta and raw_key is not None:
        lines, meta = _renumbered(lines, gone), {**meta, RAW_SIZE: str(store.size(raw_key)).encode()}
    store.write_bytes(layout.locator(source, fid),
                      Entries(entries.keys[kept], lines, kept_bounds(entries.bounds, kept), meta).to_bytes())
    return removed


class Locator:
    """Look-ups over every partition's locator for one resolution pass: each file is opened once (a pass looks up
    several kinds, several times), the files are read by a few threads at once (mapping and bisecting release the
    GIL), and every answer is kept, so a key is looked up once."""

    THREADS = 4

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[tuple[str, str], set[PartitionRef]] = {}

    @cached_property
    def partitions(self) -> list[PartitionRef]:
        return [layout.staged_partition(k) for k in self.store.list(layout.staging_dir(), layout.PARQUET)]

    @cached_property
    def _files(self) -> dict[PartitionRef, pa.ipc.RecordBatchFileReader | None]:
        """Per partition: its open locator, or None when it has none."""

        def reader(part: PartitionRef) -> pa.ipc.RecordBatchFileReader | None:
            opened = _opened(self.store, *part)
            return None if opened is None else ipc_reader(opened, BUCKETS)  # damaged: as if it had none

        with ThreadPoolExecutor(self.THREADS) as pool:
            return dict(zip(self.partitions, pool.map(reader, self.partitions), strict=True))

    def _lookup(self, kind: str, wanted: list[str]) -> dict[str, set[PartitionRef]]:
        hashed = np.array([entry_key(kind, v) for v in wanted], np.uint64)
        order = np.argsort(hashed)
        buckets = _buckets_of(hashed)
        whole = reads_whole(len(buckets), BUCKETS)  # one sequential read of each file, not one a batch

        def holds(part: PartitionRef) -> list[str]:
            reader = self._files[part]
            if reader is None:
                return wanted
            if whole:
                with self.store.random_access(layout.locator(*part), whole=True) as opened:
                    whole_file = ipc_reader(opened, BUCKETS)
                    if whole_file is None:
                        return wanted
                    entries = _read(whole_file, buckets)
            else:
                entries = _read(reader, buckets)
            present = entries.holds(hashed[order])
            return [wanted[i] for i in order[present].tolist()]

        out: dict[str, set[PartitionRef]] = {v: set() for v in wanted}
        with ThreadPoolExecutor(self.THREADS) as pool:
            for part, found in zip(self._files, pool.map(holds, self._files), strict=True):
                for v in found:
                    out[v].add(part)
        return out

    def where(self, kind: str, values: Iterable[str]) -> dict[str, set[PartitionRef]]:
        """For each of ``values`` of ``kind``, the partitions that may hold it (every partition without a locator
        among them): one look-up for many values, each partition's buckets read once, known answers not again."""
        wanted = sorted(set(values))
        fresh = [v for v in wanted if (kind, v) not in self._known]
        if fresh:
            for v, parts in self._lookup(kind, fresh).items():
                self._known[(kind, v)] = parts
        return {v: set(self._known[(kind, v)]) for v in wanted}

    def find(self, kind: str, values: Iterable[str]) -> set[PartitionRef]:
        """The partitions that may hold any of ``values`` of ``kind`` (all of them, for one without a locator)."""
        return set().union(*self.where(kind, values).values())

"""The deletion locator: from a record id, a content hash or an owner to the partitions that hold them.

Every partitioned prefix names its files by the raw file they came from (``tasks.layout``), so knowing a row's
partition — ``(source, file id)`` — is knowing every file a deletion has to read and rewrite. Ingest's parse step
writes one locator file per partition from the keys of every row it read (staged or quarantined; the raw file
holds them all), so a deletion reads the locator instead of the store.

A locator file holds ``(bucket, kind, key)`` rows, one row group per bucket of a hash of the key: a look-up reads
each file's footer and only the row groups of the keys' buckets, ~1/256 of the locator. Entries are never missing
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
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout
from tasks.rows import RowKeys
from tasks.storage import Store
from tasks.tables import bucket_groups, bucketed_bytes, read_buckets

BUCKETS = 256
KINDS = ("record_id", "content_hash", "owner")
LOCATOR_SCHEMA = pa.schema([("bucket", pa.uint16()), ("kind", pa.string()), ("key", pa.string()),
                            ("lines", pa.list_(pa.int32()))])
RAW_SIZE, UNREADABLE = b"raw_size", b"unreadable_rows"  # the locator's metadata: what its lines are valid for
PartitionRef = tuple[str, str]  # (source, file id)


def bucket_of(kind: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{kind}\0{key}".encode(), digest_size=2).digest(), "big") % BUCKETS


def _line(location: str) -> int | None:
    """A JSONL location's line number (``#L12`` -> 12); None for other formats' locations."""
    return int(location[2:]) if location.startswith("#L") else None


def locator_table(keys: Mapping[str, RowKeys], raw_size: int | None = None, unreadable: int = 0) -> pa.Table:
    """The distinct ``(kind, key)`` entries of rows (by location), sorted by bucket, each with its JSONL lines
    (null for other formats), and the raw file's size and unreadable rows as metadata (when ``raw_size``).
    Grouped with Arrow: ingest writes one per raw file, ~3 entries a row."""
    jsonl = all(loc.startswith("#L") for loc in keys)
    lines = pa.array([_line(loc) for loc in keys], pa.int32())
    rows = list(keys.values())
    table = pa.concat_tables([pa.table({"kind": pa.array([kind] * len(rows), pa.string()),
                                        "key": pa.array([getattr(row, attr) for row in rows], pa.string()),
                                        "line": lines}) for kind, attr in zip(KINDS, ("record_id", "content_hash",
                                                                                      "owner"), strict=True)])
    table = table.filter(pc.is_valid(table.column("key"))).group_by(["kind", "key"], use_threads=False).aggregate(
        [("line", "list")])
    kinds, values = table.column("kind").to_pylist(), table.column("key").to_pylist()
    table = pa.table({"bucket": pa.array([bucket_of(k, v) for k, v in zip(kinds, values, strict=True)], pa.uint16()),
                      "kind": table.column("kind"), "key": table.column("key"),
                      "lines": table.column("line_list") if jsonl else pa.nulls(table.num_rows, pa.list_(pa.int32()))})
    table = table.filter(pc.not_equal(table.column("key"), "")).sort_by(
        [("bucket", "ascending"), ("kind", "ascending"), ("key", "ascending")]).cast(LOCATOR_SCHEMA)
    if raw_size is None or not jsonl:
        return table
    return table.replace_schema_metadata({RAW_SIZE: str(raw_size), UNREADABLE: str(unreadable)})


def write_locator(store: Store, source: str, fid: str, keys: Mapping[str, RowKeys], raw_size: int | None = None,
                  unreadable: int = 0) -> str:
    """The partition's locator from the keys of every row its raw file holds, by location (ingest's parse step);
    ``raw_size`` and ``unreadable`` (rows the reader could not parse) make its lines usable by a purge."""
    return store.write_bytes(layout.locator(source, fid), bucketed_bytes(locator_table(keys, raw_size, unreadable)))


@dataclass(frozen=True)
class Located:
    """The lines of a JSONL raw file that hold any of some keys (by the locator), and its unreadable rows."""

    lines: set[int]
    unreadable: int


def located_lines(store: Store, source: str, fid: str, raw_key: str, withdrawn: Mapping[str, Iterable[str]]
                  ) -> Located | None:
    """The lines of the partition's raw file holding any of ``withdrawn`` keys (by kind), read from the buckets
    of those keys; None when the locator cannot say (no locator, no lines, or a raw file changed since)."""
    key = layout.locator(source, fid)
    if not store.exists(key):
        return None
    with store.open(key) as fh:
        parquet = pq.ParquetFile(fh)
        meta = parquet.schema_arrow.metadata or {}
        if RAW_SIZE not in meta or int(meta[RAW_SIZE]) != store.size(raw_key):
            return None
        buckets = {bucket_of(kind, v) for kind, values in withdrawn.items() for v in values}
        table = read_buckets(parquet, bucket_groups(parquet), buckets, ["kind", "key", "lines"])
    found = set() if table is None else set(pc.list_flatten(table.column("lines").filter(
        _entries_of(table, withdrawn))).to_pylist())
    return Located(found, int(meta[UNREADABLE]))


def _entries_of(table: pa.Table, withdrawn: Mapping[str, Iterable[str]]) -> pa.ChunkedArray | pa.Array:
    """Which of a locator's entries are of ``withdrawn`` keys (by kind), as a mask."""
    hit: pa.ChunkedArray | pa.Array = pa.array(np.zeros(table.num_rows, dtype=bool))
    for kind, values in withdrawn.items():
        if values:
            mine = pc.and_(pc.equal(table.column("kind"), kind),
                           pc.is_in(table.column("key"), value_set=pa.array(sorted(values), pa.string())))
            hit = pc.or_(hit, mine)
    return hit


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
    are renumbered and its new size recorded, so the next purge can trust them."""
    key = layout.locator(source, fid)
    if not store.exists(key):
        return 0
    table = store.read_parquet(key)
    hit = _entries_of(table, withdrawn)
    removed = int(pc.sum(hit).as_py() or 0)
    gone = np.array(sorted(n for loc in removed_lines if (n := _line(loc)) is not None), np.int64)
    meta = table.schema.metadata or {}
    if not removed and not len(gone):
        return 0
    table = table.filter(pc.invert(hit))
    if "lines" in table.column_names and RAW_SIZE in meta and raw_key is not None:
        table = table.set_column(table.column_names.index("lines"), "lines",
                                 _renumbered(table.column("lines").combine_chunks(), gone))
        table = table.replace_schema_metadata({**meta, RAW_SIZE: str(store.size(raw_key))})
    store.write_bytes(key, bucketed_bytes(table))
    return removed


class Locator:
    """Look-ups over every partition's locator for one resolution pass: each file is opened and its footer read
    once (a pass looks up several kinds, several times), the files are read by a few threads at once (reads are
    I/O and Arrow decoding, which release the GIL), and every answer is kept, so a key is looked up once."""

    THREADS = 4

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[tuple[str, str], set[PartitionRef]] = {}

    @cached_property
    def partitions(self) -> list[PartitionRef]:
        return [layout.staged_partition(k) for k in self.store.list(layout.staging_dir(), layout.PARQUET)]

    def _open(self, part: PartitionRef) -> tuple[pq.ParquetFile, dict[int, list[int]]] | None:
        key = layout.locator(*part)
        if not self.store.exists(key):
            return None
        parquet = pq.ParquetFile(self.store.open(key))  # kept open for this pass's look-ups
        return parquet, bucket_groups(parquet)

    @cached_property
    def _files(self) -> dict[PartitionRef, tuple[pq.ParquetFile, dict[int, list[int]]] | None]:
        """Per partition: its open locator and bucket -> row groups, or None when it has no locator."""
        with ThreadPoolExecutor(self.THREADS) as pool:
            return dict(zip(self.partitions, pool.map(self._open, self.partitions), strict=True))

    def _lookup(self, kind: str, wanted: list[str]) -> dict[str, set[PartitionRef]]:
        buckets = {bucket_of(kind, v) for v in wanted}
        value_set = pa.array(wanted, pa.string())

        def holds(part: PartitionRef) -> list[str]:
            opened = self._files[part]
            if opened is None:
                return wanted
            table = read_buckets(opened[0], opened[1], buckets, ["kind", "key"],
                                 lambda: self.store.read_bytes(layout.locator(*part)))
            if table is None:
                return []
            hit = pc.and_(pc.equal(table.column("kind"), kind), pc.is_in(table.column("key"), value_set=value_set))
            return table.column("key").filter(hit).to_pylist()

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

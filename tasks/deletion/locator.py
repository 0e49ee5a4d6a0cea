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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.rows import RowKeys
from tasks.storage import Store
from tasks.tables import bucket_groups, bucketed_bytes, read_buckets

BUCKETS = 256
KINDS = ("record_id", "content_hash", "owner")
LOCATOR_SCHEMA = pa.schema([("bucket", pa.uint16()), ("kind", pa.string()), ("key", pa.string())])
PartitionRef = tuple[str, str]  # (source, file id)


def bucket_of(kind: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{kind}\0{key}".encode(), digest_size=2).digest(), "big") % BUCKETS


def locator_table(keys: Iterable[RowKeys]) -> pa.Table:
    """The distinct ``(kind, key)`` entries of rows, sorted by bucket."""
    entries = sorted({(bucket_of(kind, value), kind, value) for row in keys
                      for kind, value in (("record_id", row.record_id), ("content_hash", row.content_hash),
                                          ("owner", row.owner)) if value})
    columns = list(zip(*entries, strict=True)) if entries else [[], [], []]
    return pa.table(dict(zip(LOCATOR_SCHEMA.names, columns, strict=True)), schema=LOCATOR_SCHEMA)


def write_locator(store: Store, source: str, fid: str, keys: Iterable[RowKeys]) -> str:
    """The partition's locator from the keys of every row its raw file holds (ingest's parse step)."""
    return store.write_bytes(layout.locator(source, fid), bucketed_bytes(locator_table(keys)))


def drop_entries(store: Store, source: str, fid: str, withdrawn: Mapping[str, set[str]]) -> int:
    """Remove the entries of withdrawn keys (by kind) from a partition's locator (the purge); returns how many."""
    key = layout.locator(source, fid)
    if not store.exists(key):
        return 0
    table = store.read_parquet(key)
    hit = pa.array(np.zeros(table.num_rows, dtype=bool))
    for kind, values in withdrawn.items():
        if values:
            mine = pc.and_(pc.equal(table.column("kind"), kind),
                           pc.is_in(table.column("key"), value_set=pa.array(sorted(values), pa.string())))
            hit = pc.or_(hit, mine)
    removed = int(pc.sum(hit).as_py() or 0)
    if removed:
        store.write_bytes(key, bucketed_bytes(table.filter(pc.invert(hit))))
    return removed


class Locator:
    """Look-ups over every partition's locator; footers are read once per instance (one resolution pass)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @cached_property
    def partitions(self) -> list[PartitionRef]:
        return [layout.staged_partition(k) for k in self.store.list(layout.staging_dir(), layout.PARQUET)]

    @cached_property
    def _groups(self) -> dict[PartitionRef, dict[int, int] | None]:
        """Per partition: bucket -> row group, or None when the partition has no locator."""
        out: dict[PartitionRef, dict[int, int] | None] = {}
        for part in self.partitions:
            key = layout.locator(*part)
            if not self.store.exists(key):
                out[part] = None
                continue
            with self.store.open(key) as fh:
                out[part] = bucket_groups(fh)
        return out

    def where(self, kind: str, values: Iterable[str]) -> dict[str, set[PartitionRef]]:
        """For each of ``values`` of ``kind``, the partitions that may hold it (every partition without a locator
        among them): one look-up for many values, each partition's buckets read once."""
        wanted = sorted(set(values))
        out: dict[str, set[PartitionRef]] = {v: set() for v in wanted}
        if not wanted:
            return out
        buckets = {bucket_of(kind, v) for v in wanted}
        value_set = pa.array(wanted, pa.string())
        for part, groups in self._groups.items():
            if groups is None:
                for v in wanted:
                    out[v].add(part)
                continue
            with self.store.open(layout.locator(*part)) as fh:
                table = read_buckets(fh, groups, buckets, ["kind", "key"])
            if table is None:
                continue
            hit = pc.and_(pc.equal(table.column("kind"), kind), pc.is_in(table.column("key"), value_set=value_set))
            for v in table.column("key").filter(hit).to_pylist():
                out[v].add(part)
        return out

    def find(self, kind: str, values: Iterable[str]) -> set[PartitionRef]:
        """The partitions that may hold any of ``values`` of ``kind`` (all of them, for one without a locator)."""
        return set().union(*self.where(kind, values).values())

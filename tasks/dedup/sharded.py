"""Clustering a store partition by partition, in memory that follows its rows, not their signatures.

Every staged row is its global index: its rank in delivery order. Only integers are held per row — its record id
and content hash as 96- and 128-bit integers (``tasks.ids`` formats), its positions in its staging and signature
files — plus one LSH band's keys at a time (datatrove's bucket stage, sharded by band). Signatures are read back,
file by file, for the rows of candidate pairs only. Membership and id conflicts are written per staging partition
(``layout.CLUSTERS``, ``layout.ID_CONFLICTS``), so publishing a partition reads its own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.dedup.clusters import (
    CLUSTER_SCHEMA,
    CONFLICT_SCHEMA,
    ROW_COLUMNS,
    candidate_pairs,
    first_equal,
    membership,
    membership_table,
)
from tasks.dedup.minhash import MinhashConfig, signatures
from tasks.dedup.signature_files import band_column, live_rows, read_column
from tasks.parquet_encoding import parquet_bytes
from tasks.storage import Store

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_HEX_VALUE = np.full(256, 255, np.uint8)
_HEX_VALUE[_HEX] = np.arange(16, dtype=np.uint8)


def _hex_words(strings: pa.ChunkedArray, prefix: bytes, width: int, digits: int) -> np.ndarray:
    """The first ``digits`` hex digits after ``prefix`` of strings of ``width`` characters, as ``(n, words)``
    uint64 (16 digits a word), read from the Arrow buffers: no Python object per row."""
    arr = strings.combine_chunks()
    n, skip = len(arr), len(prefix)
    if not n:
        return np.empty((0, -(-digits // 16)), np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], np.int32, n + 1, arr.offset * 4)
    if arr.null_count or np.any(np.diff(offsets) != width):
        raise ValueError(f"expected {width}-character hex keys ({prefix.decode()}…) in {arr.type}")
    chars = np.frombuffer(arr.buffers()[2], np.uint8, n * width, offsets[0]).reshape(n, width)
    nibbles = _HEX_VALUE[chars[:, skip:skip + digits]]
    if np.any(nibbles == 255) or np.any(chars[:, :skip] != np.frombuffer(prefix, np.uint8)):
        raise ValueError(f"expected lower-case hex keys after {prefix.decode()!r}")
    words = -(-digits // 16)
    padded = np.zeros((n, words * 16), np.uint8)  # a last word of fewer digits is their value: zeros before them
    full = (words - 1) * 16
    padded[:, :full] = nibbles[:, :full]
    padded[:, words * 16 - (digits - full):] = nibbles[:, full:]
    packed = np.ascontiguousarray((padded[:, 0::2] << 4) | padded[:, 1::2])  # two digits a byte, big-endian words
    return packed.view(">u8").astype(np.uint64)  # 4-5 ms 100k ids or hashes; summing shifted digits took 11


def _hex_strings(words: np.ndarray, prefix: bytes, digits: int) -> pa.StringArray:
    """``_hex_words`` back to strings."""
    n, width = len(words), len(prefix) + digits
    chars = np.empty((n, width), np.uint8)
    chars[:, :len(prefix)] = np.frombuffer(prefix, np.uint8)
    for d in range(digits):
        in_word = min(16, digits - d // 16 * 16)
        shift = np.uint64(4 * (in_word - 1 - d % 16))
        chars[:, len(prefix) + d] = _HEX[(words[:, d // 16] >> shift) & np.uint64(15)]
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * width).tobytes())
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(chars.tobytes()))


READ_THREADS = 2  # staging files read at once: 1.5 s of a 10M store's 5.1 s pass one at a time


def _file_rows(store: Store, key: str, cfg: MinhashConfig) -> tuple | None:
    """A staging file's rows for ``StoreRows.read``, in (delivered_at, source_uri) order: its first row's order
    key, its partition, the rows' positions in staging and in the signature file, their ids and hashes packed;
    None when it has no row."""
    part = layout.staged_partition(key)
    table = store.read_parquet(key, ROW_COLUMNS)
    sig = live_rows(store, *part, table.column("record_id"), cfg)
    order = pc.sort_indices(table, [("delivered_at", "ascending"), ("source_uri", "ascending")])
    table = table.take(order)
    if not table.num_rows:
        return None
    positions = order.to_numpy().astype(np.int32)
    return ((table["delivered_at"][0].as_py(), table["source_uri"][0].as_py()), part, positions,
            sig[positions].astype(np.int32), _hex_words(table["record_id"], b"r", 25, 24),
            _hex_words(table["content_hash"], b"", 64, 32))


@dataclass
class StoreRows:
    """Every staged row of the store, by global index: its rank in delivery order (earliest first)."""

    parts: list[tuple[str, str]]  # staging partitions (source, file id), in delivery order
    offsets: np.ndarray  # (parts + 1,) the first global index of each partition
    pos: np.ndarray  # (N,) int32: each row's position in its staging file
    sig: np.ndarray  # (N,) int32: its row in its signature file (``signature_files.live_rows``)
    rid: np.ndarray  # (N, 2) uint64: the record id, "r" + 24 hex digits (tasks.ids.record_id)
    chash: np.ndarray  # (N, 2) uint64: the first 32 hex digits of the content hash (128 bits of sha256)

    @classmethod
    def read(cls, store: Store, cfg: MinhashConfig) -> StoreRows:
        """One pass over the staging files, reading their key columns, and their signature files' record keys, two
        files at a time (Arrow decodes and numpy packs without the GIL). A file's rows share its delivery time and
        its URI up to the ``#``, so each file is a run of the store's (delivered_at, source_uri) order."""
        with ThreadPoolExecutor(READ_THREADS) as pool:
            found = [f for f in pool.map(lambda key: _file_rows(store, key, cfg),
                                         store.list(layout.staging_dir(), layout.PARQUET)) if f is not None]
        found.sort(key=lambda f: f[0])
        offsets = np.cumsum([0] + [len(f[2]) for f in found])
        return cls([f[1] for f in found], offsets, *(np.concatenate([f[i] for f in found]) if found else empty
                                                     for i, empty in ((2, np.empty(0, np.int32)),
                                                                      (3, np.empty(0, np.int32)),
                                                                      (4, np.empty((0, 2), np.uint64)),
                                                                      (5, np.empty((0, 2), np.uint64)))))

    def by_part(self, rows: np.ndarray) -> Iterator[tuple[int, slice]]:
        """``(file, slice of rows)`` for ascending global indices ``rows``, for each file holding some."""
        bounds = np.searchsorted(rows, self.offsets)
        for part in np.flatnonzero(np.diff(bounds)):
            yield int(part), slice(int(bounds[part]), int(bounds[part + 1]))

    def staged_column(self, store: Store, part: int, name: str) -> pa.Array:
        return store.read_parquet(layout.staging(*self.parts[part]), [name]).column(0).combine_chunks()

    def bands(self, store: Store, rows: np.ndarray, cfg: MinhashConfig) -> Iterator[np.ndarray]:
        """Each band's keys of ``rows`` (ascending), one band at a time (the bucket stage)."""
        for band in range(cfg.banding[0]):
            keys = np.empty(len(rows), np.uint64)
            for part, sl in self.by_part(rows):
                column = read_column(store, *self.parts[part], band_column(band))
                if column is None:
                    raise ValueError(f"the signature file of {self.parts[part]} went while it was clustered")
                keys[sl] = column[self.sig[rows[sl]]]
            yield keys

    def signatures(self, store: Store, rows: np.ndarray, cfg: MinhashConfig) -> np.ndarray:
        """The signatures of ``rows`` (ascending), ``(len(rows), num_perm)``, made again from their texts in
        staging, file by file.

        Raises:
            ValueError: a staging partition changed while it was clustered.
        """
        out = np.empty((len(rows), cfg.num_perm), np.uint32)
        for part, sl in self.by_part(rows):
            staged = store.read_parquet(layout.staging(*self.parts[part]), ["record_id", "text"])
            positions = pa.array(self.pos[rows[sl]], pa.int32())
            if staged.num_rows <= int(self.pos[rows[sl]].max()) or not staged.column("record_id").take(
                    positions).combine_chunks().equals(self.record_ids(rows[sl])):
                raise ValueError(f"staging of {self.parts[part]} changed while it was clustered: cluster again")
            out[sl] = signatures(staged.column("text").take(positions), cfg)
        return out

    def record_ids(self, rows: np.ndarray) -> pa.StringArray:
        return _hex_strings(self.rid[rows], b"r", 24)

    def write(self, store: Store, kind: str, rows: np.ndarray, table_of: Callable[[int, slice], pa.Table],
              schema: pa.Schema) -> set[str]:
        """``table_of(file, slice)`` of ``rows`` (ascending) into each file's partition of ``kind``; the keys. A
        partition's file is left as it is when its rows did not change: its version then says so to publishing
        (``tasks.ingest.unchanged_publishes``), which a one-file delivery would otherwise repeat for every one."""
        written = set()
        for part, sl in self.by_part(rows):
            key = layout.dedup_part(kind, *self.parts[part])
            store.write_if_changed(key, parquet_bytes(table_of(part, sl), schema))
            written.add(key)
        return written


def cluster_partitions(store: Store, cfg: MinhashConfig) -> dict[str, int]:
    """Id conflicts, exact duplicates and near-dup clusters of every signature row in the store, written per staging
    partition (``layout.CLUSTERS``, ``layout.ID_CONFLICTS``; files of partitions with none are removed).

    A record id seen before in delivery order is a conflict (``repeated_record`` when the text matches,
    ``duplicate_id`` when not) and takes no part in clustering. The same raw files give the same clusters whatever
    the order, or the number of runs, in which they were parsed: the earliest delivered copy is kept.
    """
    rows = StoreRows.read(store, cfg)
    first = first_equal(rows.rid[:, 0], rows.rid[:, 1])
    conflicts = np.flatnonzero(first != np.arange(len(first)))
    repeated = np.all(rows.chash[first[conflicts]] == rows.chash[conflicts], axis=1)
    kept = np.delete(np.arange(len(first)), conflicts)
    members, stats = membership(first_equal(rows.chash[kept, 0], rows.chash[kept, 1]),
                                lambda reps: candidate_pairs(rows.bands(store, kept[reps], cfg)),
                                lambda some: rows.signatures(store, kept[some], cfg), cfg)
    clustered = kept[members.rows]
    table = membership_table(rows.record_ids(clustered), rows.record_ids(kept[members.kept]), members)
    reason = np.where(repeated, "repeated_record", "duplicate_id")
    written = rows.write(store, layout.CLUSTERS, clustered, lambda _, sl: table.slice(sl.start, sl.stop - sl.start),
                         CLUSTER_SCHEMA) | rows.write(
        store, layout.ID_CONFLICTS, conflicts, lambda part, sl: pa.table({
            "source_uri": rows.staged_column(store, part, "source_uri").take(rows.pos[conflicts[sl]]),
            "record_id": rows.record_ids(conflicts[sl]), "reason": reason[sl]}, schema=CONFLICT_SCHEMA),
        CONFLICT_SCHEMA)
    for kind in (layout.CLUSTERS, layout.ID_CONFLICTS):
        for key in set(store.list(layout.dedup_part(kind), layout.PARQUET)) - written:
            store.delete(key)
    return {**stats.to_dict(), "id_conflicts": len(conflicts)}

"""Resolution: requests' selectors to the record ids they delete, following the text into every copy.

A model learns the text, not the row, so the selected records bring along every record with the same content
hash (exact copies, under any owner or source), every member of their near-duplicate clusters, and every
lightly edited copy of their text that ``tasks.dedup.copy_index`` finds (character shingles: the word-shingle
clusters miss a one-word edit of a short text) — and those bring along theirs, to a fixed point. Staging is
read, not records, so rows that publishing dropped as duplicates are found too.

Cost follows the requests, not the store: the locator (``tasks.deletion.locator``) names the partitions that hold
a key, and only their staging key columns are read. Open requests are resolved together, breadth first: each
round looks up the neighbours of every request's newly found records in one pass (one copy search for all of
them), so a thousand requests cost a few passes, not a thousand.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.dedup.clusters import read_clusters
from tasks.dedup.copy_index import find_copies
from tasks.deletion.locator import Locator, PartitionRef
from tasks.deletion.requests import RESOLVED, for_each, set_status
from tasks.rows import KEY_COLUMNS
from tasks.storage import Store
from tasks.tables import rows_with, rows_with_ids

READ_THREADS = 2  # staging files a resolution reads at once
KEY_CACHE_BYTES = 2 << 30  # staging key columns a resolution keeps (at 10M records all of them: ~1 GB)
SELECTOR_COLUMN = {"owner": "owner_id", "record_id": "record_id", "source": "source", "text": "content_hash"}
LOCATOR_KIND = {"owner_id": "owner", "record_id": "record_id", "content_hash": "content_hash"}


def _ids_of(table: pa.Table, column: str = "record_id") -> set[str]:
    return set(table.column(column).to_pylist())


def _pairs(table: pa.Table, key: str, value: str) -> list[tuple[str, str]]:
    return list(zip(table.column(key).to_pylist(), table.column(value).to_pylist(), strict=True))


class StagedKeys:
    """The key columns of the staging partitions a resolution touches, read once each while they fit the cache's
    budget (``cache_bytes``: beyond it a partition is read again when asked again), and looked up partition by
    partition: a thousand scattered requests touch every partition, whose key columns took 1 GB at 10M records,
    so memory follows the budget and the rows found, not the store."""

    def __init__(self, store: Store, locator: Locator | None = None, cache_bytes: int = KEY_CACHE_BYTES) -> None:
        self.store, self.locator, self.cache_bytes = store, locator or Locator(store), cache_bytes
        self._tables: dict[PartitionRef, pa.Table] = {}
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self._texts: dict[str, str] = {}  # staged texts read so far (a resolution's, then its apply's, by id)

    def _per_partition(self, parts: Iterable[PartitionRef], found: Callable[[PartitionRef], pa.Table]
                       ) -> dict[PartitionRef, pa.Table]:
        """``found`` of each of ``parts``, a few at once: a thousand scattered requests read every partition's
        staging, and Arrow decodes without the GIL (one at a time, the key columns took 4.7 s at 10M records)."""
        parts = sorted(parts)
        with ThreadPoolExecutor(READ_THREADS) as pool:
            return dict(zip(parts, pool.map(found, parts), strict=True))

    def _keys(self, part: PartitionRef) -> pa.Table:
        """A partition's key columns: cached, or read (and cached while the budget allows)."""
        with self._lock:
            if part in self._tables:
                return self._tables[part]
        table = self.store.read_parquet(layout.staging(*part), KEY_COLUMNS)
        with self._lock:
            if part not in self._tables and self._cached_bytes + table.nbytes <= self.cache_bytes:
                self._tables[part] = table
                self._cached_bytes += table.nbytes
        return table

    def _found(self, parts: Iterable[PartitionRef], column: str, values: set[str]) -> dict[PartitionRef, pa.Table]:
        """Per partition, its staged rows whose ``column`` is one of ``values``."""
        wanted = pa.array(sorted(values), pa.string())
        return self._per_partition(parts, lambda part: rows_with(self._keys(part), column, wanted))

    def _located(self, column: str, values: set[str]) -> set[PartitionRef]:
        if column == "source":
            return {p for p in self.locator.partitions if p[0] in values}
        return self.locator.find(LOCATOR_KIND[column], values)

    def rows(self, column: str, values: set[str]) -> pa.Table:
        """Staged rows whose ``column`` is one of ``values``."""
        found = list(self._found(self._located(column, values), column, values).values()) if values else []
        return pa.concat_tables(found) if found else pa.table({c: pa.array([], pa.string()) for c in KEY_COLUMNS})

    def partitions_of(self, column: str, values: set[str]) -> set[PartitionRef]:
        """The partitions whose staging holds a row with one of ``values`` (confirmed, not just located)."""
        return {p for p, rows in self._found(self._located(column, values), column, values).items() if rows.num_rows}

    def hashes_of(self, ids: set[str]) -> dict[str, str]:
        """Each staged id's content hash."""
        return dict(_pairs(self.rows("record_id", ids), "record_id", "content_hash"))

    def texts(self, ids: set[str]) -> dict[str, str]:
        """The staged texts of ``ids`` (only their partitions' text columns are read, and only for ids whose text
        this resolution has not read yet: its apply asks again for every text its rounds read, 1.7 s of a
        thousand requests' 21 s soft step at 10M records)."""
        unread = ids - self._texts.keys()
        parts = self.locator.find("record_id", unread) if unread else set()
        wanted = pa.array(sorted(unread), pa.string())
        found = self._per_partition(parts, lambda part: self._texts_in(part, wanted))
        for staged in found.values():
            self._texts.update(_pairs(staged, "record_id", "text"))
        return {r: self._texts[r] for r in ids if r in self._texts}

    def _texts_in(self, part: PartitionRef, wanted: pa.Array) -> pa.Table:
        """A partition's staged ``record_id`` and ``text`` of ``wanted`` ids, from only the row groups holding them
        (the cached key columns say which rows: a thousand scattered requests hold ~10 of a partition's 100k, in
        ~9 of its 49 groups)."""
        with self.store.random_access(layout.staging(*part)) as fh:
            return rows_with_ids(fh, wanted, ["text"], self._keys(part).column("record_id"))


def _cluster_mates(store: Store, ids: set[str]) -> dict[str, set[str]]:
    """Each id's near-duplicate cluster members (ids in no cluster are absent)."""
    if not ids:
        return {}
    columns = ["record_id", "cluster_id"]
    mine = read_clusters(store, columns, record_id=ids)
    members = read_clusters(store, columns, cluster_id=_ids_of(mine, "cluster_id")) if mine.num_rows else mine
    by_cluster: dict[str, set[str]] = {}
    for rid, cid in _pairs(members, "record_id", "cluster_id"):
        by_cluster.setdefault(cid, set()).add(rid)
    return {rid: by_cluster[cid] for rid, cid in _pairs(mine, "record_id", "cluster_id")}


@dataclass
class _Growing:
    """One request's resolution so far: ids and hashes, and which of them have had their neighbours looked up."""

    ids: set[str]
    hashes: set[str]
    selected: int
    expanded_ids: set[str] = field(default_factory=set)
    expanded_hashes: set[str] = field(default_factory=set)


Neighbours = dict[str, set[str]]


def _neighbours(store: Store, keys: StagedKeys, ids: set[str], hashes: set[str]) -> tuple[Neighbours, Neighbours]:
    """One round for every request at once: each id's copies (its cluster and its near copies) and each hash's
    records."""
    by_hash: dict[str, set[str]] = {}
    for rid, h in _pairs(keys.rows("content_hash", hashes), "record_id", "content_hash"):
        by_hash.setdefault(h, set()).add(rid)
    by_id = _cluster_mates(store, ids)
    texts = keys.texts(ids)
    order = sorted(texts)
    for rid, found in zip(order, find_copies(store, [texts[r] for r in order], own=order), strict=True):
        by_id.setdefault(rid, set()).update(found)
    return by_id, by_hash


def _grow(store: Store, keys: StagedKeys, states: list[_Growing]) -> None:
    """Grow every request's ids and hashes to its fixed point: copies of copies are copies."""
    while True:
        ids = set().union(*(s.ids - s.expanded_ids for s in states))
        hashes = set().union(*(s.hashes - s.expanded_hashes for s in states))
        if not ids and not hashes:
            return
        by_id, by_hash = _neighbours(store, keys, ids, hashes)
        hash_of = keys.hashes_of(set().union(*by_id.values(), *by_hash.values()))
        for state in states:
            fresh_ids, fresh_hashes = state.ids - state.expanded_ids, state.hashes - state.expanded_hashes
            grown = set().union(*(by_id.get(r, ()) for r in fresh_ids), *(by_hash.get(h, ()) for h in fresh_hashes))
            state.expanded_ids |= fresh_ids
            state.expanded_hashes |= fresh_hashes
            state.ids |= grown
            state.hashes |= {hash_of[r] for r in grown if hash_of.get(r)}


def _selected(keys: StagedKeys, docs: list[dict[str, Any]]) -> list[tuple[set[str], set[str]]]:
    """Each request's selected staged ids and hashes: one look-up per selector column for all of them (a thousand
    record-id requests cost one locator pass, not a thousand), then the rows found sorted by value once and each
    request's taken by position (a filter of the rows for each request took ~1 s of a thousand's soft step)."""
    columns = [SELECTOR_COLUMN[doc["selector"]["kind"]] for doc in docs]
    wanted: dict[str, set[str]] = {}
    for column, doc in zip(columns, docs, strict=True):
        wanted.setdefault(column, set()).update(doc["selector"]["values"])
    found = {column: _by_value(keys.rows(column, values), column, values) for column, values in wanted.items()}
    out = []
    for column, doc in zip(columns, docs, strict=True):
        ids, hashes, rows_of = found[column]
        rows = [i for value in doc["selector"]["values"] for i in rows_of.get(value, ())]
        out.append(({ids[i] for i in rows}, {hashes[i] for i in rows}))
    return out


def _by_value(rows: pa.Table, column: str, values: set[str]) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """``rows``' ids and hashes, and the positions of the rows holding each of ``values`` in ``column``."""
    ordered = sorted(values)
    codes = pc.fill_null(pc.index_in(rows.column(column), value_set=pa.array(ordered, pa.string())), len(ordered))
    codes = codes.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(ordered) + 1)).tolist()
    rows_of = {value: order[a:b] for value, a, b in zip(ordered, bounds[:-1], bounds[1:], strict=True) if b > a}
    return rows.column("record_id").to_pylist(), rows.column("content_hash").to_pylist(), rows_of


def resolve_all(store: Store, docs: list[dict[str, Any]], keys: StagedKeys | None = None) -> list[dict[str, Any]]:
    """Resolve received requests together; each is recorded (status ``resolved``) with its ids and hashes."""
    keys = keys or StagedKeys(store)
    states = [_Growing(ids, hashes, len(ids)) for ids, hashes in _selected(keys, docs)]
    _grow(store, keys, states)

    def resolved(pair: tuple[dict[str, Any], _Growing]) -> dict[str, Any]:
        doc, state = pair
        ids = sorted(state.ids)
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        return set_status(store, doc, RESOLVED, resolved={
            "record_ids": ids, "content_hashes": sorted(state.hashes),
            "counts": {"selected": state.selected, "duplicates": len(ids) - state.selected}, "ids_digest": digest})

    return for_each(resolved, zip(docs, states, strict=True))


def resolve(store: Store, doc: dict[str, Any]) -> dict[str, Any]:
    """Resolve one request."""
    return resolve_all(store, [doc])[0]

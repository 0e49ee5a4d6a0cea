"""Resolution: a request's selector to the record ids it deletes, following the text into every copy.

A model learns the text, not the row, so the selected records bring along every record with the same content
hash (exact copies, under any owner or source), every member of their near-duplicate clusters, and every
lightly edited copy of their text that ``tasks.dedup.copies`` finds (character shingles: the word-shingle
clusters miss a one-word edit of a short text) — and those bring along theirs, to a fixed point. Staging is
read, not records, so rows that publishing dropped as duplicates are found too.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.dedup.copies import find_copies
from tasks.deletion.requests import RESOLVED, set_status
from tasks.storage import Store

SELECTOR_COLUMN = {"owner": "owner_id", "record_id": "record_id", "source": "source", "text": "content_hash"}


def _rows_with(table: pa.Table, column: str, values: set[str] | list[str]) -> pa.Table:
    """Rows whose ``column`` is one of ``values`` (nulls never match)."""
    hit = pc.is_in(table.column(column), value_set=pa.array(sorted(values), pa.string()))
    return table.filter(pc.fill_null(hit, False))


def _ids_of(table: pa.Table, column: str = "record_id") -> set[str]:
    return set(table.column(column).to_pylist())


def _staged_texts(store: Store, ids: set[str]) -> list[str]:
    """The texts of the staged rows with these ids (what the copy finder looks for)."""
    texts: list[str] = []
    for key in store.list(layout.staging_dir(), layout.PARQUET):
        staged = store.read_parquet(key, ["record_id", "text"])
        texts += _rows_with(staged, "record_id", ids).column("text").to_pylist()
    return texts


def _copies(store: Store, rows: pa.Table, clusters: pa.Table | None, ids: set[str],
            hashes: set[str]) -> tuple[set[str], set[str]]:
    """Grow ``ids`` and ``hashes`` to a fixed point: copies of copies are copies. Each id's text is looked for
    once, when it joins."""
    searched: set[str] = set()
    while True:
        grown = ids | _ids_of(_rows_with(rows, "content_hash", hashes))
        if clusters is not None and clusters.num_rows:
            cluster_ids = _ids_of(_rows_with(clusters, "record_id", grown), "cluster_id")
            grown |= _ids_of(_rows_with(clusters, "cluster_id", cluster_ids))
        fresh = grown - searched
        if fresh:
            grown |= find_copies(store, _staged_texts(store, fresh))
            searched |= fresh
        hashes |= _ids_of(_rows_with(rows, "record_id", grown), "content_hash")
        if grown == ids and not fresh:
            return ids, hashes
        ids = grown


def resolve(store: Store, doc: dict[str, Any]) -> dict[str, Any]:
    """Find the affected record ids and content hashes and record them (status ``resolved``)."""
    kind, values = doc["selector"]["kind"], doc["selector"]["values"]
    rows = store.read_parquets(layout.staging_dir(), ["record_id", "owner_id", "source", "content_hash"])
    if rows.num_rows == 0:
        return set_status(store, doc, RESOLVED, resolved={"record_ids": [], "content_hashes": [],
                                                          "counts": {"selected": 0, "duplicates": 0}})
    selected = _rows_with(rows, SELECTOR_COLUMN[kind], values)
    clusters = store.read_parquet(layout.CLUSTERS) if store.exists(layout.CLUSTERS) else None
    ids, hashes = _copies(store, rows, clusters, _ids_of(selected), _ids_of(selected, "content_hash"))
    n_selected = len(_ids_of(selected))
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    return set_status(store, doc, RESOLVED, resolved={
        "record_ids": sorted(ids), "content_hashes": sorted(hashes),
        "counts": {"selected": n_selected, "duplicates": len(ids) - n_selected}, "ids_digest": digest})

"""Tombstones: the record ids and content hashes a deletion removed, one Parquet file per request.

They take effect on every read at once (``tasks.passed``, ingest's publish step), before and after the physical
purge, so a deleted record is never scored, selected or trained on again. Every read needs all of them: they are
read through a compacted copy (``tasks.deletion.compacted``).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tasks import layout
from tasks.deletion.compacted import read_compacted
from tasks.storage import Store

TOMBSTONE_SCHEMA = pa.schema([("record_id", pa.string()), ("content_hash", pa.string()), ("request_id", pa.string())])


def read_tombstones(store: Store, columns: list[str] | None = None) -> pa.Table:
    """Every tombstone written so far (all requests)."""
    table = read_compacted(store, layout.TOMBSTONES, layout.TOMBSTONES_COMPACTED, TOMBSTONE_SCHEMA)
    return table.select(columns) if columns else table


def tombstoned_ids(store: Store) -> frozenset[str]:
    """Every record id deleted so far; excluded from every later ingest, validation, selection and training."""
    return frozenset(read_tombstones(store, ["record_id"]).column("record_id").to_pylist())


def write_tombstones(store: Store, doc: dict[str, Any], hash_of: dict[str, str]) -> str:
    """The resolved request's tombstones, once (one file per request, so concurrent requests never contend);
    ``hash_of`` gives each staged record's content hash (the resolution read them)."""
    key = layout.tombstones(doc["request_id"])
    if store.exists(key):
        return key
    ids = doc["resolved"]["record_ids"]
    table = pa.table({"record_id": ids, "content_hash": [hash_of.get(r) for r in ids],
                      "request_id": [doc["request_id"]] * len(ids)}, schema=TOMBSTONE_SCHEMA)
    store.write_parquet(key, table, TOMBSTONE_SCHEMA)
    return key

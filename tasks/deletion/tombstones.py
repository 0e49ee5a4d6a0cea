"""Tombstones: the record ids and content hashes a deletion removed, one Parquet file per request.

They take effect on every read at once (``tasks.passed``, ingest's publish step), before and after the physical
purge, so a deleted record is never scored, selected or trained on again.

Every read needs all of them, and a store with thousands of requests would open thousands of files per read (at
10M records, ~3 s a deletion's soft step after 1,000 earlier requests). Readers therefore keep a compacted copy
(``layout.TOMBSTONES_COMPACTED``) that names the requests it holds: a read takes it and the few files written
since, and rewrites it once more than ``COMPACT_AFTER`` are new. The per-request files stay the record of truth:
a compacted copy naming a request whose file is gone is not used.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import layout
from tasks.storage import Store

TOMBSTONE_SCHEMA = pa.schema([("record_id", pa.string()), ("content_hash", pa.string()), ("request_id", pa.string())])
COMPACT_AFTER = 32  # per-request files read beside the compacted copy before it is rewritten
_HOLDS = b"requests"  # the compacted copy's metadata: the request ids it holds


def _compacted(store: Store, listed: set[str]) -> tuple[pa.Table | None, set[str]]:
    """The compacted copy and the requests it holds, when it holds only requests still listed."""
    if not store.exists(layout.TOMBSTONES_COMPACTED):
        return None, set()
    with store.open(layout.TOMBSTONES_COMPACTED) as fh:
        parquet = pq.ParquetFile(fh)
        holds = set(json.loads((parquet.schema_arrow.metadata or {}).get(_HOLDS, b"[]")))
        if not holds <= listed:
            return None, set()
        return parquet.read(use_threads=False), holds


def read_tombstones(store: Store, columns: list[str] | None = None) -> pa.Table:
    """Every tombstone written so far (all requests): the compacted copy and the files written since."""
    keys = {layout.tombstones_request(k): k for k in store.list(layout.TOMBSTONES, layout.PARQUET)}
    table, holds = _compacted(store, set(keys))
    fresh = [store.read_parquet(keys[r]).select(TOMBSTONE_SCHEMA.names).cast(TOMBSTONE_SCHEMA)
             for r in sorted(set(keys) - holds)]
    tables = ([table.select(TOMBSTONE_SCHEMA.names).cast(TOMBSTONE_SCHEMA)] if table is not None else []) + fresh
    table = pa.concat_tables(tables) if tables else TOMBSTONE_SCHEMA.empty_table()
    if len(fresh) > COMPACT_AFTER:
        meta = {_HOLDS: json.dumps(sorted(keys)).encode()}
        store.write_parquet(layout.TOMBSTONES_COMPACTED, table.replace_schema_metadata(meta))
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

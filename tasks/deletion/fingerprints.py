"""What a deletion remembers of the texts it removed: salted fingerprints, so it can find them again, never text.

Written when a request is applied (before the purge removes the texts) to ``ledger/fingerprints/<request-id>``:
one row per deleted text with the salted hash of its match form and of its character shingles
(``tasks.fingerprints``). Later ingests block near-copies of them, and ``custody verify-deletion`` scans every
byte the platform wrote for them.
"""

from __future__ import annotations

import pyarrow as pa

from tasks import layout
from tasks.deletion.compacted import read_compacted
from tasks.fingerprints import new_salt, shingle_hashes, text_hash
from tasks.storage import Store

FINGERPRINT_SCHEMA = pa.schema([("request_id", pa.string()), ("text_hash", pa.uint64()),
                                ("shingles", pa.list_(pa.uint64()))])


def store_salt(store: Store) -> bytes:
    """The store's fingerprint salt, created on first use (create-only, so concurrent first users agree)."""
    if not store.exists(layout.FINGERPRINT_SALT):
        store.write_new(layout.FINGERPRINT_SALT, new_salt())
    return store.read_bytes(layout.FINGERPRINT_SALT)


def fingerprint_table(request_id: str, texts: list[str], salt: bytes) -> pa.Table:
    """One row per distinct text: its salted whole-text hash and sorted shingle hashes."""
    rows = {text_hash(t, salt): shingle_hashes(t, salt) for t in texts if t}
    return pa.table({"request_id": [request_id] * len(rows), "text_hash": list(rows),
                     "shingles": [h.tolist() for h in rows.values()]}, schema=FINGERPRINT_SCHEMA)


def write_fingerprints(store: Store, request_id: str, texts: list[str], salt: bytes | None = None) -> int:
    """Remember ``texts`` for ``request_id`` (merged with what an earlier, interrupted apply wrote); returns rows.
    ``salt``: the store's (``store_salt``), when the caller writes many requests' and has read it once."""
    salt = salt or store_salt(store)
    key = layout.fingerprints(request_id)
    table = fingerprint_table(request_id, texts, salt)
    if store.exists(key):
        old = store.read_parquet(key)
        known = set(old.column("text_hash").to_pylist())
        fresh = [i for i, h in enumerate(table.column("text_hash").to_pylist()) if h not in known]
        table = pa.concat_tables([old, table.take(pa.array(fresh, pa.int64()))])
    store.write_parquet(key, table, FINGERPRINT_SCHEMA)
    return table.num_rows


def read_fingerprints(store: Store, request_id: str | None = None) -> pa.Table:
    """One request's fingerprints, or every request's."""
    if request_id:
        key = layout.fingerprints(request_id)
        return store.read_parquet(key) if store.exists(key) else FINGERPRINT_SCHEMA.empty_table()
    return read_compacted(store, layout.FINGERPRINTS, layout.FINGERPRINTS_COMPACTED, FINGERPRINT_SCHEMA)

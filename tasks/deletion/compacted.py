"""Per-request ledger files read through one compacted copy: tombstones and fingerprints.

Each request's tombstones and fingerprints are a Parquet file of their own (concurrent requests never contend, and
each file is the record of truth), and every read needs all of them: at 10M records after 1,000 requests, opening
1,000 tombstone files cost ~3 s of a deletion's soft step, and 1,000 fingerprint files ~1.5 s of every partition's
publish in the next ingest. Readers therefore keep a compacted copy that names each request it holds with the size
its file had: a read takes the copy's rows of the requests whose file is still there at that size, and reads the
others (new ones, or fingerprints an ingest has added to since) file by file, rewriting the copy once more than
``COMPACT_AFTER`` were read so. A request whose file is gone is not read from the copy either.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout
from tasks.storage import Store

COMPACT_AFTER = 32  # per-request files read beside the compacted copy before it is rewritten
_HOLDS = b"requests"  # the compacted copy's metadata: {request id: size of its file when compacted}


def _compacted(store: Store, key: str) -> tuple[pa.Table | None, dict[str, int]]:
    """The compacted copy at ``key`` and the file sizes of the requests it holds (None, {} when there is none or
    it is of an older form)."""
    if not store.exists(key):
        return None, {}
    with store.open(key) as fh:
        parquet = pq.ParquetFile(fh)
        holds = json.loads((parquet.schema_arrow.metadata or {}).get(_HOLDS, b"{}"))
        if not isinstance(holds, dict):
            return None, {}
        return parquet.read(use_threads=False), holds


def read_compacted(store: Store, prefix: str, compacted_key: str, schema: pa.Schema) -> pa.Table:
    """Every row of the per-request files under ``prefix`` (in ``schema``, with a ``request_id`` column), read
    through the compacted copy at ``compacted_key``."""
    files = {layout.ledger_request(k): (k, size) for k, size in store.sizes(prefix, layout.PARQUET).items()}
    table, holds = _compacted(store, compacted_key)
    usable = sorted(r for r, size in holds.items() if r in files and files[r][1] == size)
    parts = []
    if table is not None and usable:
        held = table.filter(pc.is_in(table.column("request_id"), value_set=pa.array(usable, pa.string())))
        parts.append(held.select(schema.names).cast(schema))
    fresh = [store.read_parquet(files[r][0]).select(schema.names).cast(schema)
             for r in sorted(set(files) - set(usable))]
    out = pa.concat_tables(parts + fresh) if parts or fresh else schema.empty_table()
    if len(fresh) > COMPACT_AFTER:
        meta = {_HOLDS: json.dumps({r: size for r, (_, size) in sorted(files.items())}).encode()}
        store.write_parquet(compacted_key, out.replace_schema_metadata(meta))
    return out

"""The forget vault: the one short-lived copy of deleted texts, kept only for unlearning and its evaluation.

Approximate unlearning and its certificate need the texts a model learned. Before a request's records are
tombstoned and purged, the texts of those that some dataset version holds are copied to the request's vault
(read through ``tasks.passed``, so they are the texts training saw: redacted, passed the policy). Certification
destroys it. A request whose records no dataset holds gets no vault.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.deletion.resolve import StagedKeys
from tasks.lineage import manifest_keys
from tasks.passed import NO_POLICY, current_policy, lookup
from tasks.storage import Store


def _held(store: Store, ids: pa.Array) -> pa.Array:
    """Those of ``ids`` that some dataset version's manifest holds."""
    keys = manifest_keys(store)
    if not keys:
        return pa.array([], pa.string())
    held = pa.concat_tables([store.read_parquet(k, ["record_id"]) for k in keys]).column("record_id")
    return pc.filter(ids, pc.is_in(ids, value_set=held))


def write_vault(store: Store, doc: dict[str, Any], keys: StagedKeys) -> int:
    """Keep the texts of the request's records that a dataset version holds; returns how many. Only the
    partitions holding them are read (``keys`` locates them).

    Must run before the request's tombstones are written: the read path leaves tombstoned records out.
    """
    key = layout.vault(doc["request_id"])
    if store.exists(key):
        return store.read_parquet(key).num_rows
    held = _held(store, pa.array(doc["resolved"]["record_ids"], pa.string()))
    if len(held) == 0 or current_policy(store) == NO_POLICY:  # nothing validated: no dataset was built from them
        return 0
    parts = [layout.Partition(source, layout.RECORD_PART_PREFIX + fid)
             for source, fid in sorted(keys.partitions_of("record_id", set(held.to_pylist())))]
    texts = lookup(store, held.to_pylist(), ["text"], parts)
    store.write_parquet(key, texts.select(["record_id", "text"]))
    return texts.num_rows


def destroy_vault(store: Store, request_id: str) -> bool:
    """Remove the request's forget texts (certification calls this); True when there was a vault."""
    key = layout.vault(request_id)
    if not store.exists(key):
        return False
    store.delete(key)
    return True

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
from tasks.errors import Fatal
from tasks.lineage import manifest_keys
from tasks.passed import read_all
from tasks.storage import Store


def _held(store: Store, ids: pa.Array) -> pa.Array:
    """Those of ``ids`` that some dataset version's manifest holds."""
    keys = manifest_keys(store)
    if not keys:
        return pa.array([], pa.string())
    held = pa.concat_tables([store.read_parquet(k, ["record_id"]) for k in keys]).column("record_id")
    return pc.filter(ids, pc.is_in(ids, value_set=held))


def write_vault(store: Store, doc: dict[str, Any]) -> int:
    """Keep the texts of the request's records that a dataset version holds; returns how many.

    Must run before the request's tombstones are written: the read path leaves tombstoned records out.
    """
    key = layout.vault(doc["request_id"])
    if store.exists(key):
        return store.read_parquet(key).num_rows
    held = _held(store, pa.array(doc["resolved"]["record_ids"], pa.string()))
    if len(held) == 0:
        return 0
    try:
        texts = read_all(store, ["record_id", "text"])
    except Fatal:  # nothing validated: no dataset was built from these records
        return 0
    texts = texts.filter(pc.is_in(texts.column("record_id"), value_set=held))
    store.write_parquet(key, texts)
    return texts.num_rows


def destroy_vault(store: Store, request_id: str) -> bool:
    """Remove the request's forget texts (certification calls this); True when there was a vault."""
    key = layout.vault(request_id)
    if not store.exists(key):
        return False
    store.delete(key)
    return True

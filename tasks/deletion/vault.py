"""The forget vault: the one short-lived copy of deleted texts, kept only for unlearning and its evaluation.

Approximate unlearning and its certificate need the texts a model learned. Before a request's records are
tombstoned and purged, the texts of those that some dataset version holds are copied to the request's vault
(read through ``tasks.passed``, so they are the texts training saw: redacted, passed the policy). Certification
destroys it. A request whose records no dataset holds gets no vault.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tasks import layout
from tasks.deletion.resolve import StagedKeys
from tasks.lineage import manifest_keys
from tasks.passed import NO_POLICY, current_policy, lookup
from tasks.storage import Store
from tasks.tables import one_of, rows_with


def _held(store: Store, ids: pa.Array) -> set[str]:
    """Which of ``ids`` some dataset version's manifest holds (each manifest's ids looked up in ``ids``: a hash set
    of a batch's thousand ids, not of the manifests' millions)."""
    held: set[str] = set()
    for key in manifest_keys(store) if len(ids) else []:
        column = store.read_parquet(key, ["record_id"]).column("record_id")
        held.update(column.filter(one_of(column, ids)).to_pylist())
    return held


def write_vaults(store: Store, docs: list[dict[str, Any]], keys: StagedKeys) -> dict[str, int]:
    """Keep, per request, the texts of its records that a dataset version holds; returns how many per request.
    The manifests are read once, and only the partitions holding those records (``keys`` locates them).

    Must run before the requests' tombstones are written: the read path leaves tombstoned records out.
    """
    counts = {d["request_id"]: store.read_parquet(layout.vault(d["request_id"])).num_rows
              for d in docs if store.exists(layout.vault(d["request_id"]))}
    todo = [d for d in docs if d["request_id"] not in counts]
    ids = pa.array(sorted(set().union(*(d["resolved"]["record_ids"] for d in todo))), pa.string())
    held = _held(store, ids) if todo else set()
    if not held or current_policy(store) == NO_POLICY:  # nothing validated: no dataset was built from them
        return {**counts, **{d["request_id"]: 0 for d in todo}}
    parts = [layout.Partition(source, layout.RECORD_PART_PREFIX + fid)
             for source, fid in sorted(keys.partitions_of("record_id", held))]
    texts = lookup(store, sorted(held), ["text"], parts).select(["record_id", "text"])
    for doc in todo:
        wanted = pa.array(doc["resolved"]["record_ids"], pa.string())
        mine = rows_with(texts, "record_id", wanted)
        if mine.num_rows:
            store.write_parquet(layout.vault(doc["request_id"]), mine)
        counts[doc["request_id"]] = mine.num_rows
    return counts


def destroy_vault(store: Store, request_id: str) -> bool:
    """Remove the request's forget texts (certification calls this); True when there was a vault."""
    key = layout.vault(request_id)
    if not store.exists(key):
        return False
    store.delete(key)
    return True

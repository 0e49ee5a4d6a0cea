"""Applying deletions: every open request resolved, vaulted, tombstoned, fingerprinted and purged, exactly once.

Each step is idempotent, so a crash mid-apply is finished by re-running: resolution is kept in the request,
the vault and the tombstones are written once per request, fingerprints merge with what an interrupted apply
wrote, and a purge skips files that no longer hold a deleted row. The vault comes before the tombstones because
the read path it copies from leaves tombstoned records out; the fingerprints come before the purge because they
are made from the texts it removes: the resolved records' (from staging), and the raw and quarantined rows the
request withdraws that were never ingested.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.deletion.blocklist import request_blocks
from tasks.deletion.fingerprints import write_fingerprints
from tasks.deletion.locks import store_lock
from tasks.deletion.purge import find_rows, purge
from tasks.deletion.requests import APPLIED, OPEN, RECEIVED, list_requests, set_status
from tasks.deletion.resolve import resolve
from tasks.deletion.tombstones import write_tombstones
from tasks.deletion.vault import write_vault
from tasks.schema import record_schema
from tasks.storage import Store


def _staged_texts(store: Store, ids: list[str]) -> list[str]:
    """Texts of the resolved records still in staging (all of them, unless an earlier apply purged some)."""
    staged = store.read_parquets(layout.staging_dir(), ["record_id", "text"], schema=record_schema())
    return staged.filter(pc.is_in(staged.column("record_id"), value_set=pa.array(ids, pa.string()))).column(
        "text").to_pylist()


def apply_request(store: Store, doc: dict[str, Any]) -> dict[str, Any]:
    """Take one open request to ``applied`` (the caller holds the apply lock)."""
    if doc["status"] == RECEIVED:
        doc = resolve(store, doc)
    vaulted = write_vault(store, doc)
    write_tombstones(store, doc)
    blocks = request_blocks(doc)
    found = find_rows(store, blocks)
    remembered = write_fingerprints(store, doc["request_id"],
                                    _staged_texts(store, doc["resolved"]["record_ids"]) + found.texts)
    report = purge(store, blocks, found)
    return set_status(store, doc, APPLIED, applied={**report, "vaulted_for_unlearning": vaulted,
                                                    "fingerprints": remembered})


def process_pending(store: Store, request_id: str | None = None) -> list[dict[str, Any]]:
    """Resolve and apply every open request (or one), exactly once each, under the store lock."""
    with store_lock(store):
        return [apply_request(store, doc) for doc in list_requests(store)
                if doc["status"] in OPEN and (not request_id or doc["request_id"] == request_id)]

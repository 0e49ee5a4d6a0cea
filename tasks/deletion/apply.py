"""Applying deletions: every open request resolved, vaulted, tombstoned and purged, exactly once, under a lock.

Each step is idempotent, so a crash mid-apply is finished by re-running: resolution is kept in the request,
the vault and the tombstones are written once per request, and a purge skips files that no longer hold a
deleted row. The vault comes before the tombstones because the read path it copies from leaves tombstoned
records out.
"""

from __future__ import annotations

from typing import Any

from tasks.deletion.locks import store_lock
from tasks.deletion.purge import purge
from tasks.deletion.requests import APPLIED, OPEN, RECEIVED, list_requests, set_status
from tasks.deletion.resolve import resolve
from tasks.deletion.tombstones import write_tombstones
from tasks.deletion.vault import write_vault
from tasks.storage import Store


def apply_request(store: Store, doc: dict[str, Any]) -> dict[str, Any]:
    """Take one open request to ``applied`` (the caller holds the apply lock)."""
    if doc["status"] == RECEIVED:
        doc = resolve(store, doc)
    vaulted = write_vault(store, doc)
    write_tombstones(store, doc)
    report = purge(store, set(doc["resolved"]["record_ids"]), set(doc["resolved"]["content_hashes"]))
    return set_status(store, doc, APPLIED, applied={**report, "vaulted_for_unlearning": vaulted})


def process_pending(store: Store, request_id: str | None = None) -> list[dict[str, Any]]:
    """Resolve and apply every open request (or one), exactly once each, under the store lock."""
    with store_lock(store):
        return [apply_request(store, doc) for doc in list_requests(store)
                if doc["status"] in OPEN and (not request_id or doc["request_id"] == request_id)]

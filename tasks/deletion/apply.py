"""Applying deletions, soft then hard: requests resolved, vaulted, tombstoned and fingerprinted at once, their bytes
purged in batches.

The soft step (``apply_pending``) makes a request's records unreadable everywhere at once: tombstones take effect
on every read. It resolves every open request together (``tasks.deletion.resolve``), and it reads only the
partitions the locator names, so its cost follows the request, not the store. It records, per request, the
partitions its purge must rewrite and the deadline by which it must (``CUSTODY_PURGE_DEADLINE_HOURS``). The hard
step (``tasks.deletion.batch``) rewrites those partitions for every request applied since the last pass.

Each step is idempotent, so a crash mid-apply is finished by re-running: resolution is kept in the request,
the vault and the tombstones are written once per request, and fingerprints merge with what an interrupted apply
wrote. The vault comes before the tombstones because the read path it copies from leaves tombstoned records out;
the fingerprints come before the purge because they are made from the texts it removes: the resolved records'
(from staging), and the raw and quarantined rows the request withdraws that were never ingested.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tasks import layout
from tasks.config import get_settings
from tasks.deletion.batch import purge_pass
from tasks.deletion.blocklist import request_blocks
from tasks.deletion.fingerprints import write_fingerprints
from tasks.deletion.locks import store_lock
from tasks.deletion.purge import find_in
from tasks.deletion.requests import APPLIED, OPEN, PENDING, RECEIVED, list_requests, load, set_status
from tasks.deletion.resolve import StagedKeys, resolve_all
from tasks.deletion.tombstones import write_tombstones
from tasks.deletion.vault import write_vault
from tasks.sources import file_id, list_raw_files, list_sources
from tasks.storage import Store

Target = tuple[str, str, str]  # (source, file id, raw key): one partition a purge rewrites


def _targets(store: Store, keys: StagedKeys, doc: dict[str, Any]) -> list[Target]:
    """The partitions holding the request's rows by the locator (staged or quarantined: the raw file holds both),
    and every raw file no ingest has parsed yet (the locator cannot know its rows)."""
    kind, values = doc["selector"]["kind"], set(doc["selector"]["values"])
    resolved = doc["resolved"]
    parts = keys.locator.find("record_id", set(resolved["record_ids"]) | (values if kind == "record_id" else set()))
    parts |= keys.locator.find("content_hash", set(resolved["content_hashes"]) | (values if kind == "text" else set()))
    parts |= keys.locator.find("owner", values) if kind == "owner" else set()
    parts |= {p for p in keys.locator.partitions if kind == "source" and p[0] in values}
    staged = set(keys.locator.partitions)
    out = []
    for source in list_sources(store):
        for raw in list_raw_files(store, source):
            fid = file_id(source, raw)
            if (source, fid) in parts or (source, fid) not in staged:
                out.append((source, fid, raw))
    return sorted(out)


def _quarantine_files(store: Store, targets: list[Target]) -> list[str]:
    stems = {(source, stem) for source, fid, _ in targets for stem in layout.partition_stems(fid)}
    return [k for k in store.list(layout.quarantine_dir(), layout.PARQUET) if layout.partition_named(k) in stems]


def apply_request(store: Store, doc: dict[str, Any], keys: StagedKeys) -> dict[str, Any]:
    """Take one resolved request to ``applied`` (the caller holds the apply lock): unreadable at once, its purge
    pending."""
    vaulted = write_vault(store, doc, keys)
    write_tombstones(store, doc, keys.hashes_of(set(doc["resolved"]["record_ids"])))
    targets = _targets(store, keys, doc)
    raw: dict[str, list[str]] = {}
    for source, _, key in targets:
        raw.setdefault(source, []).append(key)
    found = find_in(store, request_blocks(doc), raw, _quarantine_files(store, targets))
    texts = keys.texts(set(doc["resolved"]["record_ids"]))
    remembered = write_fingerprints(store, doc["request_id"], [texts[r] for r in sorted(texts)] + found.texts)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=get_settings().purge_deadline_hours)
    rows_found = sum(map(len, found.raw.values())) + sum(map(len, found.quarantine.values()))
    return set_status(store, doc, APPLIED, applied={
        "vaulted_for_unlearning": vaulted, "fingerprints": remembered, "withdrawn_rows_found": rows_found,
        "purge": {"state": PENDING, "due_by": due.isoformat(), "targets": [list(t) for t in targets]}})


def apply_pending(store: Store, request_id: str | None = None) -> list[dict[str, Any]]:
    """The soft step for every open request (or one), exactly once each, under the store lock."""
    with store_lock(store):
        docs = [d for d in list_requests(store)
                if d["status"] in OPEN and (not request_id or d["request_id"] == request_id)]
        keys = StagedKeys(store)
        received = resolve_all(store, [d for d in docs if d["status"] == RECEIVED], keys)
        resolved = {d["request_id"]: d for d in received}
        return [apply_request(store, resolved.get(d["request_id"], d), keys) for d in docs]


def process_pending(store: Store, request_id: str | None = None) -> list[dict[str, Any]]:
    """Apply every open request (or one), then purge every applied request's bytes in one pass."""
    applied = apply_pending(store, request_id)
    purge_pass(store)
    return [load(store, d["request_id"]) for d in applied]

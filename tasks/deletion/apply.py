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
import time
from typing import Any

from tasks import layout
from tasks.config import get_settings
from tasks.deletion.batch import Target, partitions_by_stem, purge_pass
from tasks.deletion.blocklist import BlockList, requests_blocks
from tasks.deletion.fingerprints import store_salt, write_fingerprints
from tasks.deletion.locks import store_lock
from tasks.deletion.purge import Found, find_in
from tasks.deletion.requests import APPLIED, OPEN, PENDING, RECEIVED, for_each, list_requests, load, set_status
from tasks.deletion.resolve import StagedKeys, resolve_all
from tasks.deletion.tombstones import write_tombstones
from tasks.deletion.vault import write_vaults
from tasks.sources import file_id, list_raw_files, list_sources
from tasks.storage import Store


def _located(keys: StagedKeys, docs: list[dict[str, Any]]) -> list[set[tuple[str, str]]]:
    """Per request, the partitions holding its rows by the locator (staged or quarantined: the raw file holds
    both); one look-up per kind for all requests."""
    wanted: dict[str, list[set[str]]] = {"record_id": [], "content_hash": [], "owner": []}
    for doc in docs:
        kind, values, resolved = doc["selector"]["kind"], set(doc["selector"]["values"]), doc["resolved"]
        wanted["record_id"].append(set(resolved["record_ids"]) | (values if kind == "record_id" else set()))
        wanted["content_hash"].append(set(resolved["content_hashes"]) | (values if kind == "text" else set()))
        wanted["owner"].append(values if kind == "owner" else set())
    where = {kind: keys.locator.where(kind, set().union(*sets)) for kind, sets in wanted.items()}
    out = []
    for i, doc in enumerate(docs):
        parts = {p for kind, sets in wanted.items() for v in sets[i] for p in where[kind][v]}
        if doc["selector"]["kind"] == "source":
            parts |= {p for p in keys.locator.partitions if p[0] in doc["selector"]["values"]}
        out.append(parts)
    return out


def _targets(store: Store, keys: StagedKeys, docs: list[dict[str, Any]]) -> list[list[Target]]:
    """Per request, its located partitions and every raw file no ingest has parsed yet (the locator cannot know
    its rows)."""
    staged = set(keys.locator.partitions)
    raw = [(source, file_id(source, key), key)
           for source in list_sources(store) for key in list_raw_files(store, source)]
    return [sorted(t for t in raw if t[:2] in parts or t[:2] not in staged) for parts in _located(keys, docs)]


def _unstaged_rows(store: Store, blocks: BlockList, targets: set[Target], staged: set[tuple[str, str]]) -> Found:
    """The withdrawn rows staging does not hold, for their texts' fingerprints: in the targets' quarantine, and in
    the raw files no ingest has parsed or whose quarantine holds a withdrawn row (read for the whole text, which a
    quarantine preview cuts). A staged partition's raw file is otherwise left to the purge: its rows' texts are
    staging's."""
    stems = partitions_by_stem(targets)
    quarantine = [k for k in store.list(layout.quarantine_dir(), layout.PARQUET) if layout.partition_named(k) in stems]
    hits = {stems[layout.partition_named(k)] for k in find_in(store, blocks, {}, quarantine).quarantine}
    raw: dict[str, list[str]] = {}
    for source, fid, key in sorted(targets):
        if (source, fid) not in staged or (source, fid) in hits:
            raw.setdefault(source, []).append(key)
    return find_in(store, blocks, raw, quarantine)


def apply_batch(store: Store, docs: list[dict[str, Any]], keys: StagedKeys,
                started: float | None = None) -> list[dict[str, Any]]:
    """Take resolved requests to ``applied`` together (the caller holds the apply lock): unreadable at once, their
    purge pending. Every file is read once for the batch: the vaults' partitions, the staged texts, the targets'
    quarantine and the few raw files ``_unstaged_rows`` needs."""
    if not docs:
        return []
    started = time.perf_counter() if started is None else started
    vaulted = write_vaults(store, docs, keys)
    ids = set().union(*(d["resolved"]["record_ids"] for d in docs))
    hash_of = keys.hashes_of(ids)
    for_each(lambda doc: write_tombstones(store, doc, hash_of), docs)
    targets = _targets(store, keys, docs)
    found = _unstaged_rows(store, requests_blocks(docs), set().union(*map(set, targets)),
                           set(keys.locator.partitions))
    texts = keys.texts(ids)
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=get_settings().purge_deadline_hours)).isoformat()
    salt = store_salt(store)  # made and read once, before the requests' fingerprints are written side by side

    def applied(pair: tuple[dict[str, Any], list[Target]]) -> dict[str, Any]:
        doc, mine = pair
        rid = doc["request_id"]
        staged = [texts[r] for r in doc["resolved"]["record_ids"] if r in texts]
        remembered = write_fingerprints(store, rid, staged + found.texts.get(rid, []), salt)
        return set_status(store, doc, APPLIED, applied={
            "vaulted_for_unlearning": vaulted[rid], "fingerprints": remembered,
            "withdrawn_texts_found": len(found.texts.get(rid, [])),
            "soft_seconds": round(time.perf_counter() - started, 3),
            "purge": {"state": PENDING, "due_by": due, "targets": [list(t) for t in mine]}})

    return for_each(applied, zip(docs, targets, strict=True))


def apply_pending(store: Store, request_id: str | None = None) -> list[dict[str, Any]]:
    """The soft step for every open request (or one), exactly once each, under the store lock."""
    started = time.perf_counter()  # the soft step's cost, lock wait included, is recorded in each request
    with store_lock(store):
        asked = [load(store, request_id)] if request_id else list_requests(store)  # one: not the whole ledger
        docs = [d for d in asked if d["status"] in OPEN]
        keys = StagedKeys(store)
        resolved = {d["request_id"]: d for d in resolve_all(store, [d for d in docs if d["status"] == RECEIVED], keys)}
        return apply_batch(store, [resolved.get(d["request_id"], d) for d in docs], keys, started)


def process_pending(store: Store, request_id: str | None = None) -> list[dict[str, Any]]:
    """Apply every open request (or one), then purge every applied request's bytes in one pass."""
    applied = apply_pending(store, request_id)
    purge_pass(store)
    return [load(store, d["request_id"]) for d in applied]

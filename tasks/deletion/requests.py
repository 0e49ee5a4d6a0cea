"""Deletion requests: acknowledged durably before anything else happens, then moved through their statuses.

``submit`` writes the request document atomically (create-only, fsynced): once its id is printed, the request
survives any crash. Each later step appends its status to the document's history. A request keeps ids, hashes
and counts, never text. Statuses run received → resolved → applied → unlearned → certified.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from tasks import layout
from tasks.errors import CustodyError, Fatal, NotFound
from tasks.ids import content_hash, normalize_text, record_id
from tasks.names import check_request_id
from tasks.storage import Store

RECEIVED, RESOLVED, APPLIED, UNLEARNED, CERTIFIED = "received", "resolved", "applied", "unlearned", "certified"
OPEN = (RECEIVED, RESOLVED)  # not yet applied: the apply step's work
PENDING, DONE = "pending", "done"  # an applied request's purge: bytes still there, or gone
SelectorKind = Literal["owner", "record_id", "source", "text"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def text_hashes(texts: list[str]) -> list[str]:
    """Content hashes of texts to delete: the ledger stores these, never the texts."""
    return sorted({content_hash(normalize_text(t)) for t in texts if normalize_text(t)})


def record_id_of(source: str, source_record_id: str) -> str:
    """The record id Custody gives a source's record (for ``--record-id`` look-ups by source id)."""
    return record_id(source, source_record_id)


def submit(store: Store, kind: SelectorKind, values: list[str], reason: str | None = None) -> dict[str, Any]:
    """Acknowledge a deletion request: durably written before this returns. For ``text``, pass hashes.

    Raises:
        Fatal: no values to delete by.
    """
    if not values:
        raise Fatal(f"a deletion by {kind} needs at least one value")
    request_id = f"del-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    doc = {"request_id": request_id, "created_at": _now(), "selector": {"kind": kind, "values": sorted(set(values))},
           "reason": reason, "status": RECEIVED, "history": [{"status": RECEIVED, "at": _now()}]}
    if not store.write_new(layout.request(request_id), json.dumps(doc, indent=2).encode()):
        raise CustodyError(f"request id collision: {request_id}")
    return doc


def load(store: Store, request_id: str) -> dict[str, Any]:
    """One request's document.

    Raises:
        InvalidName: ``request_id`` is not of the form :func:`submit` gives (checked before any I/O).
        NotFound: no such request (the message names the ten most recent ones).
    """
    key = layout.request(check_request_id(request_id))
    if not store.exists(key):
        known = [layout.request_id_of(k) for k in store.list(layout.REQUESTS, ".json")][-10:]
        raise NotFound(f"no deletion request {request_id!r}; recent: {known}")
    return store.read_json(key)


def list_requests(store: Store) -> list[dict[str, Any]]:
    """All requests, oldest first."""
    docs = [store.read_json(k) for k in store.list(layout.REQUESTS, ".json")]
    return sorted(docs, key=lambda d: d["created_at"])


LEDGER_THREADS = 8
_Item, _Result = TypeVar("_Item"), TypeVar("_Result")


def for_each(write: Callable[[_Item], _Result], items: Iterable[_Item]) -> list[_Result]:
    """``write`` of each of ``items`` (a batch's requests), eight at a time, in order. A request's files (status,
    tombstones, fingerprints) are small: their cost is the fsync each gets, which threads overlap (the file system
    commits them together): a thousand requests' 4,000 files took 3.2 s of a 9.9 s soft step one by one."""
    with ThreadPoolExecutor(LEDGER_THREADS) as pool:
        return list(pool.map(write, items))


def set_status(store: Store, doc: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    """Append ``status`` to the request's history and persist it atomically."""
    doc = {**doc, **fields, "status": status, "history": [*doc["history"], {"status": status, "at": _now()}]}
    store.write_json(layout.request(doc["request_id"]), doc)
    return doc


def save(store: Store, doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Persist fields of a request without a new status (a purge pass records when the bytes went)."""
    doc = {**doc, **fields}
    store.write_json(layout.request(doc["request_id"]), doc)
    return doc


def unfinished(store: Store, min_age_seconds: float = 0.0) -> list[dict[str, Any]]:
    """Requests filed at least ``min_age_seconds`` ago and not yet certified, oldest first (the sweep's work)."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=min_age_seconds)
    return [d for d in list_requests(store)
            if d["status"] != CERTIFIED and dt.datetime.fromisoformat(d["created_at"]) <= cutoff]


def purge_pending(doc: dict[str, Any]) -> bool:
    """The request is applied and its bytes are not purged yet."""
    return doc.get("applied", {}).get("purge", {}).get("state") == PENDING


def purge_overdue(doc: dict[str, Any], now: dt.datetime | None = None) -> bool:
    """The request's purge is pending past its deadline."""
    return purge_pending(doc) and dt.datetime.fromisoformat(doc["applied"]["purge"]["due_by"]) < (
        now or dt.datetime.now(dt.UTC))


def pending(store: Store) -> list[dict[str, Any]]:
    """Applied requests whose bytes are not purged yet, oldest first (the next purge pass's work)."""
    return [d for d in list_requests(store) if purge_pending(d)]


def overdue(store: Store, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Pending purges past their deadline."""
    return [d for d in list_requests(store) if purge_overdue(d, now)]

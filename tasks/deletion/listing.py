"""Deletion requests as people read them (``custody deletions``): one row per request, or one request in full.

Read-only: nothing here resolves, applies or unlearns, so listing never needs an engine.
"""

from __future__ import annotations

from typing import Any

from tasks.deletion.requests import list_requests, load
from tasks.storage import Store


def request_rows(store: Store) -> list[dict[str, Any]]:
    """One summary row per request, oldest first."""
    return [{"request": d["request_id"], "created": d["created_at"][:19], "by": d["selector"]["kind"],
             "status": d["status"], "records": len(d.get("resolved", {}).get("record_ids", [])),
             "bytes": d.get("applied", {}).get("purge", {}).get("state", "-")}
            for d in list_requests(store)]


def request_detail(store: Store, request_id: str) -> dict[str, Any]:
    """The request's document with its certificate (when there is one) inlined; the content hashes it resolved
    are left out, being long and of no use to a reader.

    Raises:
        Fatal: no such request.
    """
    doc = load(store, request_id)
    doc["resolved"] = {k: v for k, v in doc.get("resolved", {}).items() if k != "content_hashes"}
    if doc.get("certificate"):
        doc["certificate"]["document"] = store.read_json(store.key_of(doc["certificate"]["json"]))
    return doc

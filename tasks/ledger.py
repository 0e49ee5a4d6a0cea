"""The deletion ledger: requests that are never lost, resolved through content, applied physically.

``submit`` writes ``ledger/deletions/<request-id>.json`` atomically (create-only, fsynced) before anything else
happens: once the id is printed, the request survives any crash. ``process_pending`` then, under a store lock,
resolves each open request to record ids — the selected records plus exact and near duplicates of their text
found through content hashes and near-dup clusters — writes tombstones, and purges those rows from every
Parquet partition and raw file that held them (``tasks.purge``). Each step is idempotent, so a crash
mid-apply is finished by re-running. The ledger keeps ids, hashes and counts, never text.

One exception, and it is short-lived: approximate unlearning and its evaluation need the texts a model
learned. Before the purge, the texts of deleted records that some dataset version holds are copied to
``ledger/vault/<request-id>.parquet``; certification (tasks.unlearn) destroys it. Statuses run
received → resolved → applied → unlearned → certified.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import CustodyError, Fatal
from tasks.ids import content_hash, normalize_text, record_id
from tasks.storage import Store

REQUESTS = "ledger/deletions"
TOMBSTONES = "ledger/tombstones"
VAULT = "ledger/vault"
LOCK = "ledger/apply.lock"
STALE_LOCK_SECONDS = 900
TOMBSTONE_SCHEMA = pa.schema([("record_id", pa.string()), ("content_hash", pa.string()), ("request_id", pa.string())])
SelectorKind = Literal["owner", "record_id", "source", "text"]
OPEN = ("received", "resolved")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def text_hashes(texts: list[str]) -> list[str]:
    """Content hashes of texts to delete: the ledger stores these, never the texts."""
    return sorted({content_hash(normalize_text(t)) for t in texts if normalize_text(t)})


def record_id_of(source: str, source_record_id: str) -> str:
    """The record id Custody gives a source's record (for ``--record-id`` look-ups by source id)."""
    return record_id(source, source_record_id)


def submit(store: Store, kind: SelectorKind, values: list[str], reason: str | None = None) -> dict[str, Any]:
    """Acknowledge a deletion request: durably written before this returns. For ``text``, pass hashes."""
    if not values:
        raise Fatal(f"a deletion by {kind} needs at least one value")
    request_id = f"del-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    doc = {"request_id": request_id, "created_at": _now(), "selector": {"kind": kind, "values": sorted(set(values))},
           "reason": reason, "status": "received", "history": [{"status": "received", "at": _now()}]}
    if not store.write_new(f"{REQUESTS}/{request_id}.json", json.dumps(doc, indent=2).encode()):
        raise CustodyError(f"request id collision: {request_id}")
    return doc


def load(store: Store, request_id: str) -> dict[str, Any]:
    key = f"{REQUESTS}/{request_id}.json"
    if not store.exists(key):
        known = [k.rsplit("/", 1)[1].removesuffix(".json") for k in store.list(REQUESTS, ".json")][-10:]
        raise Fatal(f"no deletion request {request_id!r}; recent: {known}")
    return store.read_json(key)


def list_requests(store: Store) -> list[dict[str, Any]]:
    """All requests, oldest first."""
    docs = [store.read_json(k) for k in store.list(REQUESTS, ".json")]
    return sorted(docs, key=lambda d: d["created_at"])


def set_status(store: Store, doc: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    """Append ``status`` to the request's history and persist it atomically."""
    doc = {**doc, **fields, "status": status, "history": [*doc["history"], {"status": status, "at": _now()}]}
    store.write_json(f"{REQUESTS}/{doc['request_id']}.json", doc)
    return doc


def tombstoned_ids(store: Store) -> frozenset[str]:
    """Every record id deleted so far; excluded from every later ingest, validation, selection and training."""
    table = store.read_parquets(TOMBSTONES, ["record_id"], schema=TOMBSTONE_SCHEMA)
    return frozenset(table.column("record_id").to_pylist())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def store_lock(store: Store, key: str = LOCK, timeout: float = 600.0) -> Iterator[None]:
    """Mutual exclusion between appliers; a lock left by a dead process (same host) or a stale one is broken.

    The holder refreshes the lock while it works (unlearning a large model can take longer than
    ``STALE_LOCK_SECONDS``), so only a holder that stopped refreshing it counts as stale.
    """
    me = {"pid": os.getpid(), "host": socket.gethostname(), "at": time.time(), "token": uuid.uuid4().hex}
    deadline = time.monotonic() + timeout
    while not store.write_new(key, json.dumps(me).encode()):
        try:
            holder = store.read_json(key)
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        dead = holder.get("host") == me["host"] and not _pid_alive(int(holder.get("pid", 0)))
        if dead or time.time() - float(holder.get("at", 0)) > STALE_LOCK_SECONDS:
            store.delete(key)
            continue
        if time.monotonic() > deadline:
            raise CustodyError(f"{store.uri(key)} is held by pid {holder.get('pid')} on {holder.get('host')}")
        time.sleep(0.2)
    done = threading.Event()
    heartbeat = threading.Thread(target=_refresh, args=(store, key, me, done), daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        done.set()
        heartbeat.join()
        if store.exists(key) and store.read_json(key).get("token") == me["token"]:
            store.delete(key)


def _refresh(store: Store, key: str, me: dict[str, Any], done: threading.Event) -> None:
    """Keep a held lock fresh until ``done``; never re-create one that another process took over."""
    while not done.wait(STALE_LOCK_SECONDS / 6):
        try:
            if store.read_json(key).get("token") != me["token"]:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            return
        store.write_json(key, {**me, "at": time.time()})


def unfinished(store: Store, min_age_seconds: float = 0.0) -> list[dict[str, Any]]:
    """Requests filed at least ``min_age_seconds`` ago and not yet certified, oldest first (the sweep's work)."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=min_age_seconds)
    return [d for d in list_requests(store)
            if d["status"] != "certified" and dt.datetime.fromisoformat(d["created_at"]) <= cutoff]


def resolve(store: Store, doc: dict[str, Any]) -> dict[str, Any]:
    """Find the affected record ids: selected rows, then every copy of their text (hash) and their clusters."""
    from tasks.ingest import CLUSTERS_KEY

    kind, values = doc["selector"]["kind"], doc["selector"]["values"]
    rows = store.read_parquets("staging", ["record_id", "owner_id", "source", "content_hash"])
    if rows.num_rows == 0:
        return set_status(store, doc, "resolved", resolved={"record_ids": [], "content_hashes": [],
                                                             "counts": {"selected": 0, "duplicates": 0}})
    column = {"owner": "owner_id", "record_id": "record_id", "source": "source", "text": "content_hash"}[kind]
    selected = rows.filter(pc.fill_null(pc.is_in(rows.column(column), value_set=pa.array(values, pa.string())), False))
    ids = set(selected.column("record_id").to_pylist())
    hashes = set(selected.column("content_hash").to_pylist())
    clusters = store.read_parquet(CLUSTERS_KEY) if store.exists(CLUSTERS_KEY) else None
    while True:  # to a fixed point: copies of copies are copies
        same_text = rows.filter(pc.is_in(rows.column("content_hash"), value_set=pa.array(sorted(hashes), pa.string())))
        grown = ids | set(same_text.column("record_id").to_pylist())
        if clusters is not None and clusters.num_rows:
            hit = pc.is_in(clusters.column("record_id"), value_set=pa.array(sorted(grown), pa.string()))
            cluster_ids = clusters.filter(hit).column("cluster_id")
            members = clusters.filter(pc.is_in(clusters.column("cluster_id"), value_set=cluster_ids))
            grown |= set(members.column("record_id").to_pylist())
        affected = rows.filter(pc.is_in(rows.column("record_id"), value_set=pa.array(sorted(grown), pa.string())))
        hashes |= set(affected.column("content_hash").to_pylist())
        if grown == ids:
            break
        ids = grown
    n_selected = len(set(selected.column("record_id").to_pylist()))
    counts = {"selected": n_selected, "duplicates": len(ids) - n_selected}
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    return set_status(store, doc, "resolved", resolved={"record_ids": sorted(ids), "content_hashes": sorted(hashes),
                                                         "counts": counts, "ids_digest": digest})


def write_tombstones(store: Store, doc: dict[str, Any]) -> str:
    """The request's tombstones (one file per request, so concurrent requests never contend)."""
    res = doc["resolved"]
    rows = store.read_parquets("staging", ["record_id", "content_hash"])
    wanted = rows.filter(pc.is_in(rows.column("record_id"), value_set=pa.array(res["record_ids"], pa.string())))
    hash_of = dict(zip(wanted.column("record_id").to_pylist(), wanted.column("content_hash").to_pylist(), strict=True))
    key = f"{TOMBSTONES}/{doc['request_id']}.parquet"
    table = pa.table({"record_id": res["record_ids"], "content_hash": [hash_of.get(r) for r in res["record_ids"]],
                      "request_id": [doc["request_id"]] * len(res["record_ids"])}, schema=TOMBSTONE_SCHEMA)
    if not store.exists(key):
        store.write_parquet(key, table, TOMBSTONE_SCHEMA)
    return key


def vault_key(request_id: str) -> str:
    return f"{VAULT}/{request_id}.parquet"


def write_vault(store: Store, doc: dict[str, Any]) -> int:
    """Keep the texts of deleted records that a dataset version holds, for unlearning; returns how many."""
    from tasks.lineage import manifest_keys
    from tasks.provenance import validated_records

    key = vault_key(doc["request_id"])
    ids = pa.array(doc["resolved"]["record_ids"], pa.string())
    if store.exists(key) or len(ids) == 0 or not manifest_keys(store):
        return store.read_parquet(key).num_rows if store.exists(key) else 0
    held = pa.concat_tables([store.read_parquet(k, ["record_id"]) for k in manifest_keys(store)])
    held_ids = pc.filter(ids, pc.is_in(ids, value_set=held.column("record_id")))
    if len(held_ids) == 0:
        return 0
    try:
        texts = validated_records(store, ["record_id", "text"])
    except Fatal:
        return 0
    texts = texts.filter(pc.is_in(texts.column("record_id"), value_set=held_ids))
    store.write_parquet(key, texts)
    return texts.num_rows


def destroy_vault(store: Store, request_id: str) -> bool:
    """Remove the request's forget texts (certification calls this); True when there was a vault."""
    key = vault_key(request_id)
    if not store.exists(key):
        return False
    store.delete(key)
    return True


def process_pending(store: Store, request_id: str | None = None) -> list[dict[str, Any]]:
    """Resolve and apply every open request (or one), exactly once each, under the store lock."""
    from tasks.purge import purge

    done = []
    with store_lock(store):
        for doc in list_requests(store):
            if doc["status"] not in OPEN or (request_id and doc["request_id"] != request_id):
                continue
            if doc["status"] == "received":
                doc = resolve(store, doc)
            write_tombstones(store, doc)
            vaulted = write_vault(store, doc)
            report = purge(store, set(doc["resolved"]["record_ids"]), set(doc["resolved"]["content_hashes"]))
            done.append(set_status(store, doc, "applied", applied={**report, "vaulted_for_unlearning": vaulted}))
    return done

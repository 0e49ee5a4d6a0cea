"""Ingestion: raw files to the record store, with exact and near-duplicate clustering.

Three idempotent steps, each safe to kill and re-run (keys: ``tasks.layout``):

1. ``parse_file`` (one task per raw file, in parallel): rows to normalized records with provenance
   (``tasks.rows``), into staging; MinHash signatures into dedup; bad rows into quarantine with a reason.
2. ``cluster_store`` (once, over all signatures): exact duplicates, id conflicts and near-dup clusters — the
   membership deletions follow later.
3. ``publish_partition`` (one task per file, in parallel): staging rows minus duplicates and tombstoned ids,
   with their cluster, into the file's records partition; skipped when the inputs have not changed.

Each step writes its outputs atomically and a completion marker last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.datasheet import Datasheet
from tasks.dedup import MinhashConfig, cluster_records, signatures
from tasks.dedup.clusters import CLUSTER_SCHEMA
from tasks.deletion.tombstones import tombstoned_ids
from tasks.errors import ShardError
from tasks.readers import RAW_PREVIEW, RawRow, read_rows
from tasks.rows import Rejected, to_record
from tasks.schema import quarantine_schema, record_schema
from tasks.sources import file_id
from tasks.storage import Store

log = logging.getLogger(__name__)
CONFLICT_SCHEMA = pa.schema([("source_uri", pa.string()), ("record_id", pa.string()), ("reason", pa.string())])


@dataclass(frozen=True)
class IngestConfig:
    """Ingestion parameters; ``str()`` is a compact tag recorded beside outputs."""

    max_record_bytes: int = 1_000_000
    minhash: MinhashConfig = field(default_factory=MinhashConfig)

    def __str__(self) -> str:
        return f"ingest_max{self.max_record_bytes}_{self.minhash}"


def signature_schema(num_perm: int) -> pa.Schema:
    return pa.schema([("record_id", pa.string()), ("content_hash", pa.string()), ("source_uri", pa.string()),
                      ("delivered_at", pa.timestamp("us", tz="UTC")), ("minhash", pa.list_(pa.uint32(), num_perm))])


def _quarantine_row(source: str, uri: str, reason: str, detail: str | None, raw: str | None,
                    rid: str | None = None) -> dict[str, Any]:
    return {"source": source, "source_uri": uri, "record_id": rid, "stage": "ingest", "reasons": [reason],
            "detail": detail, "raw": raw[:RAW_PREVIEW] if raw else None,
            "quarantined_at": dt.datetime.now(dt.UTC)}


def parse_file(store: Store, source: str, key: str, sheet: Datasheet, sheet_hash: str,
               cfg: IngestConfig) -> dict[str, Any]:
    """Step 1 for one raw file: staging records, signatures, quarantine rows, then the done marker.

    Skipped (``skipped: True``) when the marker records the same file size and datasheet.
    """
    fid = file_id(source, key)
    fingerprint = {"size": store.size(key), "datasheet": sheet_hash, "config": str(cfg)}
    marker = layout.ingest_marker("parse", source, fid)
    if store.exists(marker) and store.read_json(marker).get("fingerprint") == fingerprint:
        return {**store.read_json(marker)["stats"], "skipped": True}
    uri, now, delivered = store.uri(key), dt.datetime.now(dt.UTC), store.modified(key)
    records: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    rows_in = 0
    try:
        for raw in read_rows(store.read_bytes(key), key, cfg.max_record_bytes, sheet.format):
            rows_in += 1
            _accept(raw, sheet, cfg, uri, records, bad)
    except ShardError as exc:  # the whole file is unreadable: quarantine it, keep the batch going
        reason, _, detail = str(exc).partition(": ")
        bad.append(_quarantine_row(source, uri, reason, detail, None))
        records = []
    for rec in records:
        rec["ingested_at"], rec["delivered_at"], rec["datasheet_hash"] = now, delivered, sheet_hash
    table = pa.Table.from_pylist(records, schema=record_schema())
    sigs = signatures(table.column("text").to_pylist(), cfg.minhash)
    store.write_parquet(layout.staging(source, fid), table, record_schema())
    sig_table = table.select(["record_id", "content_hash", "source_uri", "delivered_at"]).append_column(
        "minhash", pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel(), pa.uint32()), cfg.minhash.num_perm))
    store.write_parquet(layout.signatures(source, fid), sig_table,
                        signature_schema(cfg.minhash.num_perm))
    _write_quarantine(store, layout.quarantine(source, "ingest", fid), bad)
    reasons = Counter(r["reasons"][0] for r in bad)
    stats = {"source": source, "file": key, "rows_in": rows_in, "parsed": len(records),
             "quarantined": len(bad), **{f"quarantined_{k}": v for k, v in sorted(reasons.items())}}
    store.write_json(marker, {"fingerprint": fingerprint, "stats": stats})
    return {**stats, "skipped": False}


def _accept(raw: RawRow, sheet: Datasheet, cfg: IngestConfig, uri: str,
            records: list[dict[str, Any]], bad: list[dict[str, Any]]) -> None:
    where = uri + raw.location
    if raw.value is None:
        bad.append(_quarantine_row(sheet.name, where, raw.reason or "unreadable_row", raw.detail, raw.raw))
        return
    try:
        rec = to_record(raw.value, sheet, cfg.max_record_bytes)
    except Rejected as rej:
        preview = json.dumps(raw.value, default=str)[:RAW_PREVIEW]
        bad.append(_quarantine_row(sheet.name, where, rej.reason, rej.detail, preview))
        return
    rec["source_uri"] = where
    records.append(rec)


def _write_quarantine(store: Store, key: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        store.write_parquet(key, pa.Table.from_pylist(rows, schema=quarantine_schema()), quarantine_schema())
    else:
        store.delete(key)


def cluster_store(store: Store, cfg: IngestConfig) -> dict[str, Any]:
    """Step 2: id conflicts, exact duplicates and near-dup clusters over every signature in the store."""
    sigs = store.read_parquets(layout.SIGNATURES, schema=signature_schema(cfg.minhash.num_perm))
    # earliest delivered copy first: a property of raw/, so the same raw files give the same clusters whatever
    # the order (or the number of runs) in which they were parsed
    sigs = sigs.sort_by([("delivered_at", "ascending"), ("source_uri", "ascending")])
    ids = sigs.column("record_id").to_pylist()
    hashes = sigs.column("content_hash").to_pylist()
    first: dict[str, int] = {}
    conflicts: list[dict[str, str]] = []
    keep = np.ones(len(ids), dtype=bool)
    for i, rid in enumerate(ids):
        j = first.setdefault(rid, i)
        if j != i:  # the same record id again: a re-delivery if the text matches, a conflict if not
            keep[i] = False
            reason = "repeated_record" if hashes[j] == hashes[i] else "duplicate_id"
            conflicts.append({"source_uri": sigs.column("source_uri")[i].as_py(), "record_id": rid, "reason": reason})
    kept = sigs.filter(pa.array(keep))
    matrix = kept.column("minhash").combine_chunks().flatten().to_numpy().reshape(-1, cfg.minhash.num_perm) \
        if kept.num_rows else np.empty((0, cfg.minhash.num_perm), dtype=np.uint32)
    clusters, stats = cluster_records(kept.column("record_id").to_pylist(), kept.column("content_hash").to_pylist(),
                                      np.arange(kept.num_rows), matrix, cfg.minhash)
    store.write_parquet(layout.CLUSTERS, clusters, CLUSTER_SCHEMA)
    store.write_parquet(layout.ID_CONFLICTS, pa.Table.from_pylist(conflicts, schema=CONFLICT_SCHEMA), CONFLICT_SCHEMA)
    summary = {**stats.to_dict(), "id_conflicts": len(conflicts), "config": str(cfg.minhash)}
    store.write_json(layout.DEDUP_STATS, summary)
    return summary


def publish_partition(store: Store, source: str, fid: str) -> dict[str, Any]:
    """Step 3 for one staging partition: drop duplicates and tombstoned ids, attach clusters, write records."""
    tombstoned = tombstoned_ids(store)
    staging = store.read_parquet(layout.staging(source, fid))
    clusters = store.read_parquet(layout.CLUSTERS)
    conflicts = store.read_parquet(layout.ID_CONFLICTS)
    ids = staging.column("record_id")
    mine = clusters.filter(pc.is_in(clusters.column("record_id"), value_set=ids))
    my_conflicts = conflicts.filter(pc.is_in(conflicts.column("source_uri"), value_set=staging.column("source_uri")))
    digest = hashlib.sha256(json.dumps([store.read_json(layout.ingest_marker("parse", source, fid))["fingerprint"],
                                        mine.to_pylist(), my_conflicts.to_pylist(), sorted(tombstoned & set(
                                            ids.to_pylist()))], default=str).encode()).hexdigest()
    marker = layout.ingest_marker("publish", source, fid)
    if store.exists(marker) and store.read_json(marker).get("digest") == digest:
        return {**store.read_json(marker)["stats"], "skipped": True}
    kind = dict(zip(mine.column("record_id").to_pylist(), mine.column("kind").to_pylist(), strict=True))
    cluster = dict(zip(mine.column("record_id").to_pylist(), mine.column("cluster_id").to_pylist(), strict=True))
    conflict = dict(zip(my_conflicts.column("source_uri").to_pylist(), my_conflicts.column("reason").to_pylist(),
                        strict=True))
    rows, dup_rows = [], []
    counts = Counter()
    for rec in staging.to_pylist():
        why = conflict.get(rec["source_uri"])
        if why == "duplicate_id":
            dup_rows.append(_quarantine_row(source, rec["source_uri"], "duplicate_id",
                                            "record id already used by an earlier row with different text",
                                            rec["text"], rec["record_id"]))
        elif why == "repeated_record" or kind.get(rec["record_id"]) == "exact":
            counts["exact_duplicates"] += 1
        elif rec["record_id"] in tombstoned:
            counts["tombstoned"] += 1
        else:
            rec["near_dup_cluster"] = cluster.get(rec["record_id"])
            rec["near_dup_kept"] = kind.get(rec["record_id"]) != "near"
            rows.append(rec)
    store.write_parquet(layout.records(source, fid),
                        pa.Table.from_pylist(rows, schema=record_schema()), record_schema())
    _write_quarantine(store, layout.quarantine(source, "dedup", fid), dup_rows)
    stats = {"source": source, "partition": fid, "records": len(rows), "duplicate_id": len(dup_rows),
             "exact_duplicates": counts["exact_duplicates"], "tombstoned": counts["tombstoned"],
             "near_dup_members": sum(1 for r in rows if r["near_dup_cluster"])}
    store.write_json(marker, {"digest": digest, "stats": stats})
    return {**stats, "skipped": False}


def staged_partitions(store: Store) -> list[tuple[str, str]]:
    """``(source, file id)`` of every staging partition."""
    return [layout.staged_partition(key) for key in store.list(layout.staging_dir(), layout.PARQUET)]


"""Ingestion: raw files to the record store, with exact and near-duplicate clustering.

Three idempotent steps, each safe to kill and re-run:

1. ``parse_file`` (one task per raw file, in parallel): rows to normalized records with provenance, into
   ``staging/``; MinHash signatures into ``dedup/signatures/``; bad rows into ``quarantine/`` with a reason.
2. ``cluster_store`` (once, over all signatures): exact duplicates, id conflicts and near-dup clusters into
   ``dedup/clusters.parquet`` — the membership deletions follow later.
3. ``publish_partition`` (one task per file, in parallel): staging rows minus duplicates, with their
   cluster, into ``records/source=<s>/part-<file>.parquet``; skipped when the inputs have not changed.

Each step writes its outputs atomically and a ``_done/`` marker last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.datasheet import DATASHEET_FILE, Datasheet
from tasks.dedup import MinhashConfig, cluster_records, signatures
from tasks.dedup.clusters import CLUSTER_SCHEMA
from tasks.errors import ShardError
from tasks.ids import content_hash, normalize_text, record_id
from tasks.readers import RAW_PREVIEW, RawRow, detect_format, read_rows
from tasks.schema import quarantine_schema, record_schema
from tasks.storage import Store

log = logging.getLogger(__name__)
CLUSTERS_KEY = "dedup/clusters.parquet"
CONFLICTS_KEY = "dedup/id_conflicts.parquet"
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


def list_sources(store: Store) -> list[str]:
    return store.list_dirs("raw")


def list_raw_files(store: Store, source: str) -> list[str]:
    """Keys of the data files of a source (the datasheet and unknown formats are not data)."""
    return [k for k in store.list(f"raw/{source}")
            if not k.endswith(DATASHEET_FILE) and detect_format(k) is not None]


def file_id(source: str, key: str) -> str:
    """A partition name for a raw file: its path inside the source, made safe, plus a short hash."""
    rel = key.removeprefix(f"raw/{source}/")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)[-60:]
    return f"{slug}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}"


def _scalar(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str | int | float | bool):
        return str(value)
    raise TypeError(f"expected a scalar, got {type(value).__name__}")


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ts = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    elif isinstance(value, str):
        ts = dt.datetime.fromisoformat(value.strip())
    else:
        raise TypeError(f"expected a timestamp, got {type(value).__name__}")
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def to_record(raw: dict[str, Any], sheet: Datasheet, cfg: IngestConfig) -> dict[str, Any]:
    """Map one raw row to record fields with the datasheet's provenance; raises ``_Rejected`` with a reason."""
    fm = sheet.fields
    text = raw.get(fm.text)
    if text is None or (isinstance(text, float) and np.isnan(text)):
        raise _Rejected("missing_text", f"field {fm.text!r} is missing or null")
    if not isinstance(text, str):
        raise _Rejected("wrong_type", f"field {fm.text!r} is {type(text).__name__}, expected a string")
    text = normalize_text(text)
    if not text:
        raise _Rejected("empty_text", f"field {fm.text!r} is empty after normalization")
    if len(text.encode()) > cfg.max_record_bytes:
        raise _Rejected("too_large", f"text of {len(text.encode())} bytes > {cfg.max_record_bytes}")
    try:
        values = {name: _scalar(raw.get(col)) if col else None
                  for name, col in (("label", fm.label), ("owner_id", fm.owner), ("id", fm.id),
                                    ("license", fm.license), ("consent", fm.consent))}
        collected = _timestamp(raw.get(fm.collected_at)) if fm.collected_at else None
        consent_at = _timestamp(raw.get(fm.consent_at)) if fm.consent_at else None
    except (TypeError, ValueError) as exc:
        raise _Rejected("wrong_type", str(exc)) from exc
    if fm.id and not values["id"]:
        raise _Rejected("missing_id", f"id field {fm.id!r} is missing or null")
    chash = content_hash(text)
    src_id = values["id"] or chash
    default_collected = sheet.collected_at
    if default_collected is not None and not isinstance(default_collected, dt.datetime):
        default_collected = dt.datetime.combine(default_collected, dt.time(), tzinfo=dt.UTC)
    mapped = {c for c in fm.model_dump().values() if c}
    extra = {k: v for k, v in raw.items() if k not in mapped}
    return {
        "record_id": record_id(sheet.name, src_id), "text": text, "label": values["label"],
        "source": sheet.name, "source_record_id": src_id, "owner_id": values["owner_id"],
        "license": values["license"] if fm.license else sheet.license,
        "consent": values["consent"].lower() if fm.consent and values["consent"] else (
            None if fm.consent else sheet.consent),
        "consent_basis": sheet.consent_basis, "consent_at": consent_at,
        "collected_at": collected or default_collected, "content_hash": chash, "n_chars": len(text),
        "near_dup_cluster": None, "near_dup_kept": True,
        "extra": json.dumps(extra, default=str, sort_keys=True) if extra else None,
    }


def _quarantine_row(source: str, uri: str, reason: str, detail: str | None, raw: str | None,
                    rid: str | None = None) -> dict[str, Any]:
    return {"source": source, "source_uri": uri, "record_id": rid, "stage": "ingest", "reasons": [reason],
            "detail": detail, "raw": raw[:RAW_PREVIEW] if raw else None,
            "quarantined_at": dt.datetime.now(dt.UTC)}


def _marker(kind: str, source: str, fid: str) -> str:
    return f"_done/{kind}/source={source}/{fid}.json"


def parse_file(store: Store, source: str, key: str, sheet: Datasheet, sheet_hash: str,
               cfg: IngestConfig) -> dict[str, Any]:
    """Step 1 for one raw file: staging records, signatures, quarantine rows, then the done marker.

    Skipped (``skipped: True``) when the marker records the same file size and datasheet.
    """
    fid = file_id(source, key)
    fingerprint = {"size": store.size(key), "datasheet": sheet_hash, "config": str(cfg)}
    marker = _marker("parse", source, fid)
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
    store.write_parquet(f"staging/source={source}/{fid}.parquet", table, record_schema())
    sig_table = table.select(["record_id", "content_hash", "source_uri", "delivered_at"]).append_column(
        "minhash", pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel(), pa.uint32()), cfg.minhash.num_perm))
    store.write_parquet(f"dedup/signatures/source={source}/{fid}.parquet", sig_table,
                        signature_schema(cfg.minhash.num_perm))
    _write_quarantine(store, f"quarantine/source={source}/ingest-{fid}.parquet", bad)
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
        rec = to_record(raw.value, sheet, cfg)
    except _Rejected as rej:
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
    sigs = store.read_parquets("dedup/signatures", schema=signature_schema(cfg.minhash.num_perm))
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
    store.write_parquet(CLUSTERS_KEY, clusters, CLUSTER_SCHEMA)
    store.write_parquet(CONFLICTS_KEY, pa.Table.from_pylist(conflicts, schema=CONFLICT_SCHEMA), CONFLICT_SCHEMA)
    summary = {**stats.to_dict(), "id_conflicts": len(conflicts), "config": str(cfg.minhash)}
    store.write_json("dedup/stats.json", summary)
    return summary


def publish_partition(store: Store, source: str, fid: str) -> dict[str, Any]:
    """Step 3 for one staging partition: drop duplicates and tombstoned ids, attach clusters, write records."""
    from tasks.ledger import tombstoned_ids  # the ledger builds on ingestion; import at use to avoid a cycle

    tombstoned = tombstoned_ids(store)
    staging = store.read_parquet(f"staging/source={source}/{fid}.parquet")
    clusters = store.read_parquet(CLUSTERS_KEY)
    conflicts = store.read_parquet(CONFLICTS_KEY)
    ids = staging.column("record_id")
    mine = clusters.filter(pc.is_in(clusters.column("record_id"), value_set=ids))
    my_conflicts = conflicts.filter(pc.is_in(conflicts.column("source_uri"), value_set=staging.column("source_uri")))
    digest = hashlib.sha256(json.dumps([store.read_json(_marker("parse", source, fid))["fingerprint"],
                                        mine.to_pylist(), my_conflicts.to_pylist(), sorted(tombstoned & set(
                                            ids.to_pylist()))], default=str).encode()).hexdigest()
    marker = _marker("publish", source, fid)
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
    store.write_parquet(f"records/source={source}/part-{fid}.parquet",
                        pa.Table.from_pylist(rows, schema=record_schema()), record_schema())
    _write_quarantine(store, f"quarantine/source={source}/dedup-{fid}.parquet", dup_rows)
    stats = {"source": source, "partition": fid, "records": len(rows), "duplicate_id": len(dup_rows),
             "exact_duplicates": counts["exact_duplicates"], "tombstoned": counts["tombstoned"],
             "near_dup_members": sum(1 for r in rows if r["near_dup_cluster"])}
    store.write_json(marker, {"digest": digest, "stats": stats})
    return {**stats, "skipped": False}


def staged_partitions(store: Store) -> list[tuple[str, str]]:
    """``(source, file id)`` of every staging partition."""
    out = []
    for key in store.list("staging", ".parquet"):
        folder, name = key.split("/")[-2:]
        out.append((folder.removeprefix("source="), name.removesuffix(".parquet")))
    return out


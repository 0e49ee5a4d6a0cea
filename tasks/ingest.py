"""Ingestion: raw files to the record store, with exact and near-duplicate clustering.

Three idempotent steps, each safe to kill and re-run (keys: ``tasks.layout``):

1. ``parse_file`` (one task per raw file, in parallel): rows to normalized records with provenance
   (``tasks.rows``), into staging; MinHash signatures into dedup; bad rows into quarantine with a reason.
   Rows a deletion withdrew (``tasks.deletion.blocklist``: an owner, a source, a record id, a text or a near
   copy of one) go nowhere: they are counted by reason, fingerprinted, and removed from the raw file itself
   (``tasks.withdrawal``).
2. ``cluster_store`` (once, over all signatures): exact duplicates, id conflicts and near-dup clusters — the
   membership deletions follow later.
3. ``publish_partition`` (tasks of a few partitions each, in parallel): staging rows minus duplicates and
   withdrawn rows (checked again: a deletion may have run since the parse), with their cluster, into the file's
   records partition; skipped when the inputs have not changed.

Each step writes its outputs atomically and a completion marker last. The flow makes tasks only of the work a run would
change (``files_to_parse``, ``unchanged_publishes``: listings and markers decide), so a one-file delivery into a large
store is one parse, the clustering pass and the publishes its clusters reach.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.datasheet import Datasheet
from tasks.dedup import MinhashConfig, clusters, signatures
from tasks.dedup.copy_index import write_copy_index
from tasks.dedup.sharded import cluster_partitions
from tasks.dedup.signature_files import write_signatures
from tasks.deletion.blocklist import BlockList, Withdrawal, ledger_version, standing_blocks
from tasks.deletion.locator import write_locator
from tasks.errors import ShardError
from tasks.readers import RAW_PREVIEW, RawRow, ReadLimits, read_rows
from tasks.rows import KEY_COLUMNS, Rejected, RowKeys, raw_row_keys, record_keys, to_record
from tasks.schema import quarantine_schema, record_schema
from tasks.sources import file_id, list_raw_files
from tasks.storage import Store
from tasks.withdrawal import clear_withdrawn, published_ids, withdraw_raw, withdrawn_stats

if TYPE_CHECKING:
    from tasks.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    """Ingestion parameters; ``str()`` is a compact tag recorded beside outputs."""

    max_record_bytes: int = 1_000_000
    minhash: MinhashConfig = field(default_factory=MinhashConfig)
    limits: ReadLimits = field(default_factory=ReadLimits)
    max_files_per_source: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IngestConfig:
        """The limits of ``settings`` (``CUSTODY_MAX_*``), and ``overrides``."""
        return cls(**{"max_record_bytes": settings.max_record_bytes, "limits": ReadLimits.from_settings(settings),
                      "max_files_per_source": settings.max_files_per_source, **overrides})

    def __str__(self) -> str:
        lim = self.limits
        return (f"ingest_max{self.max_record_bytes}_d{lim.max_depth}_f{lim.max_field_bytes}"
                f"_z{lim.max_decompressed_bytes}x{lim.max_compression_ratio}m{lim.ratio_min_bytes}_{self.minhash}"
                f"_{clusters.SIGNATURE_FORMAT}")


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
    done = parsed_already(store, source, key, sheet_hash, cfg)
    if done is not None:
        return done
    fid = file_id(source, key)
    fingerprint = _parse_fingerprint(store, key, sheet_hash, cfg)
    marker = layout.ingest_marker("parse", source, fid)
    uri, now, delivered = store.uri(key), dt.datetime.now(dt.UTC), store.modified(key)
    published = published_ids(store, source, fid)
    blocks = standing_blocks(store).sparing(published)
    try:
        rows = list(read_rows(store.read_bytes(key), key, cfg.max_record_bytes, sheet.format, cfg.limits))
        records, bad, withdrawn, keys = _parse_rows(rows, sheet, cfg, uri, blocks)
        if withdrawn:  # rare: parse again what stays, at the locations it keeps in the rewritten file
            rows, withdrawn = withdraw_raw(store, key, sheet, cfg.max_record_bytes, published, cfg.limits)
            records, bad, _, keys = _parse_rows(rows, sheet, cfg, uri, BlockList())
        lines_valid_for = store.size(key)  # a withdrawal rewrote the file: its lines are those of the new one
    except ShardError as exc:  # the whole file is unreadable: quarantine it, keep the batch going
        reason, _, detail = str(exc).partition(": ")
        rows, records, bad, withdrawn, keys, lines_valid_for = [], [], [], {}, {}, None
        bad.append(_quarantine_row(source, uri, reason, detail, None))
    fingerprint["size"] = store.size(key)  # a withdrawal rewrote the file: the next run must see it as parsed
    for rec in records:
        rec["ingested_at"], rec["delivered_at"], rec["datasheet_hash"] = now, delivered, sheet_hash
    table = pa.Table.from_pylist(records, schema=record_schema())
    sigs = signatures(table.column("text"), cfg.minhash)
    store.write_parquet(layout.staging(source, fid), table, record_schema())
    write_signatures(store, source, fid, table.column("record_id"), sigs, cfg.minhash)
    write_copy_index(store, source, fid, table)
    write_locator(store, source, fid, keys, lines_valid_for, sum(raw.value is None for raw in rows))
    _write_quarantine(store, layout.quarantine(source, "ingest", fid), bad)
    reasons = Counter(r["reasons"][0] for r in bad)
    stats = {"source": source, "file": key, "rows_in": len(rows) + len(withdrawn), "parsed": len(records),
             "quarantined": len(bad), **{f"quarantined_{k}": v for k, v in sorted(reasons.items())},
             **withdrawn_stats(withdrawn)}
    store.write_json(marker, {"fingerprint": fingerprint, "stats": stats, "copies_from": list(blocks.copies_from),
                              "parsed_at": now.isoformat()})
    return {**stats, "skipped": False}


def _parse_fingerprint(store: Store, key: str, sheet_hash: str, cfg: IngestConfig) -> dict[str, Any]:
    return {"size": store.size(key), "datasheet": sheet_hash, "config": str(cfg)}


def files_to_parse(store: Store, source: str, sheet_hash: str, cfg: IngestConfig
                   ) -> tuple[list[str], list[dict[str, Any]]]:
    """The source's raw files (``source_files``) a parse would change, and the stats of the others' parses: the
    flow makes tasks of the first only, so a delivery's run holds a task for each new file, not for the store."""
    todo, done = [], []
    for key in source_files(store, source, cfg):
        stats = parsed_already(store, source, key, sheet_hash, cfg)
        if stats is None:
            todo.append(key)
        else:
            done.append(stats)
    return todo, done


def parsed_already(store: Store, source: str, key: str, sheet_hash: str, cfg: IngestConfig) -> dict[str, Any] | None:
    """The stats of the parse that staged ``key`` (``skipped: True``) when its marker records the file's size, the
    datasheet and the config as they are now (parsing it again would change nothing); None otherwise."""
    marker = layout.ingest_marker("parse", source, file_id(source, key))
    done = store.read_json(marker) if store.exists(marker) else {}
    if done.get("fingerprint") != _parse_fingerprint(store, key, sheet_hash, cfg):
        return None
    return {**done["stats"], "skipped": True}


def source_files(store: Store, source: str, cfg: IngestConfig) -> list[str]:
    """The raw files of ``source`` to parse: the first ``max_files_per_source`` by key. Each file past the limit
    gets a file-level quarantine row (``too_many_files``), as an unreadable file does, until fewer are delivered."""
    keys = list_raw_files(store, source)
    for key in keys[cfg.max_files_per_source:]:
        detail = f"source has {len(keys)} files > max_files_per_source {cfg.max_files_per_source}"
        _write_quarantine(store, layout.quarantine(source, "ingest", file_id(source, key)),
                          [_quarantine_row(source, store.uri(key), "too_many_files", detail, None)])
    return keys[:cfg.max_files_per_source]


def _parse_rows(rows: list[RawRow], sheet: Datasheet, cfg: IngestConfig, uri: str,
                blocks: BlockList) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Withdrawal],
                                            dict[str, RowKeys]]:
    """Records, quarantine rows, the rows ``blocks`` withdraws by location (the caller drops those), and every
    row's keys (for the locator); each row's keys come from its record when it has one, so nothing is normalized
    or hashed twice."""
    records: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    keys = {raw.location: _accept(raw, sheet, cfg, uri, records, bad) for raw in rows}
    return records, bad, blocks.withdrawn(keys) if blocks else {}, keys


def _accept(raw: RawRow, sheet: Datasheet, cfg: IngestConfig, uri: str,
            records: list[dict[str, Any]], bad: list[dict[str, Any]]) -> RowKeys:
    """The row into ``records`` or ``bad``; returns its keys (for the block list)."""
    where = uri + raw.location
    if raw.value is None:
        bad.append(_quarantine_row(sheet.name, where, raw.reason or "unreadable_row", raw.detail, raw.raw))
        return raw_row_keys(raw, sheet)
    try:
        rec = to_record(raw.value, sheet, cfg.max_record_bytes)
    except Rejected as rej:
        preview = json.dumps(raw.value, default=str)[:RAW_PREVIEW]
        bad.append(_quarantine_row(sheet.name, where, rej.reason, rej.detail, preview))
        return raw_row_keys(raw, sheet)
    rec["source_uri"] = where
    records.append(rec)
    return record_keys(rec)


def _write_quarantine(store: Store, key: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        store.write_parquet(key, pa.Table.from_pylist(rows, schema=quarantine_schema()), quarantine_schema())
    else:
        store.delete(key)


def cluster_store(store: Store, cfg: IngestConfig) -> dict[str, Any]:
    """Step 2: id conflicts, exact duplicates and near-dup clusters over every signature in the store, written per
    partition (``tasks.dedup.sharded``: memory follows the rows, not their signatures)."""
    summary = {**cluster_partitions(store, cfg.minhash), "config": str(cfg.minhash)}
    store.write_json(layout.DEDUP_STATS, summary)
    return summary


def publish_partition(store: Store, source: str, fid: str) -> dict[str, Any]:
    """Step 3 for one staging partition: drop duplicates and withdrawn rows, attach clusters, write records.

    Withdrawn rows are checked again here (a deletion may have run since the parse) and also leave staging and
    the partition's ingest quarantine, so a deletion that ran during an ingest leaves nothing of them behind.
    Near copies are looked for only when fingerprints came since staging was last checked against them.

    A partition is published again only when its inputs changed: the parse that staged it (``parsed_at``; a
    purge, which takes the same rows out of staging and records, keeps it), its clusters and conflicts, and its
    withdrawn rows. Deciding that reads staging's key columns (texts only for a near-copy check); an unchanged
    partition costs that and its records' row count, not a rewrite (which took 237 s at 10M records when a
    one-file delivery after a batch of deletions published every partition the batch touched)."""
    parse_marker = layout.ingest_marker("parse", source, fid)
    parsed, ledger = store.read_json(parse_marker), ledger_version(store)
    blocks = standing_blocks(store, ledger).unless_copies_checked(parsed.get("copies_from"))
    blocks = blocks.sparing(published_ids(store, source, fid)) if blocks else blocks  # no rules: nothing to spare
    keys = _staged_keys(store, source, fid, blocks.copies is not None, blocks.spared) if blocks else {}
    withdrawn = blocks.withdrawn(keys)
    mine, my_conflicts = clusters.partition_dedup(store, source, fid)
    digest = hashlib.sha256(json.dumps([_parse_generation(parsed), mine.to_pylist(), my_conflicts.to_pylist(),
                                        sorted(withdrawn.items())], default=str).encode()).hexdigest()
    marker = layout.ingest_marker("publish", source, fid)
    before = store.read_json(marker) if store.exists(marker) else {}
    skipped = before.get("digest") == digest
    if skipped:  # a purge since may have removed records: count them as they are
        stats = {**before["stats"], "records": store.parquet_rows(layout.records(source, fid))}
    else:
        staged = store.read_parquet(layout.staging(source, fid))
        stats = _write_partition(store, source, fid, staged, mine, my_conflicts, withdrawn)
        if withdrawn:
            clear_withdrawn(store, (source, fid, parsed["stats"]["file"]), withdrawn,
                            {rec["source_uri"]: record_keys(rec) for rec in staged.to_pylist()}, blocks)
    if blocks.copies is not None:  # staging is now checked against these fingerprints (only after the writes)
        store.write_json(parse_marker, {**parsed, "copies_from": list(blocks.copies_from)})
    done = {"digest": digest, "stats": stats, "inputs": publish_inputs(
        source, fid, {k: store.version(k) for k in _publish_input_keys(source, fid)}, ledger)}
    if done != before:  # last, once: the inputs' versions are read after every write above
        store.write_json(marker, done)
    return {**stats, "skipped": skipped}


def publish_partitions(store: Store, partitions: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``publish_partition`` of each of some partitions, in turn: a flow's task (``tasks.batching.dealt``)."""
    return [publish_partition(store, source, fid) for source, fid in partitions]


def _publish_input_keys(source: str, fid: str) -> list[str]:
    """The files a partition's publish reads that only other steps write: its parse marker and its clusters."""
    return [layout.ingest_marker("parse", source, fid), *(layout.dedup_part(kind, source, fid)
                                                          for kind in (layout.CLUSTERS, layout.ID_CONFLICTS))]


def publish_inputs(source: str, fid: str, versions: dict[str, str | None], ledger: str) -> str:
    """What a partition was last published from: the versions (``Store.versions``) of its parse marker and
    clusters files, and the ledger's (``ledger_version``: requests, tombstones, fingerprints). Staging changes only
    with a parse (its marker), a purge (the ledger) or the publish itself; records only with the last two."""
    named = [versions.get(key) for key in _publish_input_keys(source, fid)]
    return hashlib.sha256(json.dumps([named, ledger]).encode()).hexdigest()


def unchanged_publishes(store: Store, partitions: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The publish stats (``skipped: True``) of the ``partitions`` whose inputs (``publish_inputs``) are those
    they were last published from, decided from four listings and each partition's marker: publishing them
    again would change nothing, so the flow makes no task of them (after a one-file delivery into 100
    partitions, 100 tasks each read the ledger and staging's keys to find that out)."""
    ledger = ledger_version(store)
    versions = {k: v for prefix in (layout.ingest_markers("parse"), layout.dedup_part(layout.CLUSTERS),
                                    layout.dedup_part(layout.ID_CONFLICTS), layout.ingest_markers("publish"))
                for k, v in store.versions(prefix).items()}
    out = {}
    for source, fid in partitions:
        marker = layout.ingest_marker("publish", source, fid)
        done = store.read_json(marker) if marker in versions else {}
        if done.get("inputs") == publish_inputs(source, fid, versions, ledger):
            out[(source, fid)] = {**done["stats"], "skipped": True}
    return out


def _parse_generation(parsed: dict[str, Any]) -> Any:
    """What names the parse that staged a partition: its time, or, in a marker written before parses recorded
    it, the datasheet and config it was parsed with (a parse since would have recorded its time)."""
    return parsed.get("parsed_at") or {k: v for k, v in parsed["fingerprint"].items() if k != "size"}


def _staged_keys(store: Store, source: str, fid: str, with_text: bool, spared: frozenset[str]) -> dict[str, RowKeys]:
    """Each staged row's keys by location, read from staging's key columns (and its texts when ``with_text``),
    but for the ``spared`` records (published before: no withdrawal applies to them), left out with Arrow."""
    columns = [*KEY_COLUMNS, "source_uri", *(["text"] if with_text else [])]
    table = store.read_parquet(layout.staging(source, fid), columns)
    if spared:
        published = pc.is_in(table.column("record_id"), value_set=pa.array(sorted(spared), pa.string()))
        table = table.filter(pc.invert(pc.fill_null(published, False)))
    return {row["source_uri"]: record_keys(row) for row in table.to_pylist()}


DUPLICATE_ID_DETAIL = "record id already used by an earlier row with different text"


def _is(values: pa.ChunkedArray, value: str) -> pa.ChunkedArray:
    return pc.fill_null(pc.equal(values, value), False)


def _write_partition(store: Store, source: str, fid: str, staged: pa.Table, mine: pa.Table,
                     my_conflicts: pa.Table, withdrawn: dict[str, Withdrawal]) -> dict[str, Any]:
    """The records partition (and dedup quarantine) of the staged rows; returns the publish stats. Withdrawn rows
    are left out (counted by reason), rows whose id an earlier row holds with another text are quarantined, exact
    duplicates dropped, and the rest written with their clusters: in Arrow, column by column (row by row in
    Python it was two thirds of a partition's publish, 1.5 s of 2 at 100k rows)."""
    uris = staged.column("source_uri")
    left = pc.invert(pc.fill_null(pc.is_in(uris, value_set=pa.array(sorted(withdrawn), pa.string())), False))
    why = pc.take(my_conflicts.column("reason"), pc.index_in(uris, value_set=my_conflicts.column("source_uri")))
    membership = pc.index_in(staged.column("record_id"), value_set=mine.column("record_id"))  # null: no cluster
    kind = pc.take(mine.column("kind"), membership)
    duplicate_id = pc.and_(left, _is(why, "duplicate_id"))
    unique = pc.and_(left, pc.invert(duplicate_id))
    exact = pc.and_(unique, pc.or_(_is(why, "repeated_record"), _is(kind, "exact")))
    keep = pc.and_(unique, pc.invert(exact))
    rows = staged.filter(keep)
    for column, values in (("near_dup_cluster", pc.take(mine.column("cluster_id"), membership).filter(keep)),
                           ("near_dup_kept", pc.invert(_is(kind.filter(keep), "near")))):
        rows = rows.set_column(rows.schema.get_field_index(column), column, values)
    store.write_parquet(layout.records(source, fid), rows.cast(record_schema()), record_schema())
    duplicates = staged.filter(duplicate_id).select(["source_uri", "text", "record_id"]).to_pydict().values()
    dup_rows = [_quarantine_row(source, uri, "duplicate_id", DUPLICATE_ID_DETAIL, text, rid)
                for uri, text, rid in zip(*duplicates, strict=True)]
    _write_quarantine(store, layout.quarantine(source, "dedup", fid), dup_rows)
    clustered = pc.and_(pc.is_valid(rows.column("near_dup_cluster")),
                        pc.not_equal(rows.column("near_dup_cluster"), ""))
    return {"source": source, "partition": fid, "records": rows.num_rows, "duplicate_id": len(dup_rows),
            "exact_duplicates": int(pc.sum(exact).as_py() or 0), **withdrawn_stats(withdrawn),
            "near_dup_members": int(pc.sum(pc.fill_null(clustered, False)).as_py() or 0)}


def staged_partitions(store: Store) -> list[tuple[str, str]]:
    """``(source, file id)`` of every staging partition."""
    return [layout.staged_partition(key) for key in store.list(layout.staging_dir(), layout.PARQUET)]


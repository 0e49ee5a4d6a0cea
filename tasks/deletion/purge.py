"""Physical removal of deleted records from the store: Parquet partitions and the raw files themselves.

Rows go when their ``record_id`` is tombstoned or their ``content_hash`` is a deleted text. Raw rows are mapped
to records exactly as ingestion maps them (``tasks.rows``) and matched by content, not by line number, so a
purge that crashed half-way and is re-run can never drop the wrong rows. Everything here is idempotent: a file
that no longer holds a deleted row is not rewritten.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout
from tasks.datasheet import Datasheet, load_datasheet
from tasks.errors import DatasheetError, ShardError
from tasks.readers import detect_format, read_rows
from tasks.rows import to_record
from tasks.sources import list_raw_files
from tasks.storage import Store

log = logging.getLogger(__name__)


def _hit_mask(table: pa.Table, ids: set[str], hashes: set[str]) -> pa.ChunkedArray | None:
    """Rows whose record id or content hash is deleted; None when the table has neither column to match."""
    masks = []
    for column, values in (("record_id", ids), ("content_hash", hashes)):
        if column in table.column_names and values:
            masks.append(pc.fill_null(pc.is_in(table.column(column), value_set=pa.array(sorted(values))), False))
    if not masks:
        return None
    mask = masks[0]
    for other in masks[1:]:
        mask = pc.or_(mask, other)
    return mask


def purge_parquet(store: Store, ids: set[str], hashes: set[str]) -> dict[str, int]:
    """Rewrite every Parquet file under the purged prefixes without the deleted rows."""
    rewritten = removed = 0
    for prefix in layout.PURGED_PREFIXES:
        for key in store.list(prefix, layout.PARQUET):
            table = store.read_parquet(key)
            mask = _hit_mask(table, ids, hashes)
            hits = int(pc.sum(mask).as_py() or 0) if mask is not None else 0
            if hits:
                store.write_parquet(key, table.filter(pc.invert(mask)), table.schema)
                rewritten += 1
                removed += hits
    return {"partitions_rewritten": rewritten, "rows_removed": removed}


def _doomed_rows(data: bytes, key: str, sheet: Datasheet, ids: set[str], hashes: set[str]) -> set[str]:
    """Locations (``#L3``, ``#row=7``) of rows in one raw file whose record is deleted.

    Raises:
        ShardError: the file as a whole cannot be read.
    """
    doomed = set()
    no_limit = len(data) + 1  # the size limit ingestion ran with is not known here: whatever it was, look at all
    for raw in read_rows(data, key, no_limit, sheet.format):
        if raw.value is None:
            continue
        try:
            rec = to_record(raw.value, sheet, no_limit)
        except Exception:  # a row ingestion rejects (or fails on, e.g. a timestamp out of range) holds no record
            continue
        if rec["record_id"] in ids or rec["content_hash"] in hashes:
            doomed.add(raw.location)
    return doomed


def _without_jsonl_lines(payload: bytes, doomed: set[str]) -> bytes:
    lines = payload.split(b"\n")
    return b"\n".join(line for n, line in enumerate(lines, start=1) if f"#L{n}" not in doomed)


def _without_csv_rows(payload: bytes, doomed: set[str]) -> bytes:
    text = payload.decode("utf-8", errors="surrogateescape")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [rows[0]] + [r for i, r in enumerate(rows[1:], start=1) if f"#row={i}" not in doomed])
    return buf.getvalue().encode("utf-8", errors="surrogateescape")


def _without_parquet_rows(payload: bytes, doomed: set[str]) -> bytes:
    table = pq.read_table(io.BytesIO(payload))
    keep = [i for i in range(table.num_rows) if f"#row={i + 1}" not in doomed]
    sink = io.BytesIO()
    pq.write_table(table.take(pa.array(keep, pa.int64())), sink)
    return sink.getvalue()


REWRITERS = {"jsonl": _without_jsonl_lines, "csv": _without_csv_rows, "parquet": _without_parquet_rows}


def _rewrite_raw(data: bytes, fmt: str, gz: bool, doomed: set[str]) -> bytes:
    """A raw file's bytes without the ``doomed`` rows, in its own format (and gzip when it was gzipped)."""
    out = REWRITERS[fmt](gzip.decompress(data) if gz else data, doomed)
    return gzip.compress(out, mtime=0) if gz else out


def purge_raw(store: Store, sources: set[str], ids: set[str], hashes: set[str]) -> dict[str, int]:
    """Remove deleted rows from the delivered files of ``sources`` (the ledger must not leave text behind)."""
    rewritten = removed = 0
    for source in sorted(sources):
        try:
            sheet, _ = load_datasheet(store, source)
        except DatasheetError as exc:
            log.warning("cannot purge raw files of %s: %s", source, exc)
            continue
        for key in list_raw_files(store, source):
            data = store.read_bytes(key)
            try:
                doomed = _doomed_rows(data, key, sheet, ids, hashes)
            except ShardError:
                continue
            if doomed:
                fmt, gz = detect_format(key) or ("jsonl", False)
                store.write_bytes(key, _rewrite_raw(data, sheet.format or fmt, gz, doomed))
                rewritten += 1
                removed += len(doomed)
    return {"raw_files_rewritten": rewritten, "raw_rows_removed": removed}


def purge(store: Store, ids: set[str], hashes: set[str]) -> dict[str, Any]:
    """Remove deleted records everywhere: raw files first (located by content), then Parquet partitions."""
    if not ids and not hashes:
        return {"partitions_rewritten": 0, "rows_removed": 0, "raw_files_rewritten": 0, "raw_rows_removed": 0}
    staging = store.read_parquets(layout.staging_dir(), ["record_id", "source", "content_hash"])
    mask = _hit_mask(staging, ids, hashes)
    sources = set(staging.filter(mask).column("source").to_pylist()) if mask is not None else set()
    return {**purge_raw(store, sources, ids, hashes), **purge_parquet(store, ids, hashes)}

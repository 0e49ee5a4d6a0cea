"""Physical removal of deleted rows from the store: the raw files, the quarantine, and Parquet partitions.

Parquet rows go when their ``record_id`` is tombstoned or their ``content_hash`` is a deleted text. Raw rows go
when a request's block list (``tasks.deletion.blocklist``) withdraws them by the keys ingestion would give them
(``tasks.rows.row_keys``: owner field, source, record id, content hash), whether or not ingestion accepted them,
so rows delivered but never ingested and rows ingestion quarantined go too. Quarantine rows go when they came
from a withdrawn raw row, or when their preview shows a withdrawn owner or text. Rows are matched by content,
never by line number, so a purge that crashed half-way and is re-run can never drop the wrong rows. A row the
reader cannot parse cannot be matched by owner: the purge counts those it leaves. Everything is idempotent: a
file that no longer holds a withdrawn row is not rewritten.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout
from tasks.config import get_settings
from tasks.datasheet import Datasheet, load_datasheet
from tasks.deletion.blocklist import BlockList, Withdrawal
from tasks.deletion.locator import Located
from tasks.errors import DatasheetError, ShardError
from tasks.ids import content_hash, normalize_text, record_id_keys
from tasks.readers import ReadLimits, csv_records, detect_format, jsonl_line_offsets, read_jsonl_lines, read_rows
from tasks.rows import RowKeys, raw_row_keys, row_keys
from tasks.sources import file_id, list_raw_files, list_sources
from tasks.storage import Buffer, Store
from tasks.tables import filtered_parts, one_of

log = logging.getLogger(__name__)


MATCHED_COLUMNS = ("record_id", "record_key", "content_hash")  # what names a row's record or text in a table


def _matched_values(ids: set[str], hashes: set[str]) -> dict[str, pa.Array]:
    """Per matched column, the deleted values it is looked up against (made once for all of a purge's files)."""
    ordered = sorted(ids)
    out = {"record_id": pa.array(ordered, pa.string()), "record_key": pa.array(record_id_keys(ordered), pa.uint64()),
           "content_hash": pa.array(sorted(hashes), pa.string())}
    return {column: values for column, values in out.items() if len(values)}


def _hit_mask(table: pa.Table, matched: dict[str, pa.Array]) -> pa.ChunkedArray | None:
    """Rows whose record id (or its 64-bit ``record_key``, as the copy index names records) or content hash is
    deleted (``_matched_values``); None when the table has none of those columns to match."""
    masks = [one_of(table.column(column), values)
             for column, values in matched.items() if column in table.column_names]
    if not masks:
        return None
    mask = masks[0]
    for other in masks[1:]:
        mask = pc.or_(mask, other)
    return mask


def parquet_files(store: Store) -> list[str]:
    """Every Parquet file under the purged prefixes (a listing: nothing is read)."""
    return [key for prefix in layout.PURGED_PREFIXES for key in store.list(prefix, layout.PARQUET)]


@dataclass
class _Purged:
    """One file a purge looked at: its bytes (when read), the pieces of its new ones (none when it held no deleted
    row), and how many rows it lost."""

    data: pa.Buffer | None
    parts: list[Buffer]
    hits: int
    key: str = ""  # where its new bytes were written


def _purged(fh: pa.NativeFile, data: pa.Buffer | None, matched: dict[str, pa.Array]) -> _Purged:
    """An open file's deleted rows (by its id and hash columns, the only ones read) and, if any, its bytes (``data``,
    else read now) without them."""
    parquet = pq.ParquetFile(fh)
    columns = [c for c in MATCHED_COLUMNS if c in parquet.schema_arrow.names]
    mask = _hit_mask(parquet.read(columns, use_threads=False), matched) if columns else None
    hits = int(pc.sum(mask).as_py() or 0) if mask is not None else 0
    if not hits:
        return _Purged(data, [], 0)
    if data is None:
        fh.seek(0)
        data = fh.read_buffer()
    return _Purged(data, filtered_parts(data, pc.invert(mask).to_numpy()), hits)


def purge_parquet(store: Store, ids: set[str], hashes: set[str], keys: list[str] | None = None,
                  located: bool = False) -> dict[str, int]:
    """Rewrite Parquet files (``keys``, default every one under the purged prefixes) without the deleted rows, row
    groups kept (``filtered_parts``); a file is rewritten only when it holds one. To look, only the id and hash
    columns are read: of the file read whole when it is ``located`` (a partition the locator says holds the rows:
    on an object store one request, not one a column chunk; on a local root a memory map, whose pages the rewrite
    writes out without copying them first), else of the file opened. A located file with the same bytes as the
    one rewritten before it gets the same new bytes, not written again (``Store.write_same``): a partition whose
    publishing dropped no row holds its records as staging does, byte for byte (``layout.PURGED_PREFIXES`` lists
    them one after the other), and looking, splicing and writing again took a sixth of its purge."""
    rewritten = removed = 0
    matched = _matched_values(ids, hashes)
    last: _Purged | None = None  # the bytes of one file at most are kept
    for key in parquet_files(store) if keys is None else keys:
        with store.random_access(key, whole=located and store.protocol != "file") as fh:
            data = fh.read_buffer() if located else None
            if last is not None and last.data is not None and data is not None and last.data.equals(data):
                found = last
                store.write_same(key, last.key)
            elif (found := _purged(fh, data, matched)).hits:
                store.write_parts(key, found.parts)
                found.key, last = key, found
        rewritten += bool(found.hits)
        removed += found.hits
    return {"partitions_rewritten": rewritten, "rows_removed": removed}


def _without_jsonl_lines(payload: bytes, doomed: set[str]) -> list[Buffer]:
    """The payload without the doomed lines (``#L<n>``): the runs of lines between them, as views to write."""
    offsets = jsonl_line_offsets(payload).tolist()
    cut = sorted({n for loc in doomed if loc.startswith("#L") and 0 < (n := int(loc[2:])) < len(offsets)})
    view = memoryview(payload)
    return [view[offsets[after]:offsets[before - 1]] for after, before in pairwise([0, *cut, len(offsets)])]


def _without_csv_rows(payload: bytes, doomed: set[str]) -> list[Buffer]:
    """The CSV without the doomed rows, every other byte as delivered (re-writing would lose the quoting of a bare
    ``\r``); rows are numbered as the reader numbers them: after the header, blank lines not counted."""
    kept, index = [], 0
    for n, (record, raw) in enumerate(csv_records(payload.decode("utf-8", errors="surrogateescape"))):
        index += bool(n and record)
        if not (n and record and f"#row={index}" in doomed):
            kept.append(raw)
    return ["".join(kept).encode("utf-8", errors="surrogateescape")]


def _without_parquet_rows(payload: bytes, doomed: set[str]) -> list[Buffer]:
    table = pq.read_table(io.BytesIO(payload))
    keep = [i for i in range(table.num_rows) if f"#row={i + 1}" not in doomed]
    sink = io.BytesIO()
    pq.write_table(table.take(pa.array(keep, pa.int64())), sink)
    return [sink.getvalue()]


REWRITERS = {"jsonl": _without_jsonl_lines, "csv": _without_csv_rows, "parquet": _without_parquet_rows}


def rewrite_raw(data: bytes, key: str, fmt: str | None, doomed: set[str]) -> list[Buffer]:
    """A raw file's bytes without the ``doomed`` rows (by location), in its own format, gzipped if it was: the
    pieces to write end to end (``Store.write_parts``)."""
    detected_fmt, gz = detect_format(key) or ("jsonl", False)
    out = REWRITERS[fmt or detected_fmt](gzip.decompress(data) if gz else data, doomed)
    return [gzip.compress(b"".join(out), mtime=0)] if gz else out


@dataclass
class Found:
    """What a purge removes outside the record partitions, found before anything is removed (so the texts can be
    fingerprinted first): raw rows by file, quarantine rows by file, and the withdrawn texts."""

    raw: dict[str, set[str]] = field(default_factory=dict)  # raw key -> locations of withdrawn rows
    formats: dict[str, str | None] = field(default_factory=dict)  # raw key -> the datasheet's format override
    quarantine: dict[str, list[int]] = field(default_factory=dict)  # quarantine key -> indices of withdrawn rows
    texts: dict[str, list[str]] = field(default_factory=dict)  # request id -> the withdrawn rows' texts
    why: dict[str, str] = field(default_factory=dict)  # withdrawn raw row (uri + location) -> its request
    unreadable_raw_rows: int = 0  # rows the reader could not parse, left: not matchable by owner
    unreadable_raw_files: int = 0  # files that cannot be read at all, left as they are
    unmatchable_quarantine_rows: int = 0  # quarantined unparsed rows (no owner to read) that were left
    raw_files_read_by_locator: int = 0  # raw files of which only the locator's lines were read

    def add_text(self, request_id: str, text: str | None) -> None:
        if text:
            self.texts.setdefault(request_id, []).append(text)


def _sheets(store: Store, sources: list[str]) -> dict[str, Datasheet]:
    sheets = {}
    for source in sources:
        try:
            sheets[source], _ = load_datasheet(store, source)
        except DatasheetError as exc:
            log.warning("cannot match rows of %s by their fields: %s", source, exc)
    return sheets


def _located_doomed(data: bytes, key: str, sheet: Datasheet, blocks: BlockList, located: Located,
                    limits: ReadLimits) -> tuple[dict[str, RowKeys], dict[str, Withdrawal]] | None:
    """The located lines' keys and withdrawals when every located line is confirmed withdrawn by its content;
    None when one is not (the locator is stale: the caller parses the whole file)."""
    try:
        rows = read_jsonl_lines(data, key, located.lines, len(data) + 1, limits)
    except ShardError:
        return None
    keys = {raw.location: raw_row_keys(raw, sheet) for raw in rows}
    doomed = blocks.withdrawn(keys)
    return (keys, doomed) if len(doomed) == len(located.lines) else None


def _find_raw(store: Store, key: str, sheet: Datasheet, blocks: BlockList, found: Found,
              located: Located | None = None) -> None:
    """Add one raw file's withdrawn rows (and their texts) to ``found``: only the ``located`` lines of a JSONL
    file when the locator names them (and they confirm), else every row."""
    jsonl = (sheet.format or "jsonl") == "jsonl"
    if located is not None and jsonl and not located.lines:  # the locator names no line here: nothing to read
        found.raw_files_read_by_locator += 1
        found.unreadable_raw_rows += located.unreadable
        return
    data = store.read_bytes(key)
    no_limit = len(data) + 1  # the size limit ingestion ran with is not known here: whatever it was, look at all
    # rows of any size are matched; depth and decompression stay bounded, so a hostile file costs no more here
    limits = replace(ReadLimits.from_settings(get_settings()), max_field_bytes=None)
    fast = _located_doomed(data, key, sheet, blocks, located, limits) if located is not None and jsonl else None
    if fast is not None:
        (keys, doomed), unreadable = fast, located.unreadable  # type: ignore[union-attr]
        found.raw_files_read_by_locator += 1
    else:
        try:
            rows = list(read_rows(data, key, no_limit, sheet.format, limits))
        except ShardError:
            found.unreadable_raw_files += 1
            return
        keys = {raw.location: raw_row_keys(raw, sheet) for raw in rows}
        doomed = blocks.withdrawn(keys)
        unreadable = sum(1 for raw in rows if raw.value is None and raw.location not in doomed)
    found.unreadable_raw_rows += unreadable
    if doomed:
        found.raw[key], found.formats[key] = set(doomed), sheet.format
        for loc, withdrawal in doomed.items():
            found.why[store.uri(key) + loc] = withdrawal.request_id
            found.add_text(withdrawal.request_id, keys[loc].text)


def _preview_keys(row: dict[str, Any], sheet: Datasheet | None) -> tuple[RowKeys, bool]:
    """A quarantine row's keys from its preview, and whether they could be read: the raw row's fields when the
    preview is one (ingest keeps a rejected row as JSON), else the preview as the text (dedup and validation keep
    the text). A row the reader could not parse has only its source (and no owner to match)."""
    preview = row["raw"] or ""
    try:
        value = json.loads(preview)
    except (ValueError, RecursionError):  # a preview is cut at RAW_PREVIEW, or the row was nested too deep
        value = None
    if isinstance(value, dict) and sheet is not None:
        return row_keys(value, sheet), True
    if row["stage"] == "ingest":  # unparsed by the reader: its preview is raw bytes, not a text (or nothing)
        return RowKeys(row["source"], record_id=row["record_id"]), not preview
    text = normalize_text(preview)
    return RowKeys(row["source"], record_id=row["record_id"], content_hash=content_hash(text) if text else None,
                   text=text or None), True


def _find_quarantine(store: Store, sheets: dict[str, Datasheet], blocks: BlockList, found: Found,
                     files: list[str]) -> None:
    """Add the rows of quarantine ``files`` that came from a withdrawn raw row or whose preview is withdrawn to
    ``found``."""
    for key in files:
        rows = store.read_parquet(key, ["source", "source_uri", "record_id", "stage", "raw"]).to_pylist()
        hits = []
        for i, row in enumerate(rows):
            keys, readable = _preview_keys(row, sheets.get(row["source"]))
            request = found.why.get(row["source_uri"]) or ((why := blocks.match(keys)) and why.request_id)
            if request:
                hits.append(i)
                found.add_text(request, keys.text)
            elif not readable:
                found.unmatchable_quarantine_rows += 1
        if hits:
            found.quarantine[key] = hits


def find_rows(store: Store, blocks: BlockList, sources: list[str] | None = None) -> Found:
    """The raw rows (of ``sources``, default all) and quarantine rows that ``blocks`` withdraws, with their texts:
    the whole store's (``find_in`` looks only where a deletion's locator points)."""
    sheets = _sheets(store, sorted(sources) if sources is not None else list_sources(store))
    return find_in(store, blocks, {source: list_raw_files(store, source) for source in sheets},
                   store.list(layout.quarantine_dir(), layout.PARQUET))


def find_in(store: Store, blocks: BlockList, raw: dict[str, list[str]], quarantine: list[str],
            located: Mapping[str, Located | None] | None = None) -> Found:
    """The rows ``blocks`` withdraws from some raw files (by source) and quarantine files, with their texts;
    ``located`` names, per raw file, the lines the locator says hold them (the others are parsed whole)."""
    found = Found()
    if blocks:
        sheets = _sheets(store, sorted(set(raw) | {layout.source_of(k) for k in quarantine}))
        for source, keys in raw.items():
            for key in keys:
                if source in sheets and store.exists(key):
                    _find_raw(store, key, sheets[source], blocks, found, (located or {}).get(key))
        _find_quarantine(store, sheets, blocks, found, [k for k in quarantine if store.exists(k)])
    return found


def purge_files(store: Store, blocks: BlockList, source: str, raw: list[str], quarantine: list[str]) -> dict[str, int]:
    """Remove the rows ``blocks`` withdraws from some ``raw`` and ``quarantine`` files of one source."""
    return purge_found(store, find_in(store, blocks, {source: raw}, quarantine))


def purge_found(store: Store, found: Found) -> dict[str, int]:
    """Rewrite the raw files and quarantine files of ``found`` without its rows."""
    for key, doomed in found.raw.items():
        before = store.size(key)
        store.write_parts(key, rewrite_raw(store.read_bytes(key), key, found.formats[key], doomed))
        _still_parsed(store, key, before)
    for key, hits in found.quarantine.items():
        table = store.read_parquet(key)
        keep = sorted(set(range(table.num_rows)) - set(hits))
        store.write_parquet(key, table.take(pa.array(keep, pa.int64())), table.schema)
    return {"raw_files_rewritten": len(found.raw), "raw_rows_removed": sum(map(len, found.raw.values())),
            "raw_rows_unreadable": found.unreadable_raw_rows, "raw_files_unreadable": found.unreadable_raw_files,
            "quarantine_rows_removed": sum(map(len, found.quarantine.values())),
            "quarantine_rows_unmatchable": found.unmatchable_quarantine_rows,
            "raw_files_read_by_locator": found.raw_files_read_by_locator}


def _still_parsed(store: Store, key: str, size_before: int) -> None:
    """A purged raw file stays parsed: the purge removed the same rows from its parse outputs (staging, signatures,
    copy index, locator), so its parse marker takes the file's new size when it held the old one, or the next
    ingest would parse the whole file again (every file a batch of scattered deletions touched, at 10M records
    eight minutes of parsing for a one-file delivery)."""
    source = layout.raw_source(key)
    marker = layout.ingest_marker("parse", source, file_id(source, key))
    if store.exists(marker):
        doc = store.read_json(marker)
        if doc.get("fingerprint", {}).get("size") == size_before:
            store.write_json(marker, {**doc, "fingerprint": {**doc["fingerprint"], "size": store.size(key)}})


def purge_raw(store: Store, blocks: BlockList, sources: list[str] | None = None) -> dict[str, int]:
    """Find and remove withdrawn rows from the delivered files (and the quarantine) in one go."""
    return purge_found(store, find_rows(store, blocks, sources))

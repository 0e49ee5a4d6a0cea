"""Raw file readers: JSONL, CSV and Parquet, optionally gzip-compressed, one row at a time.

A reader never raises for a bad row: it yields the row's location and a reason code instead, so one bad line
cannot sink a file. A file that cannot be opened at all raises ``ShardError`` (the caller quarantines it).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from tasks.errors import ShardError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
RAW_PREVIEW = 4096


@dataclass
class RawRow:
    """One raw row: its location (``#L<line>`` or ``#row=<n>``), the parsed mapping, or why it failed."""

    location: str
    value: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None
    raw: str | None = None


def detect_format(key: str) -> tuple[str, bool] | None:
    """``(format, gzipped)`` from a file name, or None for files that are not data."""
    name = key.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for ext, fmt in FORMATS.items():
        if name.endswith(ext):
            return fmt, gz
    return None


def _decompress(data: bytes, gz: bool) -> bytes:
    if not gz:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise ShardError(f"unreadable_file: gzip stream is corrupt: {exc}") from exc


def _jsonl_rows(data: bytes, max_bytes: int) -> Iterator[RawRow]:
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        loc = f"#L{lineno}"
        if len(line) > max_bytes:
            yield RawRow(loc, reason="too_large", detail=f"line of {len(line)} bytes > {max_bytes}")
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RawRow(loc, reason="undecodable_bytes", detail=str(exc),
                         raw=line[:RAW_PREVIEW].decode("utf-8", "replace"))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRow(loc, reason="malformed_json", detail=str(exc), raw=text[:RAW_PREVIEW])
            continue
        if not isinstance(value, dict):
            yield RawRow(loc, reason="malformed_json", detail="line is not a JSON object", raw=text[:RAW_PREVIEW])
            continue
        yield RawRow(loc, value=value)


def _csv_rows(data: bytes) -> Iterator[RawRow]:
    text = data.decode("utf-8", errors="surrogateescape")  # keeps bad bytes visible per row
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for index, row in enumerate(reader, start=1):
            loc = f"#row={index}"
            raw = ",".join(str(v) for v in row.values() if v is not None)[:RAW_PREVIEW]
            if any(isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in row.values()):
                yield RawRow(loc, reason="undecodable_bytes", detail="row holds bytes that are not UTF-8",
                             raw=raw.encode("utf-8", "replace").decode("utf-8"))
            elif None in row or any(v is None for v in row.values()):
                yield RawRow(loc, reason="malformed_row", detail="wrong number of columns", raw=raw)
            else:
                yield RawRow(loc, value=dict(row))
    except csv.Error as exc:
        raise ShardError(f"unreadable_file: CSV parse error after row {reader.line_num}: {exc}") from exc


def _parquet_rows(data: bytes) -> Iterator[RawRow]:
    try:
        pf = pq.ParquetFile(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for corrupt footers
        raise ShardError(f"unreadable_file: not a readable Parquet file: {exc}") from exc
    index = 0
    for batch in pf.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            index += 1
            yield RawRow(f"#row={index}", value=row)


def read_rows(data: bytes, key: str, max_bytes: int, fmt: str | None = None) -> Iterator[RawRow]:
    """Rows of one raw file's bytes; ``fmt`` overrides detection from the file name.

    Raises:
        ShardError: when the file as a whole cannot be read (corrupt gzip or Parquet, broken CSV).
    """
    detected = detect_format(key)
    if detected is None and fmt is None:
        raise ShardError(f"unreadable_file: unknown format for {key}")
    gz = detected[1] if detected else key.endswith(".gz")
    fmt = fmt or detected[0]  # type: ignore[index]
    payload = _decompress(data, gz)
    if fmt == "jsonl":
        return _jsonl_rows(payload, max_bytes)
    if fmt == "csv":
        return _csv_rows(payload)
    return _parquet_rows(payload)

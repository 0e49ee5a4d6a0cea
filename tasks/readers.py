"""Raw file readers: JSONL, CSV and Parquet, optionally gzip-compressed, one row at a time.

A reader never raises for a bad row: it yields the row's location and a reason code instead, so one bad line
cannot sink a file. Reasons of a row: ``undecodable_bytes``, ``malformed_json``, ``malformed_row``, ``too_large``,
``too_deep``, ``invalid_unicode``, ``number_too_large``, ``field_too_large``, ``unconvertible_value``. A file that
cannot be read as a whole raises ``ShardError`` whose message starts with the file's reason (``unreadable_file``,
``decompressed_too_large``, ``compression_ratio``); the caller quarantines it. ``ReadLimits`` bound what one file
may cost: decompression streams and stops at its cap, so a gzip bomb costs at most the cap, never the bomb.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from tasks.errors import ShardError

if TYPE_CHECKING:
    from tasks.config import Settings

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
RAW_PREVIEW = 4096
CHUNK = 1 << 20  # bytes decompressed per step: the most a capped gunzip holds beyond its cap
# The csv module refuses fields over 128 KiB by default and then fails the whole file. Our own per-field limit
# applies per row after parsing, and the whole text is already bounded by the decompression cap, so the module's
# limit is lifted (2**31 - 1: the largest value every platform's C long accepts).
csv.field_size_limit(2**31 - 1)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # JSON's only way to a lone surrogate: \uD800-\uDFFF


@dataclass(frozen=True)
class ReadLimits:
    """What one raw file may cost; ``Settings`` holds the same names (``CUSTODY_MAX_DEPTH`` and so on)."""

    max_depth: int = 64  # nesting of JSON objects and lists (and Parquet structs) in one row
    max_field_bytes: int | None = None  # UTF-8 bytes of one string; None: the record limit
    max_decompressed_bytes: int = 1 << 30  # 1 GiB of decompressed data per file
    max_compression_ratio: int = 100  # decompressed : compressed, checked beyond ratio_min_bytes
    ratio_min_bytes: int = 16 << 20  # small files may compress well (a file of repeated rows): 16 MiB is allowed

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadLimits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def field_bytes(self, max_record_bytes: int) -> int:
        return self.max_field_bytes if self.max_field_bytes is not None else max_record_bytes

    def decompressed_cap(self, compressed: int) -> tuple[int, str]:
        """The most ``compressed`` bytes may inflate to, and the reason a file that inflates further gets."""
        by_ratio = max(self.ratio_min_bytes, self.max_compression_ratio * compressed)
        if by_ratio < self.max_decompressed_bytes:
            return by_ratio, "compression_ratio"
        return self.max_decompressed_bytes, "decompressed_too_large"


class RowError(ValueError):
    """A row the reader refuses, with its quarantine ``reason``; ``detail`` never quotes row content."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


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


def utf8_size(text: str) -> int:
    """UTF-8 bytes of ``text``.

    Raises:
        RowError: ``invalid_unicode`` when it holds a lone surrogate (JSON's ``"\\ud800"``), which no UTF-8
            writer (hashing, Arrow, Parquet) accepts.
    """
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise RowError("invalid_unicode", "a string holds a lone surrogate, which is not valid Unicode") from None


def check_value(value: Any, limits: ReadLimits, max_field_bytes: int) -> None:
    """Walk a parsed row without recursion: nesting within ``max_depth``, every string (key or value) valid
    Unicode and within ``max_field_bytes``.

    Raises:
        RowError: ``too_deep``, ``invalid_unicode`` or ``field_too_large``.
    """
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if (size := utf8_size(item)) > max_field_bytes:
                raise RowError("field_too_large", f"a field of {size} bytes > {max_field_bytes}")
        elif isinstance(item, dict | list | tuple):
            if depth >= limits.max_depth:
                raise RowError("too_deep", f"nested deeper than {limits.max_depth} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack += [(child, depth + 1) for child in children]


def parse_json(text: str, limits: ReadLimits, max_field_bytes: int) -> Any:
    """``json.loads`` that fails only with ``RowError`` and returns only values within ``limits``.

    Raises:
        RowError: ``malformed_json``, ``too_deep`` (beyond the interpreter's recursion limit too),
            ``number_too_large`` (an integer of more digits than Python converts), or a ``check_value`` reason.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:  # its message names a position, never the content
        raise RowError("malformed_json", str(exc)) from None
    except RecursionError:
        raise RowError("too_deep", f"nested deeper than {limits.max_depth} levels") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise RowError("number_too_large", "an integer has more digits than can be converted") from None
    if not _within_limits_by_length(text, limits, max_field_bytes):
        check_value(value, limits, max_field_bytes)
    return value


def _within_limits_by_length(text: str, limits: ReadLimits, max_field_bytes: int) -> bool:
    """Whether the JSON source alone shows its value within ``check_value``'s limits, so the walk can be skipped
    (most rows of a real file; ingest pays the walk per row otherwise): no string of it can be longer than the
    source (escapes only shrink), no nesting deeper than its count of brackets, and no lone surrogate without a
    ``\\uD8..``-``\\uDF..`` escape (decoded UTF-8 never holds one)."""
    return (utf8_size(text) <= max_field_bytes and text.count("{") + text.count("[") <= limits.max_depth
            and _SURROGATE_ESCAPE.search(text) is None)


def _decompress(data: bytes, gz: bool, limits: ReadLimits) -> bytes | bytearray:
    """The file's payload, inflated in steps of ``CHUNK`` and abandoned as soon as it passes the cap."""
    if not gz:
        return data
    cap, reason = limits.decompressed_cap(len(data))
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(CHUNK):
                out += chunk
                if len(out) > cap:
                    raise ShardError(f"{reason}: gzip of {len(data)} bytes inflates past {cap} bytes "
                                     f"(max_decompressed_bytes {limits.max_decompressed_bytes}, "
                                     f"max_compression_ratio {limits.max_compression_ratio})")
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a truncated stream an EOFError
        raise ShardError(f"unreadable_file: gzip stream is corrupt: {exc}") from exc
    return out


def _jsonl_row(lineno: int, line: bytes | bytearray, max_bytes: int, limits: ReadLimits) -> RawRow | None:
    """Line ``lineno`` (1-based) as a row; None for a blank line (no row)."""
    if lineno == 1 and line.startswith(codecs.BOM_UTF8):  # json.loads refuses a BOM; it is no part of the row
        line = line[len(codecs.BOM_UTF8):]
    if not line.strip():
        return None
    loc = f"#L{lineno}"
    size = len(line) - (2 if line.endswith(b"\r\n") else 1 if line.endswith((b"\n", b"\r")) else 0)  # no copy
    if size > max_bytes:
        return RawRow(loc, reason="too_large", detail=f"line of {size} bytes > {max_bytes}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRow(loc, reason="undecodable_bytes", detail=str(exc),
                      raw=line[:RAW_PREVIEW].decode("utf-8", "replace"))
    try:
        value = parse_json(text, limits, limits.field_bytes(max_bytes))
    except RowError as err:
        return RawRow(loc, reason=err.reason, detail=err.detail, raw=text[:RAW_PREVIEW])
    if not isinstance(value, dict):
        return RawRow(loc, reason="malformed_json", detail="line is not a JSON object", raw=text[:RAW_PREVIEW])
    return RawRow(loc, value=value)


def jsonl_line_offsets(payload: bytes | bytearray) -> np.ndarray:
    """Where each line of a JSONL payload starts, and its end: line ``n`` (``#L<n>``, to the reader and the purge
    alike) is ``payload[offsets[n - 1]:offsets[n]]`` with its line end (``\\n``, ``\\r\\n`` or ``\\r``: JSON never
    holds a raw one). One vectorised pass: 4 ms a 16 MB file, where splitting it into lines took 15."""
    data = np.frombuffer(payload, np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    returns = np.flatnonzero(data == ord("\r"))
    if len(returns):  # a lone \r ends a line; in \r\n the \n does
        ends = np.union1d(ends, returns[~np.isin(returns + 1, ends)])
    starts = np.r_[0, ends + 1]
    return np.r_[starts[:-1] if starts[-1] == len(data) else starts, len(data)].astype(np.int64)


def _jsonl_rows(data: bytes | bytearray, max_bytes: int, limits: ReadLimits) -> Iterator[RawRow]:
    lines = enumerate(pairwise(jsonl_line_offsets(data).tolist()), start=1)
    return (row for n, (start, stop) in lines if (row := _jsonl_row(n, data[start:stop], max_bytes, limits)))


def read_jsonl_lines(data: bytes, key: str, lines: Iterable[int], max_bytes: int,
                     limits: ReadLimits | None = None) -> list[RawRow]:
    """Only ``lines`` (1-based) of a JSONL raw file (gzipped if its name says so), each as ``read_rows`` gives it:
    what a purge reads when the locator names the lines; a blank line, or one past the end, gives no row. Raises
    ``ShardError`` as ``read_rows`` does when the file cannot be decompressed."""
    limits = limits or ReadLimits()
    payload = _decompress(data, key.endswith(".gz"), limits)
    offsets = jsonl_line_offsets(payload)
    rows = (_jsonl_row(n, payload[offsets[n - 1]:offsets[n]], max_bytes, limits)
            for n in sorted(set(lines)) if 1 <= n < len(offsets))
    return [row for row in rows if row is not None]


def _csv_row(row: dict[str | None, Any], loc: str, max_bytes: int, limits: ReadLimits) -> RawRow:
    raw = ",".join(str(v) for v in row.values() if v is not None)[:RAW_PREVIEW]
    if any(isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in row.values()):
        return RawRow(loc, reason="undecodable_bytes", detail="row holds bytes that are not UTF-8",
                      raw=raw.encode("utf-8", "replace").decode("utf-8"))
    if None in row or any(v is None for v in row.values()):
        return RawRow(loc, reason="malformed_row", detail="wrong number of columns", raw=raw)
    size = sum(len(v.encode("utf-8")) for v in row.values())
    if size > max_bytes:
        return RawRow(loc, reason="too_large", detail=f"row of {size} bytes > {max_bytes}", raw=raw)
    try:
        check_value(row, limits, limits.field_bytes(max_bytes))
    except RowError as err:
        return RawRow(loc, reason=err.reason, detail=err.detail, raw=raw)
    return RawRow(loc, value=dict(row))


def csv_records(text: str) -> Iterator[tuple[list[str], str]]:
    """Each CSV record with its exact text (line ends and quoting as delivered), so a purge can drop rows and keep
    every other byte. Lines split as the reader's do (``newline=""``: ``\n``, ``\r\n`` or ``\r``)."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    for record in csv.reader(lines()):  # the reader pulls one line at a time, to the end of the record
        yield record, "".join(consumed)
        consumed.clear()


def _csv_rows(data: bytes | bytearray, max_bytes: int, limits: ReadLimits) -> Iterator[RawRow]:
    text = data.decode("utf-8", errors="surrogateescape")  # keeps bad bytes visible per row
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for index, row in enumerate(reader, start=1):
            yield _csv_row(row, f"#row={index}", max_bytes, limits)
    except csv.Error as exc:
        raise ShardError(f"unreadable_file: CSV parse error after row {reader.line_num}: {exc}") from exc


def _parquet_value(batch: Any, i: int, loc: str, max_bytes: int, limits: ReadLimits) -> RawRow:
    """One row of a batch whose bulk conversion failed (a string that is not UTF-8, a date Python cannot hold)."""
    try:
        row = batch.slice(i, 1).to_pylist()[0]
    except UnicodeDecodeError:
        return RawRow(loc, reason="invalid_unicode", detail="a string column holds bytes that are not UTF-8")
    except (ValueError, OverflowError, ArithmeticError) as exc:
        return RawRow(loc, reason="unconvertible_value", detail=f"{type(exc).__name__} converting the row")
    return _parquet_row(row, loc, max_bytes, limits)


def _parquet_row(row: dict[str, Any], loc: str, max_bytes: int, limits: ReadLimits) -> RawRow:
    try:
        check_value(row, limits, limits.field_bytes(max_bytes))
    except RowError as err:
        return RawRow(loc, reason=err.reason, detail=err.detail)
    return RawRow(loc, value=row)


def _parquet_rows(data: bytes | bytearray, max_bytes: int, limits: ReadLimits) -> Iterator[RawRow]:
    try:
        pf = pq.ParquetFile(io.BytesIO(data))
        cap, reason = limits.decompressed_cap(len(data))
        index = total = 0
        for batch in pf.iter_batches(batch_size=8192):
            total += batch.nbytes  # decoded size: Parquet's own encodings (RLE, dictionaries) can bomb too
            if total > cap:
                raise ShardError(f"{reason}: Parquet of {len(data)} bytes decodes past {cap} bytes")
            try:
                rows = batch.to_pylist()
            except (ValueError, OverflowError, ArithmeticError):  # UnicodeDecodeError is a ValueError
                rows = None
            for i in range(batch.num_rows):
                index += 1
                loc = f"#row={index}"
                yield _parquet_row(rows[i], loc, max_bytes, limits) if rows is not None else \
                    _parquet_value(batch, i, loc, max_bytes, limits)
    except ShardError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt footers and pages
        raise ShardError(f"unreadable_file: not a readable Parquet file: {type(exc).__name__}: {exc}") from exc


def read_rows(data: bytes, key: str, max_bytes: int, fmt: str | None = None,
              limits: ReadLimits | None = None) -> Iterator[RawRow]:
    """Rows of one raw file's bytes; ``fmt`` overrides detection from the file name.

    Args:
        data: the file as stored (compressed if it is).
        key: its name (format and compression).
        max_bytes: the record limit: a longer line or CSV row is ``too_large``.
        fmt: the datasheet's format, when it names one.
        limits: depth, field and decompression limits (defaults when None).

    Raises:
        ShardError: when the file as a whole cannot be read (corrupt gzip or Parquet, broken CSV, inflating past
            its cap); the message starts with the file's reason.
    """
    limits = limits or ReadLimits()
    detected = detect_format(key)
    if detected is None and fmt is None:
        raise ShardError(f"unreadable_file: unknown format for {key}")
    gz = detected[1] if detected else key.endswith(".gz")
    fmt = fmt or detected[0]  # type: ignore[index]
    payload = _decompress(data, gz, limits)
    if fmt == "jsonl":
        return _jsonl_rows(payload, max_bytes, limits)
    if fmt == "csv":
        return _csv_rows(payload, max_bytes, limits)
    return _parquet_rows(payload, max_bytes, limits)

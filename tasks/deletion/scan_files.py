"""One file's strings, whatever its format: what ``custody verify-deletion`` matches against deleted texts.

A file is opened as a stream and decoded by its content, not trusted by its name alone: gzip is decompressed (by
magic), Parquet and Arrow IPC are read batch by batch (every string column, dictionary-encoded or in lists), JSON
documents give every string value (JSONL and CSV: per line and per cell), anything else that is text is read in
chunks of lines.
Images, tensors and model weights cannot quote a text the way these can and are skipped, by extension or magic,
and counted as such. Memory stays bounded by a table's batch or a text chunk, whatever the file's size.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import itertools
import json
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

BINARY_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".pdf", ".safetensors", ".bin", ".pt", ".pth",
                   ".ckpt", ".onnx", ".npy", ".npz", ".h5", ".msgpack", ".zip", ".tar", ".zst", ".whl")
BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"%PDF", b"PK\x03\x04", b"\x93NUMPY", b"\x28\xb5\x2f\xfd")
GZIP_MAGIC, PARQUET_MAGIC, ARROW_MAGIC = b"\x1f\x8b", b"PAR1", b"ARROW1"
TEXT_CHUNK_CHARS = 1 << 20  # a chunk of whole lines up to ~1 MiB: long enough for any record, bounded in memory
PARQUET_BATCH_ROWS = 65_536
MAX_JSON_CHARS = 64 << 20  # a JSON document is parsed whole up to this size, else read as text
BASE64 = re.compile(r"[A-Za-z0-9+/\r\n]{64,}={0,2}")  # a payload (Prefect's pickled results) worth decoding
PICKLE_MAGIC = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))
NAME_LIKE = re.compile(r"[\w.:@/-]{1,64}")  # a JSON key shown in a location; any other key could be text


@dataclass(frozen=True)
class Blob:
    """One string to match: ``where`` inside its file or table (column and row, JSON path, line)."""

    where: str
    text: str


@dataclass(frozen=True)
class Skipped:
    """A file not scanned, and why (``binary``, ``unreadable: ...``)."""

    reason: str


def is_binary_name(name: str) -> bool:
    return name.lower().endswith(BINARY_SUFFIXES)


def json_strings(value: Any, path: str = "$") -> Iterator[Blob]:
    """Every string value of a parsed JSON document (keys included: a dict keyed by text quotes it), at a path
    that names keys only when they look like names, so a location never quotes text."""
    if isinstance(value, str):
        yield Blob(path, value)
        yield from _base64_payload(value, path)
    elif isinstance(value, dict):
        for i, (key, item) in enumerate(value.items()):
            step = f"{path}.{key}" if NAME_LIKE.fullmatch(str(key)) else f"{path}.<key {i}>"
            yield Blob(step, str(key))
            yield from json_strings(item, step)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from json_strings(item, f"{path}[{i}]")


def _base64_payload(value: str, path: str) -> Iterator[Blob]:
    """A base64 string decoded, as text: a pickled object (a result, an exception) holds its strings as UTF-8."""
    if BASE64.fullmatch(value):
        try:
            yield Blob(f"{path} (base64)", base64.b64decode(value, validate=False).decode("utf-8", "replace"))
        except ValueError:
            return


def value_strings(value: Any, path: str = "") -> Iterator[Blob]:
    """A database or API value: a string that holds a JSON document is walked like one, else taken whole."""
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                yield from json_strings(json.loads(value), path or "$")
                return
            except ValueError:
                pass
        yield Blob(path, value)
    elif isinstance(value, dict | list):
        yield from json_strings(value, path or "$")


def _column_strings(column: Any, name: str, offset: int) -> Iterator[Blob]:
    """Distinct strings of one column batch (repeated values are matched once), each at its first row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):  # decoded by taking, which every value type allows (a cast does not)
        column, kind = column.dictionary.take(column.indices), kind.value_type
    if pa.types.is_struct(kind):  # each field in turn (the copy index's records are structs)
        for i, field in enumerate(kind):
            yield from _column_strings(column.field(i), f"{name}.{field.name}", offset)
        return
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        rows = pc.list_parent_indices(column)
        column, kind = pc.list_flatten(column), kind.value_type
    else:
        rows = None
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return
    values = column.cast(pa.large_string())
    for value in pc.unique(values).to_pylist():
        if value:
            first = pc.index(values, value).as_py()
            row = rows[first].as_py() if rows is not None else first
            yield Blob(f"{name}[row {offset + row}]", value)


def _batch_strings(batches: Iterable[Any]) -> Iterator[Blob]:
    """The strings of Arrow record batches read one after another, each at its row in the file."""
    offset = 0
    for batch in batches:
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            yield from _column_strings(column, name, offset)
        offset += batch.num_rows


def parquet_strings(fh: IO[bytes]) -> Iterator[Blob]:
    import pyarrow.parquet as pq

    yield from _batch_strings(pq.ParquetFile(fh).iter_batches(batch_size=PARQUET_BATCH_ROWS))


def arrow_strings(fh: IO[bytes]) -> Iterator[Blob]:
    """An Arrow IPC file's strings (a copy index has none: it is read to show so), batch by batch."""
    import pyarrow as pa

    reader = pa.ipc.open_file(pa.PythonFile(fh, mode="r"))
    yield from _batch_strings(reader.get_batch(i) for i in range(reader.num_record_batches))


def _text_chunks(text: Iterable[str]) -> Iterator[Blob]:
    """Whole lines grouped into chunks of about ``TEXT_CHUNK_CHARS`` (a quote is found inside a long chunk by
    containment), each named by its first line."""
    lines: list[str] = []
    size, first = 0, 1
    for number, line in enumerate(text, start=1):
        lines.append(line)
        size += len(line)
        if size >= TEXT_CHUNK_CHARS:
            yield Blob(f"lines {first}-{number}", "".join(lines))
            lines, size, first = [], 0, number + 1
    if lines:
        yield Blob(f"lines {first}-{first + len(lines) - 1}", "".join(lines))


def _json_document(text: IO[str]) -> Iterator[Blob]:
    """A JSON document's strings; one that does not parse (or is over ``MAX_JSON_CHARS``) is read as text."""
    raw = text.read(MAX_JSON_CHARS + 1)
    try:
        document = json.loads(raw)
    except ValueError:
        yield from _text_chunks(itertools.chain(io.StringIO(raw, newline=""), text))
        return
    yield from json_strings(document)


def _jsonl_strings(text: IO[str]) -> Iterator[Blob]:
    for number, line in enumerate(text, start=1):
        if line.strip():
            for blob in value_strings(line):
                yield Blob(f"line {number} {blob.where}".rstrip(), blob.text)


def _csv_strings(text: IO[str]) -> Iterator[Blob]:
    for number, row in enumerate(csv.reader(text), start=1):
        for i, cell in enumerate(row):
            if cell:
                yield Blob(f"line {number} cell {i}", cell)


def _sniff(fh: IO[bytes]) -> tuple[IO[bytes], bytes]:
    """A seekable-enough stream and its first bytes (object-store files are read through a buffer)."""
    stream = fh if hasattr(fh, "peek") else io.BufferedReader(fh)  # type: ignore[arg-type]
    return stream, stream.peek(8)[:8]


def file_strings(name: str, fh: IO[bytes]) -> Iterator[Blob | Skipped]:
    """The strings of a file called ``name`` (a key or path: its suffix picks the text format), read from ``fh``."""
    if is_binary_name(name):
        yield Skipped("binary")
        return
    stream, head = _sniff(fh)
    if head.startswith(GZIP_MAGIC):
        stream, name = gzip.GzipFile(fileobj=stream), name.removesuffix(".gz")
        stream, head = _sniff(stream)  # type: ignore[arg-type]
    for magic, tables in ((PARQUET_MAGIC, parquet_strings), (ARROW_MAGIC, arrow_strings)):
        if head.startswith(magic):  # both read by seeking to their footer
            yield from tables(io.BytesIO(stream.read()) if not stream.seekable() else stream)
            return
    if head.startswith(PICKLE_MAGIC):  # never unpickled: read as text, its strings are UTF-8 inside
        yield from _text_chunks(io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=""))
        return
    if head.startswith(BINARY_MAGIC) or b"\x00" in stream.peek(4096)[:4096]:
        yield Skipped("binary")
        return
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    suffix = posixpath.splitext(name.lower())[1]
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_strings(text)
    elif suffix == ".csv":
        yield from _csv_strings(text)
    elif suffix == ".json" or (not suffix and head.lstrip()[:1] in (b"{", b"[")):  # Prefect's results: no suffix
        yield from _json_document(text)
    else:
        yield from _text_chunks(text)

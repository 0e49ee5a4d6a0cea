"""Text normalization, content hashes and stable record ids.

``record_id`` depends only on the source name and the record's id inside the source (or its content hash
when the source has no ids), so re-ingesting the same raw file — or a re-delivery of it — keeps every id.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
import pyarrow as pa

_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newlines
_NEWLINES = re.compile(r"\s*\n\s*(\n\s*)+")  # blank-line runs


def normalize_text(text: str) -> str:
    """Unicode NFC, CRLF to LF, runs of spaces/tabs to one space, blank-line runs to one blank line, stripped."""
    if text.isascii() and text.isprintable():  # most rows: NFC leaves ASCII alone, and its only whitespace is " "
        return " ".join(text.split())
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _NEWLINES.sub("\n\n", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def content_hash(normalized_text: str) -> str:
    """sha256 hex of the normalized text: equal texts, equal hashes, whatever their source."""
    return hashlib.sha256(normalized_text.encode("utf-8")).hexdigest()


def record_id(source: str, source_record_id: str) -> str:
    """Stable 96-bit id of a record: ``r`` + 24 hex chars of sha256(source, source_record_id)."""
    return "r" + hashlib.sha256(f"{source}\x1f{source_record_id}".encode()).hexdigest()[:24]


_KEY_BASE = np.uint64(0x100000001B3)  # odd: every power is a unit mod 2**64


def _mixed(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit over the output."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _horner(chars: np.ndarray) -> np.ndarray:
    """The polynomial hash (mod 2**64) of each row of a ``(strings, length)`` uint8 matrix."""
    sums = np.zeros(len(chars), dtype=np.uint64)
    for column in chars.T:
        sums = sums * _KEY_BASE + column
    return sums


def record_id_keys(record_ids: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """A 64-bit key of each record id (uint64): what an index that names records millions of times keeps instead
    of the id string (8 fixed bytes a row, read and rewritten at memory speed, against ~25 compressed ones).
    Vectorised over Arrow's buffers, a length at a time (a copy search hashes every row of the staging groups it
    reads; ids all have one length): a polynomial hash of the UTF-8 bytes mod 2**64, mixed with the length. Ids
    are ``record_id``'s sha256 hex, which no one chooses, so distinct ids collide as random keys would: with
    probability ~n**2 / 2**65."""
    ids = pa.array(record_ids, pa.string()) if isinstance(record_ids, list) else record_ids
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    ids = ids.cast(pa.large_string())
    keys = np.zeros(len(ids), dtype=np.uint64)
    if not len(ids):
        return keys
    offsets = np.frombuffer(ids.buffers()[1], np.int64)[ids.offset:ids.offset + len(ids) + 1]
    data = np.frombuffer(ids.buffers()[2], np.uint8) if ids.buffers()[2] is not None else np.empty(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        if length and len(rows) == len(ids):  # the usual case: one contiguous block of equal-length ids
            keys = _horner(data[offsets[0]:offsets[-1]].reshape(len(ids), length))
        elif length:
            keys[rows] = _horner(data[starts[rows, None] + np.arange(length)])
    return _mixed(keys ^ lengths.astype(np.uint64))


def unit_interval(text: str, hex_digits: int = 12) -> float:
    """A stable pseudo-random number in [0, 1) from ``text`` (the first ``hex_digits`` of its sha256): splits,
    shards and samples that never change between runs or machines."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:hex_digits], 16) / 16**hex_digits

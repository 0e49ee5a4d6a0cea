"""Text normalization, content hashes and stable record ids.

``record_id`` depends only on the source name and the record's id inside the source (or its content hash
when the source has no ids), so re-ingesting the same raw file — or a re-delivery of it — keeps every id.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

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


def unit_interval(text: str, hex_digits: int = 12) -> float:
    """A stable pseudo-random number in [0, 1) from ``text`` (the first ``hex_digits`` of its sha256): splits,
    shards and samples that never change between runs or machines."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:hex_digits], 16) / 16**hex_digits

"""One raw row to one record: the datasheet's field mapping and provenance, the text normalized and hashed.

Ingestion maps every row through ``to_record``; a deletion's raw purge maps rows the same way to find the ones
whose record (by id or by content hash) is deleted, so the two can never disagree about which row is which.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np

from tasks.datasheet import Datasheet
from tasks.ids import content_hash, normalize_text, record_id


class Rejected(Exception):
    """A row ingestion refuses, with a machine-readable ``reason`` (the quarantine's) and a ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


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


def _text(raw: dict[str, Any], column: str, max_record_bytes: int) -> str:
    """The row's normalized text, or why there is none to keep."""
    text = raw.get(column)
    if text is None or (isinstance(text, float) and np.isnan(text)):
        raise Rejected("missing_text", f"field {column!r} is missing or null")
    if not isinstance(text, str):
        raise Rejected("wrong_type", f"field {column!r} is {type(text).__name__}, expected a string")
    text = normalize_text(text)
    if not text:
        raise Rejected("empty_text", f"field {column!r} is empty after normalization")
    if len(text.encode()) > max_record_bytes:
        raise Rejected("too_large", f"text of {len(text.encode())} bytes > {max_record_bytes}")
    return text


def to_record(raw: dict[str, Any], sheet: Datasheet, max_record_bytes: int) -> dict[str, Any]:
    """Map one raw row to record fields with the datasheet's provenance.

    Raises:
        Rejected: with the quarantine reason (missing or empty text, wrong type, too large, missing id).
    """
    fm = sheet.fields
    text = _text(raw, fm.text, max_record_bytes)
    try:
        values = {name: _scalar(raw.get(col)) if col else None
                  for name, col in (("label", fm.label), ("owner_id", fm.owner), ("id", fm.id),
                                    ("license", fm.license), ("consent", fm.consent))}
        collected = _timestamp(raw.get(fm.collected_at)) if fm.collected_at else None
        consent_at = _timestamp(raw.get(fm.consent_at)) if fm.consent_at else None
    except (TypeError, ValueError) as exc:
        raise Rejected("wrong_type", str(exc)) from exc
    if fm.id and not values["id"]:
        raise Rejected("missing_id", f"id field {fm.id!r} is missing or null")
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

"""One raw row to one record: the datasheet's field mapping and provenance, the text normalized and hashed.

Ingestion maps every row through ``to_record``. A deletion must recognise a row whether or not ingestion accepts
it (a quarantined row still holds its owner's text), so ``row_keys`` reads the same fields the same way and never
raises; ingestion's block list and the purge both match rows through it, so they cannot disagree about a row.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.datasheet import Datasheet
from tasks.ids import content_hash, normalize_text, record_id
from tasks.readers import RawRow, RowError, utf8_size


@dataclass(frozen=True)
class RowKeys:
    """What a deletion recognises a row by: its source, owner, record id, content hash, and normalized text."""

    source: str
    owner: str | None = None
    record_id: str | None = None
    content_hash: str | None = None
    text: str | None = None


class Rejected(Exception):
    """A row ingestion refuses, with a machine-readable ``reason`` (the quarantine's) and a ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _scalar(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        utf8_size(value)  # a lone surrogate cannot be written: RowError("invalid_unicode")
        return value
    if isinstance(value, int | float | bool):
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
        try:
            ts = dt.datetime.fromisoformat(value.strip())
        except ValueError:  # Python's message quotes the value: a detail names the problem, never row content
            raise ValueError("expected an ISO 8601 timestamp") from None
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
    try:
        size = utf8_size(text)
    except RowError as err:  # hashing and the Parquet write would fail on it: a row reason, not a crash
        raise Rejected(err.reason, f"field {column!r}: {err.detail}") from None
    if size > max_record_bytes:
        raise Rejected("too_large", f"text of {size} bytes > {max_record_bytes}")
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
    except RowError as err:
        raise Rejected(err.reason, err.detail) from None
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an epoch beyond the platform's time_t
        raise Rejected("wrong_type", str(exc)) from exc
    if fm.id and not values["id"]:
        raise Rejected("missing_id", f"id field {fm.id!r} is missing or null")
    chash = content_hash(text)
    src_id = _source_id(values["id"], bool(fm.id), chash)
    default_collected = sheet.collected_at
    if default_collected is not None and not isinstance(default_collected, dt.datetime):
        default_collected = dt.datetime.combine(default_collected, dt.time(), tzinfo=dt.UTC)
    extra = {k: v for k, v in raw.items() if k not in fm.columns}
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
        "tdm_reservation": _reservation(raw.get(fm.tdm_reservation) if fm.tdm_reservation else None,
                                        sheet.tdm_reservation),
    }


def _reservation(value: Any, default: bool | None) -> bool | None:
    """A record's TDM reservation: TDMRep's 1/0, or true/false; when the row states none, the datasheet's.

    Raises:
        Rejected: any other value (a reservation misread would train on reserved text).
    """
    if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return True
    if text in ("0", "0.0", "false", "no"):
        return False
    raise Rejected("wrong_type", "tdm_reservation: expected 1/0 or true/false")


def _source_id(given: str | None, has_id_field: bool, chash: str | None) -> str | None:
    """The row's id inside its source: the id field when the datasheet maps one, else the content hash."""
    return given if has_id_field else chash


def _lenient_scalar(value: Any) -> str | None:
    try:
        return _scalar(value)
    except (TypeError, ValueError):  # not a scalar, or not valid Unicode (RowError is a ValueError)
        return None


def _lenient_text(value: Any) -> str | None:
    """The normalized text of a field when it is a valid string, else None (never raises)."""
    if not isinstance(value, str):
        return None
    text = normalize_text(value)
    try:
        utf8_size(text)
    except RowError:
        return None
    return text


def row_keys(raw: dict[str, Any], sheet: Datasheet) -> RowKeys:
    """The keys of a raw row as far as they can be read (never raises): what ``to_record`` would give it."""
    fm = sheet.fields
    text = _lenient_text(raw.get(fm.text))
    chash = content_hash(text) if text else None
    src_id = _source_id(_lenient_scalar(raw.get(fm.id)) if fm.id else None, bool(fm.id), chash)
    return RowKeys(sheet.name, _lenient_scalar(raw.get(fm.owner)) if fm.owner else None,
                   record_id(sheet.name, src_id) if src_id else None, chash, text or None)


def raw_row_keys(raw: RawRow, sheet: Datasheet) -> RowKeys:
    """``row_keys`` of a row the reader parsed; a row it could not parse has only its source to be known by."""
    return row_keys(raw.value, sheet) if raw.value is not None else RowKeys(sheet.name)


KEY_COLUMNS = ["source", "owner_id", "record_id", "content_hash"]  # a record's keys but its text


def record_keys(rec: dict[str, Any]) -> RowKeys:
    """The keys of a record (a staged or published row; without its text when it was read without one)."""
    return RowKeys(rec["source"], rec["owner_id"], rec["record_id"], rec["content_hash"], rec.get("text"))

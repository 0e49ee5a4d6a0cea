"""Source datasheets (``source.yaml`` beside a source's raw files): provenance every record of a source inherits.

Loaded and validated before a single row is read; an invalid datasheet stops that source with an error that
names the offending field, and leaves other sources alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks import layout
from tasks.errors import DatasheetError
from tasks.storage import Store
from tasks.yaml_models import MAX_YAML_CHARS, parse_yaml_model

CONSENT_VALUES = ("granted", "revoked", "unknown")
# how the data was obtained: the source categories of the EU AI Act public summary template (tasks/transparency)
ACQUISITIONS = ("public_dataset", "licensed", "private_third_party", "crawled", "user", "synthetic", "other")


class FieldMapping(BaseModel):
    """Which raw column holds each record field."""

    model_config = ConfigDict(extra="forbid")
    text: str
    label: str | None = None
    owner: str | None = None
    id: str | None = None
    collected_at: str | None = None
    license: str | None = None
    consent: str | None = None
    consent_at: str | None = None
    tdm_reservation: str | None = None

    @cached_property
    def columns(self) -> frozenset[str]:
        """The raw columns the mapping names (a row's others go to ``extra``): once a datasheet, not once a row."""
        return frozenset(c for c in self.model_dump().values() if c)


class Datasheet(BaseModel):
    """A source's datasheet; see ``schemas/datasheet.schema.yaml`` for the reference."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str = Field(min_length=1)
    license: str = Field(min_length=1, description="SPDX id or 'unknown'")
    consent_basis: str = Field(min_length=1)
    consent: Literal["granted", "revoked", "unknown"] = "unknown"
    homepage: str | None = None
    collected_at: dt.date | dt.datetime | None = None
    notes: str | None = None
    format: Literal["jsonl", "csv", "parquet"] | None = None
    acquisition: Literal[ACQUISITIONS] | None = None
    languages: list[str] | None = None
    tdm_reservation: bool | None = None  # a machine-readable text-and-data-mining reservation (TDMRep, C2PA/CAWG)
    tdm_policy: str | None = None
    fields: FieldMapping

    @field_validator("license")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if any(c.isspace() for c in value.strip()):
            raise ValueError("must be an SPDX id such as CC-BY-4.0 or 'unknown', without spaces")
        return value.strip()


def parse_datasheet(text: str, where: str) -> tuple[Datasheet, str]:
    """Validate datasheet YAML; return it with its content hash.

    Raises:
        DatasheetError: naming the file and every invalid field.
    """
    sheet = parse_yaml_model(text, where, Datasheet, DatasheetError, "datasheet")
    return sheet, hashlib.sha256(text.encode()).hexdigest()[:16]


def load_datasheet(store: Store, source: str) -> tuple[Datasheet, str]:
    """Read and validate ``raw/<source>/source.yaml``; its ``name`` must equal the folder name."""
    key = layout.datasheet(source)
    if not store.exists(key):
        raise DatasheetError(f"{store.uri(key)}: missing datasheet; every source needs {layout.datasheet('<source>')}")
    if store.size(key) > 4 * MAX_YAML_CHARS:  # read nothing that could not be a datasheet (4: UTF-8 bytes a char)
        raise DatasheetError(f"{store.uri(key)}: datasheet of {store.size(key)} bytes is too large")
    sheet, digest = parse_datasheet(store.read_bytes(key).decode("utf-8", errors="replace"), store.uri(key))
    if sheet.name != source:
        raise DatasheetError(f"{store.uri(key)}: field 'name': {sheet.name!r} does not match folder {source!r}")
    return sheet, digest

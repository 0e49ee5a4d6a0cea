"""Provenance policies (``schemas/policies/*.yaml``): which records a purpose may train on.

A policy states the purpose, the licences allowed for it (SPDX ids, ``*`` as a suffix wildcard), the
consent rule, required fields, text length bounds, and an action per PII kind. It is validated on load — a
bad file raises ``PolicyError`` naming the field — and identified by a hash of its resolved content, which
is recorded on every validation result.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import Fatal
from tasks.pii import PII_KINDS
from tasks.schema import SCHEMA_DIR, record_schema
from tasks.yaml_models import parse_yaml_model

POLICY_DIR = SCHEMA_DIR / "policies"
DEFAULT_POLICY = POLICY_DIR / "commercial.yaml"
Action = Literal["reject", "redact", "allow"]


class PolicyError(Fatal):
    """The policy file is invalid; nothing was changed."""


class Licenses(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allowed: list[str] = Field(min_length=1)
    allow_unknown: bool = False


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    require_granted: bool = True


class Tdm(BaseModel):
    """Text-and-data-mining reservations (EU DSM Directive art. 4(3)): a reserved record is rejected."""

    model_config = ConfigDict(extra="forbid")
    respect_reservations: bool = True


class TextLength(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int = Field(default=1, ge=0)
    max: int = Field(default=1_000_000, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> TextLength:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class PiiRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Action = "reject"
    phone: Action = "reject"
    credit_card: Action = "reject"
    iban: Action = "reject"
    ip_address: Action = "redact"
    phone_region: str = Field(default="US", min_length=2, max_length=2)

    def kinds_with(self, action: str) -> set[str]:
        return {k for k in PII_KINDS if getattr(self, k) == action}


class Policy(BaseModel):
    """A resolved provenance policy."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    purpose: Literal["research", "commercial"]
    licenses: Licenses
    consent: Consent = Consent()
    tdm: Tdm = Tdm()
    required_fields: list[str] = Field(default_factory=lambda: ["record_id", "text", "license", "consent"])
    text_length: TextLength = TextLength()
    pii: PiiRules = PiiRules()

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        unknown = sorted(set(self.required_fields) - set(record_schema().names))
        if unknown:
            raise ValueError(f"required_fields: not record fields: {unknown}")
        if self.purpose == "commercial" and any(is_noncommercial(p) for p in self.licenses.allowed):
            raise ValueError("licenses.allowed: non-commercial (NC) licences are allowed for research only")
        return self

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]

    def license_allowed(self, spdx: str | None) -> bool:
        if spdx is None:
            return False
        if spdx == "unknown":
            return self.licenses.allow_unknown
        if self.purpose == "commercial" and is_noncommercial(spdx):
            return False
        return any(fnmatch.fnmatchcase(spdx, pattern) for pattern in self.licenses.allowed)


def is_noncommercial(spdx: str) -> bool:
    return "-NC" in spdx.upper()


def parse_policy(text: str, where: str) -> Policy:
    """Validate policy YAML; raises ``PolicyError`` naming the file and the invalid fields."""
    return parse_yaml_model(text, where, Policy, PolicyError, "policy")


def load_policy(path: str | Path | None = None) -> Policy:
    """Load a policy file (default ``schemas/policies/commercial.yaml``); a bare name looks in that folder."""
    path = Path(path) if path else DEFAULT_POLICY
    if not path.exists() and (POLICY_DIR / f"{path}.yaml").exists():
        path = POLICY_DIR / f"{path}.yaml"
    if not path.exists():
        builtin = sorted(p.stem for p in POLICY_DIR.glob("*.yaml"))
        raise PolicyError(f"{path}: policy file not found; built-in policies: {builtin}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:  # a folder, a binary file: a clear error, not a traceback
        raise PolicyError(f"{path}: cannot read the policy: {exc}") from exc
    return parse_policy(text, str(path))

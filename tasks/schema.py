"""Arrow schemas built from the JSON files in ``schemas/``; writers always pass one explicitly."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pyarrow as pa

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_TYPES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<string>": pa.list_(pa.string()),
}


@cache
def load_schema(name: str) -> pa.Schema:
    """The Arrow schema described by ``schemas/<name>.json``."""
    spec = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    fields = [pa.field(f["name"], _TYPES[f["type"]], nullable=f["nullable"], metadata={"doc": f["doc"]})
              for f in spec["fields"]]
    return pa.schema(fields, metadata={"name": spec["name"], "version": str(spec["version"])})


def record_schema() -> pa.Schema:
    return load_schema("record")


def quarantine_schema() -> pa.Schema:
    return load_schema("quarantine")

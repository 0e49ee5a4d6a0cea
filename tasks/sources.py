"""Sources: the folders under ``raw/`` and the data files delivered into them, each named by a file id.

Ingestion parses these files and a deletion purges rows from them, so both list them here, the same way.
"""

from __future__ import annotations

import hashlib
import re

from tasks import layout
from tasks.readers import detect_format
from tasks.storage import Store


def list_sources(store: Store) -> list[str]:
    """Names of the sources delivered so far (one folder each under ``raw/``)."""
    return store.list_dirs(layout.raw_dir())


def list_raw_files(store: Store, source: str) -> list[str]:
    """Keys of the data files of a source (the datasheet and unknown formats are not data)."""
    return [k for k in store.list(layout.raw_dir(source))
            if not layout.is_datasheet(k) and detect_format(k) is not None]


def file_id(source: str, key: str) -> str:
    """A partition name for a raw file: its path inside the source, made safe, plus a short hash (so two paths
    that the slug makes equal, or that are cut to the same 60 characters, still differ)."""
    rel = layout.raw_relative(source, key)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)[-60:]
    return f"{slug}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}"

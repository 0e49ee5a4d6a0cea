"""Sources: the folders under ``raw/`` and the data files delivered into them, each named by a file id.

Ingestion parses these files and a deletion purges rows from them, so both list them here, the same way. What
was delivered is not trusted: a folder whose name breaks the name rule (``tasks.names``), a file whose path is
no store key, and a symbolic link (to a folder, a datasheet or a file, which could point anywhere) are never
read or rewritten. :func:`readable_sources` says which, and why, so ingestion reports them and goes on.
"""

from __future__ import annotations

import hashlib
import re

from tasks import layout
from tasks.names import NAME_RULE, is_valid_name
from tasks.readers import detect_format
from tasks.storage import InvalidKey, Store, check_key

SYMLINK = "symlink"
INVALID_NAME = "invalid_name"
LINK_REFUSED = f"{SYMLINK}: a symbolic link under raw/ is never followed"


def _is_key(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKey:
        return False
    return True


def _refusal(store: Store, source: str) -> tuple[str, str] | None:
    """``(where, why)`` source ``source`` cannot be read, or None when it can."""
    if not is_valid_name(source):
        return f"{layout.RAW}/{source}", f"{INVALID_NAME}: source folder {source!r}: {NAME_RULE}"
    linked = store.link_in(layout.datasheet(source))  # the folder, or its datasheet
    return (linked, LINK_REFUSED) if linked is not None else None


def list_sources(store: Store) -> list[str]:
    """Names of the sources delivered so far that can be read (one folder each under ``raw/``; hidden folders
    are not sources); :func:`readable_sources` also says why the others cannot."""
    return [s for s in store.list_dirs(layout.raw_dir()) if not s.startswith(".") and _refusal(store, s) is None]


def readable_sources(store: Store, sources: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The sources to read (``sources``, default every folder under ``raw/``), and by raw key why each folder,
    link or file of them that is not read is refused (``invalid_name: ...``, ``symlink: ...``)."""
    links = store.links(layout.raw_dir())
    if sources is None:
        linked_folders = {key.split("/")[1] for key in links if key.count("/") == 1}
        sources = sorted({s for s in store.list_dirs(layout.raw_dir()) if not s.startswith(".")} | linked_folders)
    readable, refused = [], {}
    for source in sources:
        problem = _refusal(store, source)
        if problem is None:
            readable.append(source)
        else:
            refused[problem[0]] = problem[1]
    for source in readable:
        folder = layout.raw_dir(source) + "/"
        refused |= {key: LINK_REFUSED for key in links if key.startswith(folder)}
        refused |= {key: f"{INVALID_NAME}: {key!r} is not a store key (a backslash)"
                    for key in store.list(layout.raw_dir(source)) if not _is_key(key)}
    return readable, refused


def list_raw_files(store: Store, source: str) -> list[str]:
    """Keys of the data files of a source (the datasheet, unknown formats, links and paths that are no store key
    are not data)."""
    return [k for k in store.list(layout.raw_dir(source))
            if _is_key(k) and not layout.is_datasheet(k) and detect_format(k) is not None]


def file_id(source: str, key: str) -> str:
    """A partition name for a raw file: its path inside the source, made safe, plus a short hash (so two paths
    that the slug makes equal, or that are cut to the same 60 characters, still differ)."""
    rel = layout.raw_relative(source, key)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)[-60:]
    return f"{slug}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}"

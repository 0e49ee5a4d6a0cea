"""The store: one root URL (file:// or s3://) with atomic writes and Parquet/JSON helpers over fsspec.

Every stage reads and writes through ``Store`` using keys relative to the root (``records/source=x/...``),
so the same code runs on a laptop directory and on an S3 bucket. Writes are atomic: local files are written
beside their target and renamed; object stores get one PUT. Nothing is pickled: tables are Parquet,
documents JSON.

Every key stays inside the root: an absolute key, a ``..``, ``.`` or empty segment, a backslash or a NUL is
refused before any I/O (``InvalidKey``), behind the name checks of ``tasks.names``. On a local root, a symbolic
link below the root is never listed, never read or written through and never replaced: :meth:`Store.links`
reports them, so a delivered link to a file elsewhere is refused, not ingested or rewritten by a purge.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import uuid
from collections.abc import Iterable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.config import Settings, get_settings
from tasks.errors import Fatal
from tasks.parquet_encoding import parquet_bytes

Buffer = bytes | memoryview | pa.Buffer  # bytes-like: what a file write takes


class InvalidKey(Fatal):
    """A key that would leave the storage root, or a read or write through a symbolic link."""


def check_key(key: str) -> str:
    """``key`` unchanged when it is relative to the root and normalised (a trailing ``/`` is allowed).

    Raises:
        InvalidKey: absolute, a ``..``, ``.`` or empty segment, a backslash or a NUL.
    """
    if not isinstance(key, str) or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"store key {key!r} is not relative to the root (absolute, backslash or NUL)")
    if key and any(part in ("", ".", "..") for part in key.removesuffix("/").split("/")):
        raise InvalidKey(f"store key {key!r} is not normalised (an empty, '.' or '..' segment)")
    return key


class Store:
    """A storage root plus the operations stages need; picklable so Dask can ship it to workers."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.protocol, _ = fsspec.core.split_protocol(self.url)
        self.protocol = self.protocol or "file"
        self._fs: fsspec.AbstractFileSystem | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Store:
        settings = settings or get_settings()
        return cls(settings.store_url, settings.storage_options)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["options"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            self._fs = fsspec.filesystem(self.protocol, **self.options)
        return self._fs

    @property
    def root(self) -> str:
        """Root as an fsspec path (no protocol)."""
        return fsspec.core.strip_protocol(self.url) if self.protocol == "file" else self.url.split("://", 1)[1]

    def path(self, key: str) -> str:
        """The fsspec path of ``key``; every operation goes through here, so no key leaves the root."""
        return posixpath.join(self.root, check_key(key)) if key else self.root

    def uri(self, key: str) -> str:
        """Full URL of a key, for messages and lineage."""
        return f"{self.url}/{key}" if key else self.url

    def key_of(self, path: str) -> str:
        """Inverse of :meth:`path`: the key of an fsspec path under the root (a plain cut when the path starts with
        it, as a listing's do: ``relpath`` cost ~30 us an entry, a tenth of a listing of 3,000 ledger files)."""
        path = fsspec.core.strip_protocol(path) if "://" in path else path
        root = self.root.rstrip("/") + "/"
        return path[len(root):] if path.startswith(root) and "/." not in path else posixpath.relpath(path, self.root)

    # -- listing ------------------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def list(self, prefix: str, suffix: str = "") -> list[str]:
        """Keys of all files under ``prefix`` (recursive), sorted, filtered by ``suffix``; links left out."""
        return [key for key, link, *_ in self._entries(prefix) if not link and key.endswith(suffix)]

    def sizes(self, prefix: str, suffix: str = "") -> dict[str, int]:
        """:meth:`list` with each file's size, from the same listing (one request on an object store)."""
        return {key: size for key, link, size, _ in self._entries(prefix) if not link and key.endswith(suffix)}

    def versions(self, prefix: str) -> dict[str, str]:
        """Each file under ``prefix`` -> its version, from one listing: what changes whenever the file is written
        again (its size, and locally its inode and modification time, as every write replaces the file; on an
        object store its ETag, a hash of the content, or else its modification time)."""
        return {key: version for key, link, _, version in self._entries(prefix) if not link}

    def version(self, key: str) -> str | None:
        """One file's :meth:`versions` entry; None when there is no such file. Asked afresh (an object store's
        client would otherwise answer from a listing it cached)."""
        path = self._unlinked(key)
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        return _version(info)

    def links(self, prefix: str) -> list[str]:
        """Keys of the symbolic links under ``prefix`` (itself, when it or a folder above it is one), which
        :meth:`list` leaves out and does not follow; object stores have none."""
        return [key for key, link, *_ in self._entries(prefix) if link]

    def _entries(self, prefix: str) -> list[tuple[str, bool, int, str]]:
        """``(key, is a link, size, version)`` of every entry under ``prefix``, hidden ones left out."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        linked = self.link_in(prefix)
        if linked is not None:  # listing would follow it
            return [(linked, True, 0, "")]
        self.fs.invalidate_cache()
        found = self.fs.find(base, detail=True)
        entries = [(self.key_of(p), bool(info.get("islink")), int(info.get("size") or 0), _version(info))
                   for p, info in found.items()]
        return sorted(e for e in entries if "/." not in "/" + e[0])

    def link_in(self, key: str) -> str | None:
        """The key of the first folder or file from the root down to ``key`` that is a symbolic link; None if
        there is none (or the store is not local). The root itself may be a link: it is the user's choice."""
        if self.protocol != "file" or not key:
            return None
        parts = check_key(key).removesuffix("/").split("/")
        for depth in range(1, len(parts) + 1):
            if os.path.islink(posixpath.join(self.root, *parts[:depth])):
                return "/".join(parts[:depth])
        return None

    def _unlinked(self, key: str) -> str:
        """The path of ``key`` for a read, a write or a delete: never through (or of) a symbolic link."""
        linked = self.link_in(key)
        if linked is not None:
            raise InvalidKey(f"{self.uri(key)}: {linked!r} is a symbolic link; the store never follows one")
        return self.path(key)

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-directories of ``prefix``."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        self.fs.invalidate_cache()
        entries = self.fs.ls(base, detail=True)
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    def size(self, key: str) -> int:
        return int(self.fs.size(self.path(key)))

    def modified(self, key: str) -> dt.datetime:
        """Last modification time of a file (local mtime, or the object's LastModified), in UTC."""
        info = self.fs.info(self.path(key))
        stamp = info.get("mtime", info.get("LastModified", info.get("created")))
        if isinstance(stamp, dt.datetime):
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
        return dt.datetime.fromtimestamp(float(stamp), tz=dt.UTC)

    # -- bytes --------------------------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._unlinked(key))

    def open(self, key: str, mode: str = "rb") -> Any:
        return self.fs.open(self._unlinked(key), mode)

    def random_access(self, key: str, whole: bool = False) -> pa.NativeFile:
        """An Arrow file of ``key`` to read parts of: read ``whole`` in one request (one sequential read of a local
        file: mapped, a copy index not in the page cache took 48 ms to read through, against 17), else
        memory-mapped on a local root (only the pages read are read) or opened for range reads."""
        if whole:
            return pa.BufferReader(self.read_bytes(key))
        if self.protocol == "file":
            return pa.memory_map(self._unlinked(key))
        return pa.PythonFile(self.open(key), mode="r")

    def write_bytes(self, key: str, data: Buffer) -> str:
        """Write atomically: readers see the old object or the whole new one, never a partial file."""
        return self.write_parts(key, [data])

    def write_parts(self, key: str, parts: Iterable[Buffer]) -> str:
        """Write ``parts`` end to end, atomically (``write_bytes``), locally one after another: a purge's new files
        are mostly views of the old (``tasks.splice``), and joining 10-20 MB into fresh memory cost more."""
        target = self._unlinked(key)
        if self.protocol == "file":
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = _beside(target)
            with open(tmp, "wb") as fh:
                fh.writelines(parts)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, b"".join(parts))  # a single PUT is atomic on object stores
        return self.uri(key)

    def write_same(self, key: str, like: str) -> str:
        """Make ``key`` hold the bytes ``like`` holds, atomically (``write_bytes``), without writing them again:
        locally a hard link to ``like``'s file renamed into place (every write replaces a file whole, ``patch`` one
        with two names too, so the two part when either is next written), on an object store a server-side copy
        (a purge giving records staging's new bytes wrote 11 MB a partition less)."""
        source, target = self._unlinked(like), self._unlinked(key)
        if self.protocol != "file":
            self.fs.copy(source, target)
            return self.uri(key)
        tmp = _beside(target)
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links
            return self.write_bytes(key, self.read_bytes(like))
        os.replace(tmp, target)
        return self.uri(key)

    def patch(self, key: str, patches: list[tuple[int, bytes]]) -> str:
        """Overwrite byte ranges of ``key`` in place, then fsync (not atomic: callers order patches so that a re-run
        finishes a pass cut short); a file with another name (``write_same``), or an object, is written whole."""
        target = self._unlinked(key)
        if self.protocol != "file" or os.stat(target).st_nlink > 1:
            data = bytearray(self.read_bytes(key))
            for offset, chunk in patches:
                data[offset:offset + len(chunk)] = chunk
            return self.write_bytes(key, data)
        with open(target, "r+b") as fh:
            for offset, chunk in patches:
                os.pwrite(fh.fileno(), chunk, offset)
            os.fsync(fh.fileno())
        return self.uri(key)

    def write_new(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if absent; returns False when it already existed (local: O_EXCL)."""
        target = self._unlinked(key)
        if self.protocol != "file":
            if self.exists(key):
                return False
            self.write_bytes(key, data)
            return True
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)  # atomic create-if-absent with the full content
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def delete(self, key: str, recursive: bool = False) -> None:
        if self.exists(key):
            self.fs.rm(self._unlinked(key), recursive=recursive)

    # -- documents and tables -----------------------------------------------------------------------------
    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, obj: Any) -> str:
        return self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def write_parquet(self, key: str, table: pa.Table, schema: pa.Schema | None = None,
                      group_rows: int | None = None) -> str:
        """Write a table with an explicit schema (inferred schemas drift between shards), in row groups of
        ``group_rows`` (``layout.GROUP_ROWS`` unless given)."""
        return self.write_bytes(key, parquet_bytes(table, schema, group_rows))

    def write_if_changed(self, key: str, data: bytes) -> bool:
        """Write ``data`` unless ``key`` already holds exactly it (its version then still names its content, so
        what was decided from it stands); returns whether it wrote."""
        if self.exists(key) and self.read_bytes(key) == data:
            return False
        self.write_bytes(key, data)
        return True

    def read_parquet(self, key: str, columns: list[str] | None = None) -> pa.Table:
        """Read in this thread (Arrow's reader threads on a Python file object outlived the read and aborted the
        process at exit, apache/arrow#34314): a whole table from the file's bytes in one read; some columns from a
        mapping of a local file, not a Python file object (a call and a syscall a column chunk: 78,000 chunks of
        band columns took a 10M delivery's clustering 41-43 s that way, 37 s mapped)."""
        if columns is None:
            return pq.read_table(pa.BufferReader(self.read_bytes(key)), use_threads=False)
        with self.random_access(key) as fh:  # mapped on a local root: a column chunk a read would be a syscall each
            return pq.read_table(fh, columns=columns, use_threads=False, pre_buffer=False)

    def parquet_rows(self, key: str) -> int:
        """A Parquet file's row count, from its footer (0 when there is no such file)."""
        if not self.exists(key):
            return 0
        with self.open(key) as fh:
            return pq.ParquetFile(fh).metadata.num_rows

    def read_parquets(self, prefix: str, columns: list[str] | None = None,
                      schema: pa.Schema | None = None) -> pa.Table:
        """Concatenate every Parquet file under ``prefix``; an empty table of ``schema`` if there are none."""
        tables = [self.read_parquet(k, columns) for k in self.list(prefix, ".parquet")]
        if not tables:
            if schema is None:
                return pa.table({})
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        return pa.concat_tables(tables, promote_options="default")

    def ensure_bucket(self) -> None:
        """Create the root directory or bucket if it does not exist yet."""
        if self.protocol == "file":
            os.makedirs(self.root, exist_ok=True)
        elif not self.fs.exists(self.root.split("/", 1)[0]):
            self.fs.mkdir(self.root.split("/", 1)[0])


def _beside(target: str) -> str:
    """A hidden temporary path in ``target``'s folder (listings leave it out), renamed over ``target`` once whole."""
    return os.path.join(os.path.dirname(target), f".tmp-{uuid.uuid4().hex}-{os.path.basename(target)}")


def _version(info: dict[str, Any]) -> str:
    """What a listing or a file's info says changes when the file is written again (``Store.versions``)."""
    stamp = info.get("mtime", info.get("LastModified", ""))
    written = info["ETag"] if "ETag" in info else f"{info.get('ino', '')}:{stamp}"
    return f"{int(info.get('size') or 0)}:{written}"

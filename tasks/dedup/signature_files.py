"""A staging partition's MinHash band keys (``layout.signatures``): what clustering buckets its rows by.

An Arrow IPC file of one record batch: each staged row's ``record_key`` (``tasks.ids.record_id_keys``) and its LSH
band keys, one column per band (clustering maps the file and reads one band of the store at a time), all uint64.
It holds no text, id, hash or source: clustering reads those from staging, whose rows these are, in order. Every
value is fixed-width and uncompressed, so a purge blanks a deleted row where it is (``blank_signatures``: its
keys set to 0, which no row has) and writes 8 bytes a column; as Parquet, a purge wrote the partition's 17.6 MB
again (100k rows). The rows not blanked are staging's: a file missing, damaged, of the Parquet layout of stores
before 2026-12-06, or out of line with staging is made again from staging's texts (``live_rows``).

The signatures themselves are not kept: only candidate pairs' are needed, and those are made again from staging's
texts (``tasks.dedup.sharded``); kept, they took 4x the raw text.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tasks import layout
from tasks.dedup.minhash import MinhashConfig, band_keys, signatures
from tasks.ids import record_id_keys
from tasks.storage import Store
from tasks.tables import bucketed_ipc_bytes, ipc_reader, patches, view_offset


def band_column(band: int) -> str:
    return f"band_{band}"


def signature_schema(cfg: MinhashConfig) -> pa.Schema:
    """A signature file's columns: ``record_key``, then one of band keys per band."""
    return pa.schema([pa.field("record_key", pa.uint64(), nullable=False),
                      *[pa.field(band_column(b), pa.uint64(), nullable=False) for b in range(cfg.banding[0])]])


def signature_batch(record_ids: pa.Array | pa.ChunkedArray, sigs: np.ndarray, cfg: MinhashConfig) -> pa.RecordBatch:
    """The signature rows of staged records (their ids, and their signatures ``(n, num_perm)``)."""
    columns = [record_id_keys(record_ids), *band_keys(sigs, cfg).T]
    return pa.RecordBatch.from_arrays([pa.array(np.ascontiguousarray(c), pa.uint64()) for c in columns],
                                      schema=signature_schema(cfg))


def write_signatures(store: Store, source: str, fid: str, record_ids: pa.Array | pa.ChunkedArray,
                     sigs: np.ndarray, cfg: MinhashConfig) -> str:
    """Write a staging partition's signature file (ingest's parse step, beside staging)."""
    batch = signature_batch(record_ids, sigs, cfg)
    return store.write_bytes(layout.signatures(source, fid), bucketed_ipc_bytes(batch, np.array([0, batch.num_rows])))


def read_column(store: Store, source: str, fid: str, name: str) -> np.ndarray | None:
    """One column of a partition's signature file, every row (blanked ones too; mapped on a local root, only its
    ranges read on an object store); None when the file is missing, damaged or not of this layout."""
    key = layout.signatures(source, fid)
    if not store.exists(key):
        return None
    with store.random_access(key) as fh:
        opened = ipc_reader(fh, 1)
        position = opened.schema.get_field_index(name) if opened is not None else -1
        reader = ipc_reader(fh, 1, [position]) if position >= 0 else None
        return reader.get_batch(0).column(0).to_numpy() if reader is not None else None


def live_rows(store: Store, source: str, fid: str, record_ids: pa.ChunkedArray, cfg: MinhashConfig) -> np.ndarray:
    """The rows of a partition's signature file holding its staged rows ``record_ids``, in order: those no purge
    blanked. The file is made again from staging first when it does not line up with them (missing, damaged, of
    the Parquet layout, whose file then goes, or of another ingest)."""
    keys, wanted = read_column(store, source, fid, "record_key"), record_id_keys(record_ids)
    if keys is not None:
        live = np.flatnonzero(keys != 0)
        if np.array_equal(keys[live], wanted):
            return live
    staged = store.read_parquet(layout.staging(source, fid), ["record_id", "text"])
    write_signatures(store, source, fid, staged.column("record_id"), signatures(staged.column("text"), cfg), cfg)
    store.delete(layout.dedup_part(layout.SIGNATURES, source, fid))
    return np.arange(staged.num_rows)


def blank_signatures(store: Store, source: str, fid: str, ids: set[str]) -> int:
    """Blank the deleted records' rows (by id) of a partition's signature file in place (``Store.patch``): their
    band keys, then their record keys, set to 0, so a pass cut short finds them again by their keys; returns how
    many. A file that cannot be patched (damaged, or of another layout) goes, to be made again from the purged
    staging (``live_rows``); a Parquet one of an older store is spliced with the partition's other files."""
    key = layout.signatures(source, fid)
    if not ids or not store.exists(key):
        return 0
    with store.random_access(key, whole=store.protocol != "file") as fh:
        blanks, count = _blanks(fh.read_buffer(), ids)  # locally a view of the file's mapping: only what is used
    if blanks is None:
        store.delete(key)
    elif count:
        store.patch(key, [patch for column in blanks[1:] for patch in column])  # bands first, keys last
        store.patch(key, blanks[0])
    return count


def _blanks(data: pa.Buffer, ids: set[str]) -> tuple[list[list[tuple[int, bytes]]] | None, int]:
    """Per column (``record_key`` first), the patches blanking the rows of ``ids`` in a signature file's bytes
    ``data``, and how many rows they are; no patches when the file cannot be patched."""
    reader = ipc_reader(pa.BufferReader(data), 1)
    batch = reader.get_batch(0) if reader is not None else None
    if batch is None or batch.schema.names[:1] != ["record_key"]:
        return None, 0
    keys = batch.column(0).to_numpy()
    hit = np.flatnonzero(np.isin(keys, record_id_keys(sorted(ids))) & (keys != 0))
    starts = [view_offset(data, column) for column in batch.columns]
    if None in starts:
        return None, len(hit)
    zeros = np.zeros(len(hit), "<u8")
    return [patches(start + 8 * hit, zeros) for start in starts], len(hit)

"""Small Arrow helpers shared by stages."""

from __future__ import annotations

import io
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.splice import group_encoder, group_sizes, kept_per_group, spliced_parts
from tasks.storage import Buffer


def one_of(values: pa.Array | pa.ChunkedArray, wanted: pa.Array) -> pa.Array | pa.ChunkedArray:
    """Which of ``values`` are among ``wanted``, as a mask (a null is never among them)."""
    return pc.fill_null(pc.is_in(values, value_set=wanted), False)


def rows_with(table: pa.Table, column: str, values: Iterable[str] | pa.Array) -> pa.Table:
    """Rows of ``table`` whose ``column`` is one of ``values`` (nulls never match)."""
    wanted = values if isinstance(values, pa.Array) else pa.array(sorted(values), pa.string())
    return table.filter(one_of(table.column(column), wanted))


def without_ids(table: pa.Table, ids: Iterable[str], column: str = "record_id") -> pa.Table:
    """Rows of ``table`` whose ``column`` is not in ``ids`` (nulls are kept)."""
    ids = list(ids)
    if not ids or table.num_rows == 0:
        return table
    return table.filter(pc.invert(one_of(table.column(column), pa.array(ids, pa.string()))))


def join_on_id(left: pa.Table, right: pa.Table, column: str = "record_id") -> pa.Table:
    """Inner join by ``column`` that also works for list columns (Arrow's hash join does not carry them)."""
    idx = pc.index_in(left.column(column), value_set=right.column(column))
    found = pc.is_valid(idx)
    left = left.filter(found)
    taken = right.drop([column]).take(pc.drop_null(idx))
    for name in taken.column_names:
        left = left.append_column(name, taken.column(name))
    return left


def bucketed_ipc_bytes(batch: pa.RecordBatch, bounds: np.ndarray) -> pa.Buffer:
    """``batch`` (sorted by bucket; ``bounds``, each bucket's first row and the end) as an Arrow IPC file of one
    record batch per bucket, empty ones too, so batch ``b`` is bucket ``b``: a look-up maps (or range-reads) only
    its buckets' batches, and a rewrite is a copy of the arrays, with no encoding. Dictionaries are written once."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        for start, stop in pairwise(bounds.tolist()):
            writer.write_batch(batch.slice(start, stop - start))
    return sink.getvalue()  # written as it is: a copy into Python bytes cost a fresh 18 MB for a copy index


def ipc_reader(source: pa.NativeFile, batches: int, fields: list[int] | None = None
               ) -> pa.ipc.RecordBatchFileReader | None:
    """A bucketed IPC file opened, or None when it is not one of ``batches`` batches (corrupt, cut short, or of
    another layout). The indexes are derived data: a caller rebuilds one or looks everywhere instead, so a damaged
    index never keeps a deletion from finishing (it raised, and the request stayed pending at every retry)."""
    try:
        reader = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=fields))  # only their bytes
    except (pa.ArrowInvalid, OSError):
        return None
    return reader if reader.num_record_batches == batches else None


def ipc_buckets(reader: pa.ipc.RecordBatchFileReader, buckets: list[int]) -> tuple[dict[str, pa.Array], np.ndarray]:
    """The rows of (at least) ``buckets`` (sorted) of a file ``bucketed_ipc_bytes`` wrote, each column laid end to
    end (a dictionary column keeps the file's one dictionary), and their row offsets (the buckets not read empty):
    what was read, with the bounds to write it back. When most buckets are asked for, the file is read as one
    table, every bucket then: batch by batch, a thousand batches' columns took 3-4x as long (24 ms against 7 for a
    copy index of 2.1M rows)."""
    if reads_whole(len(buckets), reader.num_record_batches):
        table = reader.read_all()
        if table.num_columns and table.column(0).num_chunks == reader.num_record_batches:
            sizes = np.array([len(chunk) for chunk in table.column(0).chunks], np.int64)
            columns = {name: _joined(table.column(name).chunks) for name in table.column_names}
            return columns, np.r_[0, np.cumsum(sizes)]
    batches = [reader.get_batch(b) for b in buckets]
    sizes = np.zeros(reader.num_record_batches, np.int64)
    sizes[buckets] = [b.num_rows for b in batches]
    columns = {name: _joined([b.column(name) for b in batches]) for name in reader.schema.names}
    return columns, np.r_[0, np.cumsum(sizes)]


def _joined(chunks: list[pa.Array]) -> pa.Array:
    """Arrays laid end to end; dictionary arrays by their indices, under the first one's dictionary (one file's
    batches share theirs, and comparing it a thousand times would cost more than the read)."""
    if not chunks:
        return pa.array([])
    if pa.types.is_dictionary(chunks[0].type):
        return pa.DictionaryArray.from_arrays(pa.concat_arrays([c.indices for c in chunks]), chunks[0].dictionary)
    return pa.concat_arrays(chunks)


def top_bits(keys: np.ndarray, bits: int) -> np.ndarray:
    """Each uint64 key's top ``bits`` bits: its bucket in a bucketed IPC file (keys are hashes: buckets are even)."""
    return (keys >> np.uint64(64 - bits)).astype(np.int64)


def bucket_bounds(buckets: np.ndarray, count: int) -> np.ndarray:
    """Each of ``count`` buckets' first row and the end, for rows sorted by their ``buckets``."""
    return np.searchsorted(buckets, np.arange(count + 1))


def view_offset(data: pa.Buffer, array: pa.Array) -> int | None:
    """Where in ``data`` (an IPC file's bytes) the values of a fixed-width ``array`` read zero-copy from it begin,
    for ``Store.patch`` (0 for an empty one: nothing to patch); None when the array is not a view of them."""
    if not len(array):
        return 0
    width = array.type.bit_width // 8
    start = array.buffers()[1].address - data.address + width * array.offset
    return start if 0 <= start <= data.size - width * len(array) else None


def patches(offsets: np.ndarray, values: np.ndarray) -> list[tuple[int, bytes]]:
    """``(offset, bytes)`` writing fixed-width ``values`` at ``offsets`` (ascending), one patch a run of adjacent
    values (``Store.patch``)."""
    ends = np.r_[0, np.flatnonzero(np.diff(offsets) != values.dtype.itemsize) + 1, len(offsets)].tolist()
    return [(int(offsets[lo]), values[lo:hi].tobytes()) for lo, hi in pairwise(ends) if hi > lo]


def reads_whole(buckets: int, count: int) -> bool:
    """Whether a look-up of ``buckets`` of a file's ``count`` reads the file in one piece (``WHOLE_READ_SHARE``)."""
    return buckets * WHOLE_READ_SHARE >= count


def kept_bounds(bounds: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Bucket offsets (``ipc_buckets``) once only the rows ``kept`` marks remain: each offset less the rows removed
    before it. A purge removes a few rows of millions, so the removed rows are counted, not the kept (a running sum
    over every row took 47 ms a copy index, a quarter of its purge)."""
    return bounds - np.searchsorted(np.flatnonzero(~kept), bounds)


def _parquet(source: Any) -> pq.ParquetFile:
    return source if isinstance(source, pq.ParquetFile) else pq.ParquetFile(source)


# a look-up that needs a quarter (1 / WHOLE_READ_SHARE) or more of a bucketed file's buckets reads it in one piece:
# a thousand deletions' keys fall in nearly every bucket, and a thousand small reads cost more than one whole
WHOLE_READ_SHARE = 4


def _encoding_of(meta: pq.FileMetaData) -> dict[str, Any]:
    """The codec and dictionary use of each column as a file was written (its first row group's), as
    ``ParquetWriter`` arguments, so a rewrite keeps them; zstd with dictionaries for a file with no row group."""
    if not meta.num_row_groups:
        return {"compression": "zstd"}
    columns = [meta.row_group(0).column(j) for j in range(meta.num_columns)]
    return {"compression": {c.path_in_schema: "none" if c.compression == "UNCOMPRESSED" else c.compression.lower()
                            for c in columns},
            "use_dictionary": [c.path_in_schema for c in columns if c.has_dictionary_page]}


def filtered_parts(data: Buffer, keep: np.ndarray) -> list[Buffer]:
    """A Parquet file with only the rows ``keep`` marks, as pieces to write end to end (``Store.write_parts``; most
    are views of ``data``), every row group kept where it was, emptied ones too: row groups are addresses (the
    staging groups the copy index names), so removing rows must not move the others between groups. Only the groups
    that lose rows are encoded again (``tasks.splice``), unless the file cannot be spliced; then it is read and
    filtered once and written group by group."""
    parquet = pq.ParquetFile(pa.BufferReader(data))
    options = _encoding_of(parquet.metadata)
    spliced = spliced_parts(parquet, data, keep, group_encoder(parquet.schema_arrow, options))
    return spliced if spliced is not None else [_rewritten(parquet, keep, options)]


def _rewritten(parquet: pq.ParquetFile, keep: np.ndarray, options: dict[str, Any]) -> bytes:
    sink = io.BytesIO()
    sizes = group_sizes(parquet.metadata)
    kept = parquet.read(use_threads=False).filter(pa.array(keep, pa.bool_()))
    with pq.ParquetWriter(sink, parquet.schema_arrow, **options) as writer:
        start = 0
        for rows, left in zip(sizes, kept_per_group(sizes, keep), strict=True):
            writer.write_table(kept.slice(start, left), row_group_size=max(1, rows))
            start += left
    return sink.getvalue()


def group_of_rows(source: Any) -> np.ndarray:
    """Each row's row group in a Parquet file (open file or ``ParquetFile``), from its footer alone."""
    meta = _parquet(source).metadata
    return np.repeat(np.arange(meta.num_row_groups, dtype=np.uint32), group_sizes(meta))


def rows_with_ids(source: Any, wanted: pa.Array, columns: list[str] | None, ids: pa.ChunkedArray | None = None,
                  column: str = "record_id") -> pa.Table:
    """The rows of a Parquet file (open file or ``ParquetFile``) whose ``column`` is one of ``wanted``, with
    ``columns`` (None: all): the id column (``ids``, when the caller has it already) says which rows, and only the
    row groups holding them are read. A handful of ids out of a partition's 100k sit in a few of its ~50 groups:
    reading whole partitions for their texts took a thousand deletions' vaults 6 s at 10M records."""
    parquet = _parquet(source)
    ids = parquet.read([column], use_threads=False).column(column) if ids is None else ids
    rows = pc.indices_nonzero(one_of(ids, wanted)).to_numpy()
    read = list(dict.fromkeys([column, *(parquet.schema_arrow.names if columns is None else columns)]))
    if not len(rows):
        return parquet.schema_arrow.empty_table().select(read)
    groups = np.unique(group_of_rows(parquet)[rows]).tolist()
    table = parquet.read_row_groups(groups, read, use_threads=False)
    return rows_with(table, column, wanted)

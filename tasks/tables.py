"""Small Arrow helpers shared by stages."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.storage import repeating_columns


def without_ids(table: pa.Table, ids: Iterable[str], column: str = "record_id") -> pa.Table:
    """Rows of ``table`` whose ``column`` is not in ``ids`` (nulls are kept)."""
    ids = list(ids)
    if not ids or table.num_rows == 0:
        return table
    hit = pc.fill_null(pc.is_in(table.column(column), value_set=pa.array(ids, pa.string())), False)
    return table.filter(pc.invert(hit))


def join_on_id(left: pa.Table, right: pa.Table, column: str = "record_id") -> pa.Table:
    """Inner join by ``column`` that also works for list columns (Arrow's hash join does not carry them)."""
    idx = pc.index_in(left.column(column), value_set=right.column(column))
    found = pc.is_valid(idx)
    left = left.filter(found)
    taken = right.drop([column]).take(pc.drop_null(idx))
    for name in taken.column_names:
        left = left.append_column(name, taken.column(name))
    return left


GROUP_BUCKETS = b"group_buckets"  # a bucketed file's metadata: each row group's bucket (uint16, in order)


def bucketed_bytes(table: pa.Table, bucket: str = "bucket", hashes: Iterable[str] = ()) -> bytes:
    """``table`` (sorted by its integer ``bucket`` column) as Parquet with one row group per bucket, so a look-up
    reads the footer and only the row groups of the buckets it needs (``bucket_groups``, ``read_buckets``); each
    group's bucket is also kept in the file's metadata, so a look-up need not walk 1,024 groups' statistics.
    Columns of ``hashes`` (random bits: no codec or dictionary shrinks them) are stored plain, which reads and
    writes them several times faster, and columns whose values repeat take a dictionary and no codec: in a
    thousand small row groups a codec's per-chunk cost outweighed what it saved (a copy index rewritten 30% faster,
    no larger). ``filtered_bytes`` keeps each column's encoding when it rewrites the file."""
    sink = io.BytesIO()
    values = table.column(bucket).to_numpy()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]).tolist() if len(values) else [0]
    groups = values[starts].astype(np.uint16).tobytes() if len(values) else b""
    schema = table.schema.with_metadata({**(table.schema.metadata or {}), GROUP_BUCKETS: groups})
    plain = set(hashes)
    dictionary = [n for n in repeating_columns(table) if n not in plain]
    codecs = {name: "none" if name in plain or name in dictionary else "zstd" for name in table.column_names}
    with pq.ParquetWriter(sink, schema, compression=codecs, use_dictionary=dictionary) as writer:
        for start, stop in zip(starts, [*starts[1:], len(values)], strict=True):
            writer.write_table(table.slice(start, stop - start))  # an empty table: one empty row group
    return sink.getvalue()


def bucketed_ipc_bytes(batch: pa.RecordBatch, bounds: np.ndarray) -> bytes:
    """``batch`` (sorted by bucket; ``bounds``, each bucket's first row and the end) as an Arrow IPC file of one
    record batch per bucket, empty ones too, so batch ``b`` is bucket ``b``: a look-up maps (or range-reads) only
    its buckets' batches, and a rewrite is a copy of the arrays, with no encoding. Dictionaries are written once."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        for start, stop in pairwise(bounds.tolist()):
            writer.write_batch(batch.slice(start, stop - start))
    return sink.getvalue().to_pybytes()


def ipc_buckets(reader: pa.ipc.RecordBatchFileReader, buckets: list[int]) -> tuple[list[pa.RecordBatch], np.ndarray]:
    """The batches of ``buckets`` (sorted) of a file ``bucketed_ipc_bytes`` wrote, and the row offsets they have
    when laid end to end (the other buckets empty): what was read, with the bounds to write it back."""
    batches = [reader.get_batch(b) for b in buckets]
    sizes = np.zeros(reader.num_record_batches, np.int64)
    sizes[buckets] = [b.num_rows for b in batches]
    return batches, np.r_[0, np.cumsum(sizes)]


def kept_bounds(bounds: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Bucket offsets (``ipc_buckets``) once only the rows ``kept`` marks remain."""
    return np.r_[0, np.cumsum(kept)][bounds]


def _parquet(source: Any) -> pq.ParquetFile:
    return source if isinstance(source, pq.ParquetFile) else pq.ParquetFile(source)


def bucket_groups(source: Any) -> dict[int, list[int]]:
    """Bucket -> the row groups that may hold it, by each group's min and max bucket (its first column): one group
    per bucket in a file ``bucketed_bytes`` wrote; any other layout (a file rewritten whole) still reads right.
    ``source``: an open file, or a ``ParquetFile`` already read (its footer is not read again)."""
    parquet = _parquet(source)
    meta, out = parquet.metadata, {}
    kept = (parquet.schema_arrow.metadata or {}).get(GROUP_BUCKETS)
    if kept is not None and len(kept) == 2 * meta.num_row_groups:  # as written (a purge keeps every group)
        for group, bucket in enumerate(np.frombuffer(kept, np.uint16).tolist()):
            out.setdefault(bucket, []).append(group)
        return out
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(0).statistics
        if meta.row_group(i).num_rows and stats is not None and stats.has_min_max:
            for bucket in range(stats.min, stats.max + 1):
                out.setdefault(bucket, []).append(i)
    return out


def groups_of(groups: dict[int, list[int]], buckets: Iterable[int]) -> list[int]:
    """The row groups (sorted) that may hold any of ``buckets``, by a ``bucket_groups`` map."""
    return sorted({g for b in set(buckets) for g in groups.get(b, ())})


# a read of this share of a file's row groups or more reads the file in one piece: a thousand deletions' keys fall
# in nearly every bucket, and 1,024 column-chunk reads of a copy index took 3x as long as one read of it whole
WHOLE_READ_SHARE = 4


def whole_if_wide(parquet: pq.ParquetFile, groups: list[int], load: Callable[[], bytes]) -> pq.ParquetFile:
    """``parquet``, or the same file read in one piece (``load``: its bytes) when ``groups`` are a large share of
    its row groups."""
    if len(groups) * WHOLE_READ_SHARE < parquet.num_row_groups:
        return parquet
    return pq.ParquetFile(pa.BufferReader(load()))


def read_buckets(source: Any, groups: dict[int, list[int]], buckets: Iterable[int], columns: list[str],
                 load: Callable[[], bytes] | None = None) -> pa.Table | None:
    """The rows of ``buckets`` (None when the file has none of them); ``source`` as for ``bucket_groups``; with
    ``load`` (the file's bytes), a read of many buckets reads the file in one piece (``whole_if_wide``)."""
    wanted = set(buckets)
    read = groups_of(groups, wanted)
    if not read:
        return None
    parquet = _parquet(source)
    parquet = whole_if_wide(parquet, read, load) if load else parquet
    table = parquet.read_row_groups(read, columns=list(dict.fromkeys(["bucket", *columns])), use_threads=False)
    mine = pc.is_in(table.column("bucket"), value_set=pa.array(sorted(wanted), table.schema.field("bucket").type))
    if not pc.all(mine).as_py():  # a row group holding other buckets too (a file not laid out by bucket)
        table = table.filter(mine)
    return table.select(columns)


def rows_matching(source: Any, groups: list[int], column: str, values: pa.Array, columns: list[str]) -> pa.Table:
    """The rows of row ``groups`` whose ``column`` is one of ``values``, as ``columns``: the one column is read to
    look, the others only from the groups that hold a match (a look-up of a few keys in an index of millions reads
    a few groups' wide columns, or none)."""
    parquet = _parquet(source)
    looked = parquet.read_row_groups(groups, columns=[column], use_threads=False).column(column)
    hit = pc.fill_null(pc.is_in(looked, value_set=values), False).to_numpy(zero_copy_only=False)
    if not hit.any():
        return parquet.schema_arrow.empty_table().select(columns)
    owner = np.repeat(np.arange(len(groups)), [parquet.metadata.row_group(g).num_rows for g in groups])
    held = np.unique(owner[hit])
    in_held = np.zeros(len(groups), bool)
    in_held[held] = True
    in_held = in_held[owner]
    table = pa.table({column: looked.filter(pa.array(in_held))})  # the looked column is not read twice
    others = [c for c in columns if c != column]
    if others:
        rest = parquet.read_row_groups([groups[i] for i in held.tolist()], columns=others, use_threads=False)
        for field, values in zip(rest.schema, rest.columns, strict=True):
            table = table.append_column(field, values)
    return table.select(columns).filter(pa.array(hit[in_held], pa.bool_()))


def _encoding_of(meta: pq.FileMetaData) -> dict[str, Any]:
    """The codec and dictionary use of each column as a file was written (its first row group's), as
    ``ParquetWriter`` arguments, so a rewrite keeps them; zstd with dictionaries for a file with no row group."""
    if not meta.num_row_groups:
        return {"compression": "zstd"}
    columns = [meta.row_group(0).column(j) for j in range(meta.num_columns)]
    return {"compression": {c.path_in_schema: "none" if c.compression == "UNCOMPRESSED" else c.compression.lower()
                            for c in columns},
            "use_dictionary": [c.path_in_schema for c in columns if c.has_dictionary_page]}


def filtered_bytes(source: Any, keep: np.ndarray, table: pa.Table | None = None) -> bytes:
    """A Parquet file (open file or ``ParquetFile``; ``table``, its rows when already read) with only the rows
    ``keep`` marks, every row group kept where it was, emptied ones too: row groups are addresses (an index's
    buckets, the staging groups the copy index names), so removing rows must not move the others between groups.
    Read and filtered once, then written group by group (1,024 small reads, or filters, cost more)."""
    parquet, sink = _parquet(source), io.BytesIO()
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    table = parquet.read(use_threads=False) if table is None else table
    kept = table.filter(pa.array(keep, pa.bool_()))
    remaining = np.bincount(np.repeat(np.arange(len(sizes)), sizes)[keep], minlength=len(sizes))
    with pq.ParquetWriter(sink, parquet.schema_arrow, **_encoding_of(parquet.metadata)) as writer:
        start = 0
        for rows, left in zip(sizes, remaining.tolist(), strict=True):
            writer.write_table(kept.slice(start, left), row_group_size=max(1, rows))
            start += left
    return sink.getvalue()


def group_of_rows(source: Any) -> np.ndarray:
    """Each row's row group in a Parquet file (open file or ``ParquetFile``), from its footer alone."""
    meta = _parquet(source).metadata
    return np.repeat(np.arange(meta.num_row_groups, dtype=np.uint32),
                     [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])

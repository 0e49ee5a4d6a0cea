"""Small Arrow helpers shared by stages."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


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


def bucketed_bytes(table: pa.Table, bucket: str = "bucket") -> bytes:
    """``table`` (sorted by its integer ``bucket`` column) as Parquet with one row group per bucket, so a look-up
    reads the footer and only the row groups of the buckets it needs (``bucket_groups``, ``read_buckets``)."""
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
        values = table.column(bucket).to_numpy()
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]).tolist() if len(values) else [0]
        for start, stop in zip(starts, [*starts[1:], len(values)], strict=True):
            writer.write_table(table.slice(start, stop - start))  # an empty table: one empty row group
    return sink.getvalue()


def bucket_groups(fh: Any) -> dict[int, int]:
    """Bucket -> row group of a file ``bucketed_bytes`` wrote (its bucket is the first column)."""
    meta = pq.ParquetFile(fh).metadata
    return {meta.row_group(i).column(0).statistics.min: i for i in range(meta.num_row_groups)
            if meta.row_group(i).num_rows}


def read_buckets(fh: Any, groups: dict[int, int], buckets: Iterable[int], columns: list[str]) -> pa.Table | None:
    """The rows of ``buckets`` (None when the file has none of them)."""
    read = sorted({groups[b] for b in buckets if b in groups})
    return pq.ParquetFile(fh).read_row_groups(read, columns=columns, use_threads=False) if read else None

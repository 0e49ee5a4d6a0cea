"""Small Arrow helpers shared by stages."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc


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

"""How Custody writes a table as Parquet: zstd, dictionaries only where values repeat, row groups of the size
``Store.write_parquet`` asks for (``layout.GROUP_ROWS`` unless told), so the same table always gives the same
bytes."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout

DICTIONARY_SAMPLE = 4096  # rows a column's repetition is judged from


def repeating_columns(table: pa.Table) -> list[str]:
    """The columns worth a dictionary: those whose first ``DICTIONARY_SAMPLE`` values repeat (at most half of them
    distinct). Ids, hashes, texts and band keys never repeat; dictionary-encoding them builds a dictionary of
    every value only to fall back to plain pages, which made them 1.3-2.3x slower to write and up to 4.5x slower to
    read, and the files larger (bench/README.md, "Deletions at 10M (2026-12-04, later)")."""
    out = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        path = name
        while pa.types.is_list(column.type):  # a list's values are judged, and named by their leaf's path
            column, path = pc.list_flatten(column), f"{path}.list.element"
        values = column.slice(0, DICTIONARY_SAMPLE)
        if pa.types.is_dictionary(column.type) or not len(values):  # encoded as one already: kept so
            out.append(path)
            continue
        try:
            distinct = pc.count_distinct(values, mode="all").as_py()
        except pa.ArrowNotImplementedError:  # a struct's or a map's leaves: plain
            continue
        if distinct * 2 <= len(values):
            out.append(path)
    return out


def parquet_bytes(table: pa.Table, schema: pa.Schema | None = None, group_rows: int | None = None) -> bytes:
    """``table`` as Parquet (``Store.write_parquet``), zstd, dictionaries only for ``repeating_columns``, in groups
    of ``group_rows`` (``layout.GROUP_ROWS`` unless given); the same table gives the same bytes."""
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=group_rows or layout.GROUP_ROWS,
                   use_dictionary=repeating_columns(table))
    return buf.getvalue()

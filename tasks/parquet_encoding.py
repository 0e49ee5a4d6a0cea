"""How Custody writes a table as Parquet: zstd (but for columns whose schema says otherwise, ``CODEC``),
dictionaries only where values repeat, row groups of the size ``Store.write_parquet`` asks for
(``layout.group_rows``), so the same table always gives the same bytes."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout

DICTIONARY_SAMPLE = 4096  # rows a column's repetition is judged from
# a field's metadata key naming its codec: hash columns (LSH band keys) are random bytes zstd cannot shrink
# (800,360 bytes for 800,285 of a 10M store's partition) but costs time to encode, decode and purge again
CODEC = b"parquet_codec"


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


def leaf_paths(name: str, kind: pa.DataType) -> list[str]:
    """The Parquet column paths a field of type ``kind`` is written as (a codec is given per leaf)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return leaf_paths(f"{name}.list.element", kind.value_type)
    if pa.types.is_map(kind):
        return [*leaf_paths(f"{name}.key_value.key", kind.key_type),
                *leaf_paths(f"{name}.key_value.value", kind.item_type)]
    if pa.types.is_struct(kind):
        return [path for child in kind for path in leaf_paths(f"{name}.{child.name}", child.type)]
    return [name]


def codecs(schema: pa.Schema) -> str | dict[str, str]:
    """Each column's codec: zstd unless its field's metadata names another (``CODEC``). Given per leaf when any
    field names one: pyarrow leaves a column the mapping does not name uncompressed."""
    if not any(f.metadata and CODEC in f.metadata for f in schema):
        return "zstd"
    return {path: (f.metadata or {}).get(CODEC, b"zstd").decode()
            for f in schema for path in leaf_paths(f.name, f.type)}


def parquet_bytes(table: pa.Table, schema: pa.Schema | None = None, group_rows: int | None = None) -> bytes:
    """``table`` as Parquet (``Store.write_parquet``), zstd, dictionaries only for ``repeating_columns``, in groups
    of ``group_rows`` (``layout.GROUP_ROWS`` unless given); the same table gives the same bytes."""
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=codecs(table.schema), row_group_size=group_rows or layout.GROUP_ROWS,
                   use_dictionary=repeating_columns(table))
    return buf.getvalue()

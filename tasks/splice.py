"""Removing rows from a Parquet file by re-encoding only the row groups that lose one.

A purge removes a few rows of a partition's hundred thousand, and re-encoding the whole file (decode, filter,
compress) was most of its CPU. Here a row group that keeps every row stays as its bytes, at its offset; a group that
loses rows is encoded again on its own (same schema, codecs and dictionary use) and written where it was, the rest
of its old span zeroed, so no other group moves and their footer entries are copied as they are (a group that
came out larger, which fewer rows rarely do, goes after the last one instead, its old span zeroed). Only the footer is
written anew, in Thrift's compact protocol (``tasks.thrift_compact``: pyarrow cannot write a footer for groups it
did not encode, and fastparquet's round trip of ours was not byte-identical): the entries of the new groups, their
offsets shifted to where they now sit, in place of the old ones, every other byte kept. A file this cannot splice
(a page index or bloom filter, which name pages by offset) gets ``None``, and the caller re-encodes it whole.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import thrift_compact as thrift
from tasks.storage import Buffer

MAGIC = b"PAR1"
# field ids (parquet.thrift): FileMetaData, RowGroup, ColumnChunk, ColumnMetaData
META_NUM_ROWS, META_ROW_GROUPS = 3, 4
GROUP_COLUMNS, GROUP_FILE_OFFSET, GROUP_ORDINAL = 1, 5, 7
CHUNK_FILE_OFFSET, CHUNK_META = 2, 3
COLUMN_OFFSETS = (9, 10, 11)  # data, index and dictionary page offsets


def _footer(data: Buffer) -> bytes:
    if bytes(data[-4:]) != MAGIC or bytes(data[:4]) != MAGIC:
        raise ValueError("not a Parquet file")
    size = struct.unpack("<i", data[-8:-4])[0]
    return bytes(data[-8 - size:-8])


def _shifted(fields: list[thrift.Field], fids: tuple[int, ...], by: int) -> list[thrift.Field]:
    """Offsets moved; a 0 stays (pyarrow writes it for a chunk's deprecated ``file_offset`` and an empty group's
    pages)."""
    return [(f, k, v + by if f in fids and v else v) for f, k, v in fields]


def _moved_group(group: list[thrift.Field], by: int, ordinal: int) -> list[thrift.Field]:
    """A row group's footer entry for its bytes moved ``by`` further into the file, as group number ``ordinal``."""
    out = []
    for fid, kind, value in _shifted(group, (GROUP_FILE_OFFSET,), by):
        if fid == GROUP_COLUMNS:
            value = (value[0], [_moved_chunk(chunk, by) for chunk in value[1]])
        out.append((fid, kind, ordinal if fid == GROUP_ORDINAL else value))
    return out


def _moved_chunk(chunk: list[thrift.Field], by: int) -> list[thrift.Field]:
    moved = _shifted(chunk, (CHUNK_FILE_OFFSET,), by)
    return [(f, k, _shifted(v, COLUMN_OFFSETS, by) if f == CHUNK_META else v) for f, k, v in moved]


def _spans(meta: pq.FileMetaData) -> list[tuple[int, int]] | None:
    """Each row group's byte span, or None when a group's column chunks are not back to back or a page index or
    bloom filter names pages by offset (a splice would leave them pointing at the wrong bytes, or at deleted ones)."""
    spans = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        start = end = None
        for c in range(group.num_columns):
            chunk = group.column(c)
            if not chunk.total_compressed_size:  # an empty group's chunk (offset 0): no bytes to place
                continue
            if chunk.bloom_filter_offset is not None or chunk.has_offset_index or chunk.has_column_index:
                return None
            first = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            if end is not None and first != end:
                return None
            start, end = first if start is None else start, first + chunk.total_compressed_size
        spans.append((start, end) if start is not None else (len(MAGIC), len(MAGIC)))  # no bytes at all
    return spans


def spliced_parts(parquet: pq.ParquetFile, data: Buffer, keep: np.ndarray,
                  encode: Callable[[list[pa.Table]], bytes]) -> list[Buffer] | None:
    """The Parquet file ``data`` (``parquet``, opened) with only the rows ``keep`` marks, as the pieces to write end
    to end: the groups that lose rows re-encoded by ``encode`` (tables to a file of one group each, all of them in
    one: a writer and a footer each took a third of a group's encoding) and placed where they were, every
    other byte of the groups as it was, as views of ``data`` (not joined: a 10-20 MB copy into fresh pages cost
    more than the splice's encoding, and the file write copies them anyway). None when the file cannot be spliced
    (``_spans``, ``_Footer.of``) or the new footer does not read back as planned (``_checked``); the caller
    rewrites it whole."""
    meta = parquet.metadata
    spans, footer = _spans(meta), _Footer.of(_footer(data), meta)
    if spans is None or footer is None:
        return None
    sizes = group_sizes(meta)
    bounds, kept_rows = np.r_[0, np.cumsum(sizes)].tolist(), kept_per_group(sizes, keep)
    touched = sorted((g for g, (rows, left) in enumerate(zip(sizes, kept_rows, strict=True)) if left < rows),
                     key=lambda g: spans[g])  # in file order: an earlier splice may have moved a group
    encoded = _encoded_groups(encode(_kept_groups(parquet, touched, bounds, keep)), len(touched))
    if encoded is None:
        return None
    view, pieces, grown, copied = memoryview(data), [], [], 0
    end = len(data) - len(footer.raw) - 8  # where the groups end
    entries, placed = footer.entries(), {}
    for g, (group_bytes, group, origin) in zip(touched, encoded, strict=True):
        old_lo, old_hi = spans[g]
        fits = len(group_bytes) <= old_hi - old_lo  # else after the last group (fewer rows rarely take more bytes)
        start = old_lo if fits else end + sum(len(piece) for piece in grown)
        placed[g] = (start, start + len(group_bytes)) if group_bytes else (len(MAGIC), len(MAGIC))  # (_spans)
        pieces += [view[copied:old_lo], group_bytes if fits else b"", bytes(old_hi - old_lo - len(group_bytes) * fits)]
        grown += [] if fits else [group_bytes]
        copied = old_hi
        entries[g] = thrift.encode_struct(_moved_group(group, start - origin, g))
    tail = footer.rebuilt(entries, int(keep.sum()))
    pieces += [view[copied:end], *grown, tail]
    return [p for p in pieces if len(p)] if _checked(tail, spans, placed, kept_rows) else None


def group_sizes(meta: pq.FileMetaData) -> list[int]:
    """Each row group's row count, from a file's footer."""
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def kept_per_group(sizes: list[int], keep: np.ndarray) -> list[int]:
    """The rows ``keep`` marks in each of the row groups of ``sizes`` rows."""
    return np.bincount(np.repeat(np.arange(len(sizes)), sizes)[keep], minlength=len(sizes)).tolist()


def _checked(tail: bytes, spans: list[tuple[int, int]], placed: dict[int, tuple[int, int]], kept_rows: list[int]
             ) -> bool:
    """Whether the new file's footer (``tail``: the footer, its length and the magic) reads back with every group
    where planned: the kept ones at their old span, the new ones at their ``placed`` span, each with the rows it
    keeps. A footer entry found at the wrong bytes (``_Footer.of``) cannot pass."""
    try:
        new = pq.ParquetFile(pa.BufferReader(MAGIC + tail)).metadata  # a footer is read from the end alone
        new_spans = _spans(new)
    except (OSError, ValueError, pa.ArrowException):
        return False
    if new_spans is None or new.num_row_groups != len(spans):
        return False
    return all(new.row_group(g).num_rows == kept_rows[g] and new_spans[g] == placed.get(g, spans[g])
               for g in range(len(spans)))


@dataclass
class _Footer:
    """A footer's bytes and where its row count and row-group entries sit in them."""

    raw: bytes
    num_rows: tuple[int, int]  # the row count's value span
    spans: list[tuple[int, int]]  # each row group's entry
    list_at: int  # the row-group list's header

    @classmethod
    def of(cls, raw: bytes, meta: pq.FileMetaData) -> _Footer | None:
        """Found without walking every column chunk's entry in Python (at 49 groups of 21 columns, 8 ms a file,
        a third of a splice): each group's entry ends with its byte size and row count (fields 2 and 3), which
        the footer pyarrow read gives, so they are searched for (in C), and the few fields after them skipped.
        None when a field is not where expected; a wrong find is caught by ``_checked``."""
        i = last = 0
        num_rows = None
        while head := raw[i]:
            fid, j = (last + (head >> 4), i + 1) if head >> 4 else thrift.long_field_id(raw, i + 1)
            if fid == META_ROW_GROUPS:
                break
            i, last = thrift.skip(raw, j, head & 0x0F), fid
            num_rows = (j, i) if fid == META_NUM_ROWS else num_rows
        else:
            return None
        count, _, k = thrift.list_header(raw, j)
        if num_rows is None or count != meta.num_row_groups:
            return None
        spans = []
        for g in range(count):
            group = meta.row_group(g)
            tail = thrift.next_i64(group.total_byte_size) + thrift.next_i64(group.num_rows)
            at = raw.find(tail, k)
            if at < 0:
                return None
            spans.append((k, k := thrift.skip(raw, at, thrift.STRUCT)))
        return cls(raw, num_rows, spans, j)

    def entries(self) -> list[bytes]:
        return [self.raw[a:b] for a, b in self.spans]

    def rebuilt(self, entries: list[bytes], num_rows: int) -> bytes:
        """The footer with its row count and row-group entries replaced, every other byte as it was, then its
        length and the magic: the file's last bytes."""
        rows_at, rows_end = self.num_rows
        end = self.spans[-1][1] if self.spans else thrift.list_header(self.raw, self.list_at)[2]
        out = b"".join([self.raw[:rows_at], thrift.put_varint(thrift.zigzag(num_rows)),
                        self.raw[rows_end:self.list_at], thrift.list_head(len(entries), thrift.STRUCT), *entries,
                        self.raw[end:]])
        return out + struct.pack("<i", len(out)) + MAGIC


def _kept_groups(parquet: pq.ParquetFile, groups: list[int], bounds: list[int], keep: np.ndarray) -> list[pa.Table]:
    """The rows ``keep`` marks of each of ``groups`` (read together), one table a group."""
    if not groups:
        return []
    read, out, at = parquet.read_row_groups(groups, use_threads=False), [], 0
    for g in groups:
        rows = bounds[g + 1] - bounds[g]
        out.append(read.slice(at, rows).filter(pa.array(keep[bounds[g]:bounds[g + 1]])))
        at += rows
    return out


def _encoded_groups(encoded: bytes, count: int) -> list[tuple[bytes, list[thrift.Field], int]] | None:
    """Each group of a file of ``count`` groups back to back (``group_encoder``'s): its bytes, its footer entry and
    the offset its entry counts from (where its bytes began); None when its chunks are not back to back
    (``_spans``)."""
    meta = pq.ParquetFile(pa.BufferReader(encoded)).metadata
    spans, footer = _spans(meta), _Footer.of(_footer(encoded), meta)
    if spans is None or footer is None or len(spans) != count:
        return None
    return [(encoded[lo:hi], thrift.decode(footer.raw, at, thrift.STRUCT)[0], lo)
            for (lo, hi), (at, _) in zip(spans, footer.spans, strict=True)]


def group_encoder(schema: pa.Schema, options: dict[str, Any]) -> Callable[[list[pa.Table]], bytes]:
    """Tables to one Parquet file of a row group each, written with ``options`` (a file's codecs and dictionary
    use)."""
    def encode(tables: list[pa.Table]) -> bytes:
        sink = io.BytesIO()
        with pq.ParquetWriter(sink, schema, **options) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=max(1, table.num_rows))
        return sink.getvalue()
    return encode

"""Removing rows by re-encoding only the row groups that lose one (``tasks.splice``), as a purge does."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import layout, splice
from tasks import thrift_compact as thrift
from tasks.parquet_encoding import parquet_bytes
from tasks.storage import Store
from tasks.tables import _encoding_of, filtered_parts


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"record_id": [f"r{i:06d}" for i in range(n)],
                     "text": [f"text {i} " + "word " * int(rng.integers(1, 30)) for i in range(n)],
                     "license": ["cc-by", "mit"] * (n // 2) + ["cc-by"] * (n % 2),
                     "score": pa.array(rng.random(n)).cast(pa.float64()),
                     "reasons": [["pii"][: i % 2] for i in range(n)],
                     "maybe": [None if i % 3 else i for i in range(n)]})


def _parquet(data: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(data))


def _spliced(data: bytes, keep: np.ndarray) -> bytes | None:
    parquet = _parquet(data)
    encode = splice.group_encoder(parquet.schema_arrow, _encoding_of(parquet.metadata))
    parts = splice.spliced_parts(parquet, data, keep, encode)
    return None if parts is None else b"".join(parts)


def _group_rows(data: bytes) -> list[int]:
    meta = _parquet(data).metadata
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def test_a_footer_decodes_and_encodes_back_to_the_same_bytes() -> None:
    data = parquet_bytes(_table(500), group_rows=64)
    footer = splice._footer(data)
    assert thrift.encode_struct(thrift.decode_struct(footer)) == footer
    fields = dict((f, v) for f, _, v in thrift.decode_struct(footer))
    assert fields[splice.META_NUM_ROWS] == 500 and len(fields[splice.META_ROW_GROUPS][1]) == 8


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), group=st.integers(1, 80), seed=st.integers(0, 2**16), share=st.floats(0, 0.3))
def test_a_splice_keeps_exactly_the_kept_rows_in_their_groups(n: int, group: int, seed: int, share: float) -> None:
    table = _table(n, seed)
    data = parquet_bytes(table, group_rows=group)
    rng = np.random.default_rng(seed)
    for _ in range(2):  # twice: the second splice reads a file with the first's zeroed gaps
        keep = rng.random(table.num_rows) >= share
        out = _spliced(data, keep)
        assert out is not None
        expected = table.filter(pa.array(keep))
        assert _parquet(out).read().equals(expected)
        before, after = _group_rows(data), _group_rows(out)
        assert len(after) == len(before)
        group_of_row = np.repeat(np.arange(len(before)), before)
        assert after == np.bincount(group_of_row[keep], minlength=len(before)).tolist()
        data, table = out, expected


def test_groups_that_keep_every_row_are_copied_as_bytes_where_they_were() -> None:
    data = parquet_bytes(_table(400), group_rows=100)
    keep = np.ones(400, bool)
    keep[150] = False  # group 1 only
    out = _spliced(data, keep)
    old, new = _parquet(data).metadata, _parquet(out).metadata
    for g in (0, 2, 3):
        for c in range(old.num_columns):
            a, b = old.row_group(g).column(c), new.row_group(g).column(c)
            assert (a.data_page_offset, a.total_compressed_size) == (b.data_page_offset, b.total_compressed_size)
            start = a.dictionary_page_offset if a.has_dictionary_page else a.data_page_offset
            assert data[start:start + a.total_compressed_size] == out[start:start + a.total_compressed_size]
    assert len(out) <= len(data)


def test_no_byte_of_a_removed_row_stays_in_the_file_its_statistics_included() -> None:
    table = _table(300).set_column(1, "text", pa.array([f"plain {i}" for i in range(299)] + ["zzz-secret-text"]))
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=100, compression="none", use_dictionary=False)
    data = sink.getvalue()
    assert data.count(b"zzz-secret-text") >= 2  # the value and the group's max statistic
    keep = np.arange(300) != 299
    out = _spliced(data, keep)
    assert out is not None and b"zzz-secret-text" not in out
    assert _parquet(out).metadata.row_group(2).column(1).statistics.max == "plain 298"


def test_a_group_that_loses_every_row_stays_as_an_empty_group() -> None:
    data = parquet_bytes(_table(40), group_rows=10)
    out = _spliced(data, np.arange(40) >= 10)
    assert _group_rows(out) == [0, 10, 10, 10]
    assert _parquet(out).read_row_group(2).column("record_id").to_pylist() == [f"r{i:06d}" for i in range(20, 30)]


def test_a_file_with_a_page_index_is_not_spliced_but_still_filtered() -> None:
    sink = io.BytesIO()
    pq.write_table(_table(200), sink, row_group_size=50, write_page_index=True)
    data, keep = sink.getvalue(), np.arange(200) % 7 > 0
    assert _spliced(data, keep) is None
    out = b"".join(filtered_parts(data, keep))
    assert _parquet(out).read().equals(_table(200).filter(pa.array(keep))) and _group_rows(out) == [42, 43, 43, 43]


def test_partition_files_are_written_in_small_groups(tmp_path) -> None:
    store = Store(tmp_path.as_uri())
    store.write_parquet(layout.staging("films", "f1"), _table(5000))
    with store.open(layout.staging("films", "f1")) as fh:
        assert _group_rows(fh.read()) == [layout.GROUP_ROWS, layout.GROUP_ROWS, 5000 - 2 * layout.GROUP_ROWS]

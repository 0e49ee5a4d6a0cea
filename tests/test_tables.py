"""Table files: bucketed Arrow IPC files as the indexes keep them, and Parquet as a purge rewrites it."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.parquet_encoding import parquet_bytes, repeating_columns
from tasks.tables import bucketed_ipc_bytes, filtered_parts, ipc_buckets, ipc_reader, kept_bounds, rows_with_ids


def _file(data: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(data))


def test_a_bucketed_ipc_file_has_a_batch_per_bucket_empty_ones_too_and_reads_back_some_or_all() -> None:
    buckets = np.sort(np.random.default_rng(0).choice(np.arange(0, 16, 2), 100))  # odd buckets empty
    batch = pa.record_batch({"key": pa.array(buckets.astype(np.uint64) * 1000 + np.arange(100, dtype=np.uint64)),
                             "owner": pa.DictionaryArray.from_arrays(pa.array(np.arange(100) % 7, pa.int32()),
                                                                     pa.array([f"o{i}" for i in range(7)]))})
    bounds = np.searchsorted(buckets, np.arange(17))
    reader = pa.ipc.open_file(pa.BufferReader(bucketed_ipc_bytes(batch, bounds)))
    assert reader.num_record_batches == 16 and reader.get_batch(1).num_rows == 0
    everything, all_bounds = ipc_buckets(reader, list(range(16)))  # most buckets: the file read as one table
    assert (all_bounds == bounds).all()
    assert everything["key"].equals(batch.column("key")) and everything["owner"].equals(batch.column("owner"))
    some, some_bounds = ipc_buckets(reader, [2, 6])  # a few: their batches only
    n2, n6 = int((buckets == 2).sum()), int((buckets == 6).sum())
    assert len(some["key"]) == n2 + n6 and some["owner"].to_pylist() == batch.column("owner").to_pylist()[
        bounds[2]:bounds[3]] + batch.column("owner").to_pylist()[bounds[6]:bounds[7]]
    assert some_bounds[3] == some_bounds[6] == n2 and some_bounds[-1] == n2 + n6
    kept = buckets != 2  # a purge empties bucket 2: the others keep their batches
    again = pa.ipc.open_file(pa.BufferReader(bucketed_ipc_bytes(batch.filter(pa.array(kept)),
                                                                kept_bounds(bounds, kept))))
    assert again.get_batch(2).num_rows == 0 and again.get_batch(4).equals(reader.get_batch(4))


def test_a_bucketed_ipc_file_opens_only_whole_and_of_its_bucket_count() -> None:
    keys = np.arange(64, dtype=np.uint64)
    data = bucketed_ipc_bytes(pa.record_batch({"key": pa.array(keys)}), np.arange(0, 65, 8))  # 8 buckets of 8
    assert ipc_reader(pa.BufferReader(data), 8).get_batch(3).column("key").to_pylist() == list(range(24, 32))
    assert ipc_reader(pa.BufferReader(data), 16) is None  # another layout
    assert ipc_reader(pa.BufferReader(data[:len(data) // 2]), 8) is None  # cut short
    assert ipc_reader(pa.BufferReader(b"not an Arrow file" * 64), 8) is None


def test_a_purge_rewrite_keeps_every_row_group_where_it_was() -> None:
    table = pa.table({"record_id": [f"r{i}" for i in range(40)], "n": np.arange(40)})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=10)
    emptied = _file(b"".join(filtered_parts(sink.getvalue(), np.arange(40) >= 10)))  # the first group loses every row
    assert [emptied.metadata.row_group(i).num_rows for i in range(4)] == [0, 10, 10, 10]
    assert emptied.read_row_group(2).column("n").to_pylist() == list(range(20, 30))


def _dictionary_columns(data: bytes) -> dict[str, bool]:
    group = _file(data).metadata.row_group(0)
    return {group.column(j).path_in_schema: group.column(j).has_dictionary_page for j in range(group.num_columns)}


def test_only_columns_whose_values_repeat_are_dictionary_encoded_and_a_rewrite_keeps_that() -> None:
    n = 5000
    table = pa.table({"record_id": [f"r{i:024x}" for i in range(n)], "license": ["cc-by"] * (n - 1) + ["mit"],
                      "band_0": np.random.default_rng(1).integers(0, 2**63, n, dtype=np.uint64),
                      "reasons": [["pii", "no_consent"][i % 2:] for i in range(n)],
                      "ids": [[f"x{i}", f"y{i}"] for i in range(n)]})
    assert repeating_columns(table) == ["license", "reasons.list.element"]
    data = parquet_bytes(table)
    written = {"record_id": False, "license": True, "band_0": False, "reasons.list.element": True,
               "ids.list.element": False}
    assert _dictionary_columns(data) == written
    assert _dictionary_columns(b"".join(filtered_parts(data, np.arange(n) % 3 > 0))) == written
    assert _file(parquet_bytes(table)).read().equals(table)  # nothing lost: same values, same order




def test_columns_of_every_kind_are_written_back_as_they_were() -> None:
    table = pa.table({"split": pa.array(["train", "test"] * 50).dictionary_encode(),
                      "empty": pa.array([[]] * 100, pa.list_(pa.string())), "none": pa.nulls(100, pa.string()),
                      "struct": pa.array([{"a": i} for i in range(100)]),
                      "map": pa.array([[("k", i)] for i in range(100)], pa.map_(pa.string(), pa.int64()))})
    assert repeating_columns(table) == ["split", "empty.list.element", "none"]
    assert _file(parquet_bytes(table)).read().equals(table)


def test_rows_by_id_come_from_the_row_groups_holding_them_alone() -> None:
    ids = [f"r{i:03d}" for i in range(40)]
    table = pa.table({"record_id": ids, "text": [f"text of {r}" for r in ids]})
    data = bytearray(parquet_bytes(table, group_rows=10))  # groups of rows 0-9, 10-19, 20-29, 30-39
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(2).column(1)  # group 2's texts, spoilt
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    spoilt = _file(bytes(data))
    wanted = pa.array(["r035", "r003", "r999"])
    found = rows_with_ids(spoilt, wanted, ["text"])
    assert sorted(found.to_pylist(), key=lambda r: r["record_id"]) == [
        {"record_id": "r003", "text": "text of r003"}, {"record_id": "r035", "text": "text of r035"}]
    given = rows_with_ids(spoilt, wanted, None, ids=table.column("record_id"))  # the caller's ids, every column
    assert given.column_names == ["record_id", "text"] and given.num_rows == 2
    assert rows_with_ids(spoilt, pa.array(["r999"]), ["text"]).num_rows == 0
    try:  # the spoilt group is really unreadable: the look-ups above did not read it
        rows_with_ids(spoilt, pa.array(["r025"]), ["text"])
    except (OSError, pa.ArrowException):
        return
    raise AssertionError("group 2 read back despite its spoilt bytes")

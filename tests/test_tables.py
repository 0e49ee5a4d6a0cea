"""Bucketed Parquet files: the bucket -> row group map a look-up uses, as written and after a purge's rewrite."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.storage import parquet_bytes, repeating_columns
from tasks.tables import (
    GROUP_BUCKETS,
    bucket_groups,
    bucketed_bytes,
    filtered_bytes,
    read_buckets,
    rows_matching,
    whole_if_wide,
)


def _file(data: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(data))


def test_the_kept_bucket_map_agrees_with_the_groups_statistics_and_survives_a_rewrite() -> None:
    buckets = np.sort(np.random.default_rng(0).integers(0, 50, 400)).astype(np.uint16)
    table = pa.table({"bucket": buckets, "key": np.arange(400, dtype=np.uint64)})
    data = bucketed_bytes(table)
    kept = bucket_groups(_file(data))
    assert GROUP_BUCKETS in _file(data).schema_arrow.metadata
    stripped = io.BytesIO()
    pq.write_table(_file(data).read().replace_schema_metadata(None), stripped, row_group_size=1 << 20)
    assert bucket_groups(_file(stripped.getvalue())) == {b: [0] for b in np.unique(buckets).tolist()}
    from_stats = {}  # what the groups' own statistics say, group by group
    parquet = _file(data)
    for i in range(parquet.metadata.num_row_groups):
        from_stats.setdefault(parquet.metadata.row_group(i).column(0).statistics.min, []).append(i)
    assert kept == from_stats and all(len(groups) == 1 for groups in kept.values())
    first = int(buckets[0])
    emptied = filtered_bytes(_file(data), buckets != first)  # a purge empties the first bucket's group
    assert bucket_groups(_file(emptied)) == kept  # groups stay where they were
    assert read_buckets(_file(emptied), kept, {first}, ["key"]).num_rows == 0
    other = int(buckets[-1])
    assert read_buckets(_file(emptied), kept, {other}, ["key"]).num_rows == int((buckets == other).sum())


def test_rows_matching_reads_the_wide_columns_only_of_the_groups_holding_a_match(
        monkeypatch: pytest.MonkeyPatch) -> None:
    table = pa.table({"bucket": np.repeat(np.arange(4, dtype=np.uint16), 5), "key": np.arange(20, dtype=np.uint64),
                      "record_id": [f"r{i}" for i in range(20)]})
    parquet = pq.ParquetFile(io.BytesIO(bucketed_bytes(table)))
    found = rows_matching(parquet, [0, 2, 3], "key", pa.array([3, 12, 13, 7], pa.uint64()), ["key", "record_id"])
    assert found.to_pydict() == {"key": [3, 12, 13], "record_id": ["r3", "r12", "r13"]}  # 7: group 1, not read
    assert rows_matching(parquet, [1], "key", pa.array([99], pa.uint64()), ["record_id"]).num_rows == 0
    read: list[list[int]] = []
    real = pq.ParquetFile.read_row_groups

    def spy(self: pq.ParquetFile, groups: list[int], columns: list[str], **kw: object) -> pa.Table:
        read.append([*groups, *columns])
        return real(self, groups, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    rows_matching(parquet, [0, 1, 2, 3], "key", pa.array([12], pa.uint64()), ["record_id"])
    assert read == [[0, 1, 2, 3, "key"], [2, "record_id"]]


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
    assert _dictionary_columns(filtered_bytes(_file(data), np.arange(n) % 3 > 0)) == written
    assert _file(parquet_bytes(table)).read().equals(table)  # nothing lost: same values, same order


def test_a_bucketed_file_keeps_its_hashes_plain_and_gives_repeating_columns_a_dictionary_without_a_codec() -> None:
    table = pa.table({"bucket": np.repeat(np.arange(8, dtype=np.uint16), 500),
                      "key": np.random.default_rng(2).integers(0, 2**63, 4000, dtype=np.uint64),
                      "record_id": [f"r{i}" for i in range(4000)]})
    group = _file(bucketed_bytes(table, hashes=("key",))).metadata.row_group(3)
    codec = {group.column(j).path_in_schema: (group.column(j).compression, group.column(j).has_dictionary_page)
             for j in range(group.num_columns)}
    assert codec == {"bucket": ("UNCOMPRESSED", True), "key": ("UNCOMPRESSED", False), "record_id": ("ZSTD", False)}


def test_a_read_of_most_groups_loads_the_file_once_and_finds_the_same_rows() -> None:
    table = pa.table({"bucket": np.repeat(np.arange(16, dtype=np.uint16), 10), "key": np.arange(160, dtype=np.uint64)})
    data = bucketed_bytes(table)
    groups = bucket_groups(_file(data))
    loads: list[int] = []

    def load() -> bytes:
        loads.append(1)
        return data

    few = read_buckets(_file(data), groups, {3}, ["key"], load)
    assert not loads and few.column("key").to_pylist() == list(range(30, 40))
    many = read_buckets(_file(data), groups, set(range(2, 16)), ["key"], load)
    assert loads == [1] and many.column("key").to_pylist() == list(range(20, 160))
    assert whole_if_wide(_file(data), [0, 1], load).num_row_groups == 16 and loads == [1]


def test_columns_of_every_kind_are_written_back_as_they_were() -> None:
    table = pa.table({"split": pa.array(["train", "test"] * 50).dictionary_encode(),
                      "empty": pa.array([[]] * 100, pa.list_(pa.string())), "none": pa.nulls(100, pa.string()),
                      "struct": pa.array([{"a": i} for i in range(100)]),
                      "map": pa.array([[("k", i)] for i in range(100)], pa.map_(pa.string(), pa.int64()))})
    assert repeating_columns(table) == ["split", "empty.list.element", "none"]
    assert _file(parquet_bytes(table)).read().equals(table)

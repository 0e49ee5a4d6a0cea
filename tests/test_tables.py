"""Bucketed Parquet files: the bucket -> row group map a look-up uses, as written and after a purge's rewrite."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.tables import GROUP_BUCKETS, bucket_groups, bucketed_bytes, filtered_bytes, read_buckets, rows_matching


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

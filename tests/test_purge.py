"""The raw purge without an engine: deleted rows leave the delivered files, in every format, and nothing else does.

Each file holds rows doomed by record id, rows doomed by content hash (one a copy with other whitespace), rows
that stay, and a row that ingestion rejects although its id is a deleted one (quarantined rows go too).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tasks import layout
from tasks.deletion.blocklist import BlockList
from tasks.deletion.purge import purge_parquet, purge_raw
from tasks.ids import content_hash, normalize_text, record_id
from tasks.storage import Store
from tests.helpers import write_source

SOURCE = "shop"
GONE_BY_CONTENT = "Bob's review of the harbour film: slow, grey and far too long for its story."
ROWS = [
    {"id": "k1", "text": "A warm film about a lighthouse keeper and his dog.", "label": "fresh", "owner": "ann"},
    {"id": "d1", "text": "Deleted by id: a review of the desert chase film.", "label": "rotten", "owner": "bob"},
    {"id": "k2", "text": 'Kept, with "quotes", commas, and a\nsecond line.', "label": "fresh", "owner": "cid"},
    {"id": "d2", "text": GONE_BY_CONTENT, "label": "rotten", "owner": "bob"},
    {"id": "d1", "text": "", "label": "rotten", "owner": "bob"},  # rejected (empty text), but its id is deleted
    {"id": "k3", "text": "The glacier documentary is the best thing this year.", "label": "fresh", "owner": "dee"},
    {"id": "c2", "text": "  " + GONE_BY_CONTENT.replace(" ", "   ") + "\t", "label": "rotten", "owner": "eve"},
]
DOOMED = {1, 3, 4, 6}  # by id (d1, twice), by content hash (d2), and the same text spaced differently (c2)
KEPT = [r for i, r in enumerate(ROWS) if i not in DOOMED]
BLOCKS = BlockList(record_ids={record_id(SOURCE, "d1"): "del-1"},
                   content_hashes={content_hash(normalize_text(GONE_BY_CONTENT)): "del-1"})


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ROWS[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def _read_text(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def _read_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def _read_parquet(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


FORMATS: dict[str, tuple[Callable[[list[dict]], bytes], Callable[[bytes], list[dict]]]] = {
    "part.jsonl": (_jsonl, _read_text),
    "part.jsonl.gz": (_jsonl, _read_text),
    "part.csv": (_csv, _read_csv),
    "part.csv.gz": (_csv, _read_csv),
    "part.parquet": (_parquet, _read_parquet),
}


def _deliver(store: Store, name: str, payload: bytes) -> str:
    write_source(store, SOURCE, {name: gzip.compress(payload) if name.endswith(".gz") else payload})
    return layout.raw_file(SOURCE, name)


def _removed(report: dict[str, int]) -> tuple[int, int]:
    return report["raw_files_rewritten"], report["raw_rows_removed"]


def _payload(store: Store, key: str) -> bytes:
    data = store.read_bytes(key)
    return gzip.decompress(data) if key.endswith(".gz") else data


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_exactly_the_doomed_rows_leave_the_file(store: Store, name: str) -> None:
    write, read = FORMATS[name]
    key = _deliver(store, name, write(ROWS))
    assert _removed(purge_raw(store, BLOCKS, [SOURCE])) == (1, len(DOOMED))
    assert read(_payload(store, key)) == KEPT


@pytest.mark.parametrize("name", [n for n in sorted(FORMATS) if not n.endswith(".parquet")])
def test_text_formats_keep_the_other_rows_byte_for_byte(store: Store, name: str) -> None:
    write, _ = FORMATS[name]
    key = _deliver(store, name, write(ROWS))
    purge_raw(store, BLOCKS, [SOURCE])
    assert _payload(store, key) == write(KEPT)


def test_parquet_keeps_its_schema(store: Store) -> None:
    key = _deliver(store, "part.parquet", _parquet(ROWS))
    purge_raw(store, BLOCKS, [SOURCE])
    assert pq.read_schema(io.BytesIO(store.read_bytes(key))) == pa.Table.from_pylist(ROWS).schema


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_second_purge_is_a_no_op(store: Store, name: str) -> None:
    write, _ = FORMATS[name]
    key = _deliver(store, name, write(ROWS))
    purge_raw(store, BLOCKS, [SOURCE])
    before = store.read_bytes(key), os.stat(store.path(key)).st_ino
    assert _removed(purge_raw(store, BLOCKS, [SOURCE])) == (0, 0)
    assert (store.read_bytes(key), os.stat(store.path(key)).st_ino) == before  # not even rewritten unchanged


def test_unreadable_lines_and_other_sources_are_left(store: Store) -> None:
    key = _deliver(store, "part.jsonl", _jsonl(ROWS[:2]) + b"{not json\n")
    write_source(store, "other", {"part.jsonl": _jsonl(ROWS)})
    untouched = store.read_bytes(layout.raw_file("other", "part.jsonl"))
    report = purge_raw(store, BLOCKS, [SOURCE])
    assert _removed(report) == (1, 1) and report["raw_rows_unreadable"] == 1  # reported: not matchable by owner
    assert store.read_bytes(key) == _jsonl(ROWS[:1]) + b"{not json\n"
    assert store.read_bytes(layout.raw_file("other", "part.jsonl")) == untouched


def test_a_source_without_a_datasheet_is_skipped(store: Store) -> None:
    write_source(store, SOURCE, {"part.jsonl": _jsonl(ROWS)}, sheet={})
    assert _removed(purge_raw(store, BLOCKS, [SOURCE])) == (0, 0)
    assert store.read_bytes(layout.raw_file(SOURCE, "part.jsonl")) == _jsonl(ROWS)


def test_a_source_deletion_takes_unparsed_lines_too_an_owner_deletion_reports_them(store: Store) -> None:
    key = _deliver(store, "part.jsonl", _jsonl(ROWS[:3]) + b"{torn line of bob\n")
    by_owner = purge_raw(store, BlockList(owners={"bob": "del-1"}), [SOURCE])
    assert _removed(by_owner) == (1, 1) and by_owner["raw_rows_unreadable"] == 1
    assert store.read_bytes(key) == _jsonl([ROWS[0], ROWS[2]]) + b"{torn line of bob\n"
    by_source = purge_raw(store, BlockList(sources={SOURCE: "del-1"}), [SOURCE])
    assert _removed(by_source) == (1, 3) and by_source["raw_rows_unreadable"] == 0
    assert store.read_bytes(key).strip() == b""


def test_ledger_files_are_read_through_a_compacted_copy_that_never_hides_or_invents_one(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read past ``COMPACT_AFTER`` new files writes one compacted copy; later reads take it and the files
    written since; a request whose file is gone, or has grown since (fingerprints an ingest added), is read from
    its file or not at all, never from the copy."""
    from tasks.deletion import compacted, fingerprints, tombstones

    monkeypatch.setattr(compacted, "COMPACT_AFTER", 2)

    def stone(i: int) -> None:
        doc = {"request_id": f"del-{i:03d}", "resolved": {"record_ids": [f"r{i}a", f"r{i}b"]}}
        tombstones.write_tombstones(store, doc, {f"r{i}a": f"h{i}"})
        fingerprints.write_fingerprints(store, f"del-{i:03d}", [f"deleted text number {i}"])

    for i in range(4):
        stone(i)
    assert not store.exists(layout.TOMBSTONES_COMPACTED)
    assert tombstones.tombstoned_ids(store) == {f"r{i}{c}" for i in range(4) for c in "ab"}
    assert fingerprints.read_fingerprints(store).num_rows == 4
    assert store.exists(layout.TOMBSTONES_COMPACTED) and store.exists(layout.FINGERPRINTS_COMPACTED)
    stone(4)
    table = tombstones.read_tombstones(store)
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"del-{i:03d}" for i in range(5) for _ in "ab")
    assert table.filter(pc.equal(table.column("record_id"), "r4a")).column("content_hash").to_pylist() == ["h4"]
    store.delete(layout.tombstones("del-001"))  # the per-request files are the truth
    assert tombstones.tombstoned_ids(store) == {f"r{i}{c}" for i in (0, 2, 3, 4) for c in "ab"}
    fingerprints.write_fingerprints(store, "del-002", ["a later withdrawn copy, fingerprinted at ingest"])
    prints = fingerprints.read_fingerprints(store)
    assert sorted(prints.column("request_id").to_pylist()) == ["del-000", "del-001", "del-002", "del-002",
                                                                "del-003", "del-004"]
    assert prints.equals(fingerprints.read_fingerprints(store))  # the same through a copy or without


def test_a_file_with_the_bytes_of_the_one_before_is_purged_alike_and_one_of_its_size_on_its_own(tmp_path) -> None:
    """A partition's records can hold staging's bytes: the purge reuses the first one's new bytes for the second,
    and a file of the same size with other bytes (one letter a row) is looked at on its own."""
    store = Store(tmp_path.as_uri())
    rows = {"record_id": [f"r{i}" for i in range(10)], "content_hash": [f"h{i}" for i in range(10)]}
    texts = {"records": [f"text {i}" for i in range(10)], "staging": [f"text {i}" for i in range(10)],
             "validation": [f"txet {i}" for i in range(10)]}
    keys = []
    for prefix, column in texts.items():
        sink = io.BytesIO()
        pq.write_table(pa.table({**rows, "text": column}), sink, compression="none", row_group_size=4)
        store.write_bytes(f"{prefix}/part.parquet", sink.getvalue())
        keys.append(f"{prefix}/part.parquet")
    assert len({store.size(k) for k in keys}) == 1
    report = purge_parquet(store, {"r3"}, {"h5"}, keys, located=True)
    assert report == {"partitions_rewritten": 3, "rows_removed": 6}
    for key, column in zip(keys, texts.values(), strict=True):
        left = store.read_parquet(key)
        assert left.column("text").to_pylist() == [t for i, t in enumerate(column) if i not in (3, 5)]
        assert left.column("record_id").to_pylist() == [f"r{i}" for i in range(10) if i not in (3, 5)]
    assert store.read_bytes(keys[0]) == store.read_bytes(keys[1]) != store.read_bytes(keys[2])
    assert os.path.samefile(store.path(keys[0]), store.path(keys[1]))  # the second not written again
    assert purge_parquet(store, {"r3"}, {"h5"}, keys, located=True) == {"partitions_rewritten": 0, "rows_removed": 0}

"""Clustering over a store, partition by partition: the same clusters as clustering it all in memory, conflicts and
exact copies found from integer keys, and outputs written per partition.

The store's signature files keep band keys only; the clustering makes candidate pairs' signatures again from
staging's texts. The algorithm's tests here plant crafted signatures instead (no texts): ``crafted`` hands them
to ``StoreRows.signatures`` by record id; the last test checks that the texts give parse's signatures back."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import layout
from tasks.dedup import MinhashConfig, cluster_records
from tasks.dedup.clusters import (
    _bucket_pairs,
    first_equal,
    partition_dedup,
    read_clusters,
    repeated_rows,
)
from tasks.dedup.minhash import signatures
from tasks.dedup.sharded import StoreRows, _hex_strings, _hex_words, cluster_partitions
from tasks.dedup.signature_files import blank_signatures, read_column, write_signatures
from tasks.ids import record_id_keys
from tasks.storage import Store
from tests.helpers import ingest_without_engine, jsonl, write_source

CFG = MinhashConfig()
FILES = [("alpha", f"f{i}") for i in range(4)] + [("beta", f"f{i}") for i in range(3)]
# sha256 of the sorted cluster and conflict rows that the whole-store algorithm this replaced (one matrix of every
# signature, commit 66d0422) gave on synthetic_rows(3000)
GOLDEN = "3504ce6766194d9ce4f73a1af76d09dc600ef95c73d8c4edaf22db9d0f6a7473"


def _hex(rng: np.random.RandomState, digits: int) -> str:
    return "".join(rng.choice(list("0123456789abcdef"), digits))


def synthetic_rows(n: int, seed: int = 0) -> tuple[dict[str, list], np.ndarray]:
    """Signature rows with planted duplicates: near copies (k positions changed: estimated Jaccard 1 - k/128, some
    below the threshold), exact copies, records delivered again (same id, same or other text) and boilerplate (a
    shared band in 40 rows: a bucket chained, not all-paired). Delivery: files in a shuffled order, two files at the
    same instant, rows of a file in source_uri order (``#L10`` before ``#L2``)."""
    rng = np.random.RandomState(seed)
    sigs = rng.randint(0, 2**32, size=(n, CFG.num_perm), dtype=np.uint64).astype(np.uint32)
    ids = ["r" + _hex(rng, 24) for _ in range(n)]
    hashes = [_hex(rng, 64) for _ in range(n)]
    boiler = rng.choice(n, 40, replace=False)
    sigs[boiler, :8] = sigs[boiler[0], :8]
    for i in range(n // 10, n):
        src = int(rng.randint(0, i))
        u = rng.rand()
        if u < 0.15:  # near copy
            k = int(rng.randint(0, 45))
            sigs[i] = sigs[src]
            sigs[i, rng.choice(CFG.num_perm, k, replace=False)] = rng.randint(0, 2**32, k, dtype=np.uint64)
        elif u < 0.20:  # exact copy under another id
            sigs[i], hashes[i] = sigs[src], hashes[src]
        elif u < 0.22:  # delivered again: same id, same text
            sigs[i], hashes[i], ids[i] = sigs[src], hashes[src], ids[src]
        elif u < 0.23:  # an id reused for another text
            ids[i] = ids[src]
    file_of = rng.randint(0, len(FILES), n)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    delivered = [start + dt.timedelta(seconds=s) for s in (5, 1, 3, 3, 0, 7, 2)]
    rows = {"record_id": ids, "content_hash": hashes,
            "source_uri": [f"file:///raw/{FILES[f][0]}/{FILES[f][1]}.jsonl#L{i + 1}" for i, f in enumerate(file_of)],
            "delivered_at": [delivered[f] for f in file_of], "file": file_of.tolist()}
    return rows, sigs


def write_partitions(store: Store, rows: dict[str, list], sigs: np.ndarray) -> None:
    """One staging file (no text) and its signature file per (source, file), rows in a shuffled order within it."""
    table = pa.table({k: v for k, v in rows.items() if k != "file"})
    file_of = np.asarray(rows["file"])
    for f, (source, fid) in enumerate(FILES):
        mine = np.random.RandomState(f).permutation(np.flatnonzero(file_of == f))
        store.write_parquet(layout.staging(source, fid), table.take(mine))
        write_signatures(store, source, fid, table.column("record_id").take(mine), sigs[mine], CFG)


def _rank(rows: dict[str, list]) -> np.ndarray:
    order = sorted(range(len(rows["record_id"])), key=lambda i: (rows["delivered_at"][i], rows["source_uri"][i]))
    return np.argsort(order)


def _digest(clusters: pa.Table, conflicts: pa.Table) -> str:
    rows = sorted((r["record_id"], r["cluster_id"], r["kept_record_id"], round(r["similarity"], 5), r["kind"])
                  for r in clusters.to_pylist())
    return hashlib.sha256(json.dumps([rows, sorted(tuple(r.values()) for r in conflicts.to_pylist())]).encode()
                          ).hexdigest()


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, list], np.ndarray]:
    return synthetic_rows(3000)


@pytest.fixture
def crafted(data: tuple[dict[str, list], np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """``StoreRows.signatures`` answers with the planted signatures (of each id's first delivery: the kept row)."""
    rows, sigs = data
    first: dict[str, int] = {}
    for i in np.argsort(_rank(rows)):
        first.setdefault(rows["record_id"][i], i)

    def planted(self: StoreRows, _store: Store, some: np.ndarray, _cfg: MinhashConfig) -> np.ndarray:
        return sigs[[first[r] for r in self.record_ids(some).to_pylist()]].astype(np.uint32)

    monkeypatch.setattr(StoreRows, "signatures", planted)


@pytest.fixture
def clustered(store: Store, data: tuple[dict[str, list], np.ndarray], crafted: None) -> tuple[Store, dict]:
    write_partitions(store, *data)
    return store, cluster_partitions(store, CFG)


def test_the_clusters_are_those_of_the_whole_store_algorithm(clustered, data) -> None:
    store, stats = clustered
    conflicts = store.read_parquets(layout.dedup_part(layout.ID_CONFLICTS))
    assert _digest(read_clusters(store), conflicts) == GOLDEN
    assert stats["candidate_pairs"] > stats["verified_pairs"] > 0 and stats["exact_duplicates"] > 0
    rows, sigs = data  # in memory, without the rows whose id came earlier: the same membership
    rank = _rank(rows)
    first = {}
    for i in np.argsort(rank):
        first.setdefault(rows["record_id"][i], i)
    keep = np.array(sorted(first.values()))
    table, _ = cluster_records([rows["record_id"][i] for i in keep], [rows["content_hash"][i] for i in keep],
                               rank[keep], sigs[keep], CFG)
    assert _digest(table, conflicts.slice(0, 0)) == _digest(read_clusters(store), conflicts.slice(0, 0))


def test_ids_delivered_again_are_conflicts_by_whether_the_text_matches(clustered, data) -> None:
    store, stats = clustered
    rows, _ = data
    conflicts = store.read_parquets(layout.dedup_part(layout.ID_CONFLICTS)).to_pylist()
    assert len(conflicts) == stats["id_conflicts"] == len(rows["record_id"]) - len(set(rows["record_id"]))
    rank = _rank(rows)
    earliest = {}
    for i in np.argsort(rank):
        earliest.setdefault(rows["record_id"][i], i)
    row_of = {uri: i for i, uri in enumerate(rows["source_uri"])}
    for c in conflicts:
        i, j = row_of[c["source_uri"]], earliest[c["record_id"]]
        assert i != j and rows["record_id"][i] == c["record_id"]
        same = rows["content_hash"][i] == rows["content_hash"][j]
        assert c["reason"] == ("repeated_record" if same else "duplicate_id")
    assert {c["reason"] for c in conflicts} == {"repeated_record", "duplicate_id"}


def test_each_partition_reads_its_own_rows_and_stale_outputs_go(clustered, data) -> None:
    store, _ = clustered
    rows, _ = data
    everything = read_clusters(store)
    ids_of = {f: {rows["record_id"][i] for i in np.flatnonzero(np.asarray(rows["file"]) == f)} for f in range(7)}
    parts = [partition_dedup(store, source, fid) for source, fid in FILES]
    for f, (mine, conflicts) in enumerate(parts):
        assert mine.num_rows and set(mine.column("record_id").to_pylist()) <= ids_of[f]
        assert all(f"/{FILES[f][0]}/{FILES[f][1]}.jsonl#" in u for u in conflicts.column("source_uri").to_pylist())
    assert sum(m.num_rows for m, _ in parts) == everything.num_rows
    some = set(everything.column("record_id").to_pylist()[:5])
    assert set(read_clusters(store, record_id=some).column("record_id").to_pylist()) == some
    cid = everything.column("cluster_id")[0].as_py()
    mates = read_clusters(store, ["record_id", "cluster_id"], cluster_id={cid})
    assert mates.num_rows >= 2 and set(mates.column("cluster_id").to_pylist()) == {cid}
    store.delete(layout.staging(*FILES[0]))  # a partition gone: so are its outputs
    cluster_partitions(store, CFG)
    assert partition_dedup(store, *FILES[0])[0].num_rows == 0
    assert not store.exists(layout.dedup_part(layout.CLUSTERS, *FILES[0]))
    assert read_clusters(store).num_rows > 0


def test_an_empty_store_has_no_clusters(store: Store) -> None:
    assert cluster_partitions(store, CFG)["records"] == 0
    assert read_clusters(store).num_rows == 0


def test_small_buckets_are_all_paired_and_large_ones_chained() -> None:
    keys = np.array([5] * 3 + [9] * 17 + [1], dtype=np.uint64)[::-1].copy()  # 1, then 17 nines, then 3 fives
    n = len(keys)
    pairs = {(int(c // n), int(c % n)) for c in _bucket_pairs(keys)}
    assert pairs == {(18, 19), (18, 20), (19, 20)} | {(i, i + 1) for i in range(1, 17)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=200),
       st.one_of(st.integers(1, 64), st.just(2**64 - 1)))
def test_bucket_pairs_and_first_equal_match_brute_force_for_sparse_and_dense_repeats(
        values: list[int], modulus: int) -> None:
    """Only rows with a repeated key are sorted (all of them when repeats are dense): the answers must be those
    of comparing every pair, whatever the share of repeats."""
    keys = np.array([v % modulus for v in values], np.uint64)
    n = len(keys)
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(keys.tolist()):
        groups.setdefault(k, []).append(i)
    expected = set()
    for rows in groups.values():
        expected |= {(a, b) for x, a in enumerate(rows) for b in rows[x + 1:]} if len(rows) <= 16 \
            else set(itertools.pairwise(rows))
    assert {(int(c // n), int(c % n)) for c in _bucket_pairs(keys)} == expected
    assert first_equal(keys).tolist() == [groups[k][0] for k in keys.tolist()]
    assert set(repeated_rows(keys).tolist()) >= {i for rows in groups.values() if len(rows) > 1 for i in rows}


def test_hex_keys_round_trip_and_anything_else_is_refused() -> None:
    ids = pa.chunked_array([["r" + "0123456789abcdef01234567", "r" + "f" * 24], ["r" + "a" * 24]])
    words = _hex_words(ids, b"r", 25, 24)
    assert words.shape == (3, 2) and _hex_strings(words, b"r", 24).to_pylist() == ids.to_pylist()
    for bad in (["x" + "0" * 24], ["r" + "0" * 23], ["r" + "G" * 24]):
        with pytest.raises(ValueError, match="hex"):
            _hex_words(pa.chunked_array([bad]), b"r", 25, 24)


def test_candidate_signatures_are_made_again_from_staging_as_parse_made_them(store: Store) -> None:
    base = "the quick brown fox jumps over the lazy dog near the river bank at dawn {}"
    texts = [base.format(i % 4) + (" again" if i % 3 else "") for i in range(12)]
    write_source(store, "s", {f"p{k}.jsonl": jsonl([{"id": f"{k}-{i}", "text": t} for i, t in
                                                     enumerate(texts[k::2])]) for k in range(2)})
    ingest_without_engine(store)
    assert not set(pq_names(store)) & {"minhash"}  # band keys only: the signatures are not kept
    rows = StoreRows.read(store, CFG)
    every = np.arange(len(rows.pos))
    by_id = {}
    for key in store.list(layout.STAGING, layout.PARQUET):
        staged = store.read_parquet(key, ["record_id", "text"])
        by_id.update(zip(staged.column("record_id").to_pylist(), signatures(staged.column("text"), CFG), strict=True))
    again = rows.signatures(store, every, CFG)
    assert [list(s) for s in again] == [list(by_id[r]) for r in rows.record_ids(every).to_pylist()]
    assert read_clusters(store).num_rows > 0  # the near copies were verified with them


def pq_names(store: Store) -> list[str]:
    return [n for key in store.list(layout.dedup_part(layout.SIGNATURES), layout.ARROW)
            for n in pa.ipc.open_file(store.random_access(key)).schema.names]


def _texts_store(store: Store) -> Store:
    """Twelve rows of one partition: six texts, each with a near copy (clustered), none a near copy of another."""
    words = ["river", "lantern", "quiet", "harbor", "velvet", "orbit", "cactus", "meadow", "thunder", "pixel",
             "saddle", "marble", "ginger", "falcon"]
    texts = [" ".join(np.random.RandomState(i).choice(words, 16)) for i in range(6)]
    texts += [t + " again" for t in texts]
    write_source(store, "s", {"p0.jsonl": jsonl([{"id": f"0-{i}", "text": t} for i, t in enumerate(texts)])})
    ingest_without_engine(store)
    return store


def test_a_purge_blanks_a_deleted_rows_band_keys_in_place_and_clustering_skips_it(store: Store) -> None:
    import os

    from tasks.deletion import requests
    from tasks.deletion.apply import process_pending

    _texts_store(store)
    (source, fid), = [layout.staged_partition(k) for k in store.list(layout.staging_dir(), layout.PARQUET)]
    key, before_clusters = layout.signatures(source, fid), read_clusters(store).num_rows
    before, inode = store.read_bytes(key), os.stat(store.path(key)).st_ino
    staged = store.read_parquet(layout.staging(source, fid), ["record_id"]).column("record_id").to_pylist()
    gone = staged[5]
    requests.submit(store, "record_id", [gone], "a test")
    process_pending(store)
    after = store.read_bytes(key)
    assert len(after) == len(before) and os.stat(store.path(key)).st_ino == inode  # patched where it was
    keys = read_column(store, source, fid, "record_key")
    blanked = np.flatnonzero(keys == 0)  # the record and its near copy (the deletion follows a text's copies)
    assert 5 in blanked and len(blanked) == len(staged) - store.parquet_rows(layout.staging(source, fid)) == 2
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert 0 < changed <= 8 * (1 + CFG.banding[0]) * len(blanked)  # their rows' values, no other byte
    assert all((read_column(store, source, fid, f"band_{b}")[blanked] == 0).all() for b in range(CFG.banding[0]))
    assert int(record_id_keys([gone])[0]).to_bytes(8, "little") not in after
    assert blank_signatures(store, source, fid, {gone}) == 0 and store.read_bytes(key) == after  # a re-run: none
    cluster_partitions(store, CFG)  # the blanked row is skipped: the rest still line up with the purged staging
    assert store.read_bytes(key) == after and gone not in read_clusters(store).column("record_id").to_pylist()
    assert 0 < read_clusters(store).num_rows <= before_clusters


def test_a_signature_file_missing_out_of_line_or_of_the_parquet_layout_is_made_again_from_staging(
        store: Store) -> None:
    _texts_store(store)
    (source, fid), = [layout.staged_partition(k) for k in store.list(layout.staging_dir(), layout.PARQUET)]
    key, clusters = layout.signatures(source, fid), read_clusters(store)
    made = store.read_bytes(key)
    store.write_bytes(key, made[: len(made) // 2])  # damaged
    store.write_parquet(layout.dedup_part(layout.SIGNATURES, source, fid), pa.table({"record_id": ["r1"]}))
    cluster_partitions(store, CFG)
    assert store.read_bytes(key) == made and not store.exists(layout.dedup_part(layout.SIGNATURES, source, fid))
    assert read_clusters(store).equals(clusters)
    store.delete(key)
    assert blank_signatures(store, source, fid, {"r1"}) == 0
    cluster_partitions(store, CFG)
    assert store.read_bytes(key) == made

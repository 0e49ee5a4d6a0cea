"""Near copies of short texts: the character-shingle copy finder (store side) and the fingerprint matcher."""

from __future__ import annotations

import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import layout
from tasks.dedup.copies import DEFAULT, CopyConfig, band_keys, candidate_pairs, shingle_sets, verified
from tasks.dedup.copy_index import BUCKET_BITS, BUCKETS, find_copies, partition_index, purge_index, write_copy_index
from tasks.dedup.withdrawn import WithdrawnIndex
from tasks.deletion.fingerprints import fingerprint_table
from tasks.deletion.purge import purge_parquet
from tasks.fingerprints import char_shingles, distinct_sets, jaccard, ngram_hashes, shingle_hashes
from tasks.ids import record_id_keys
from tasks.storage import Store

REVIEW = ("A quietly devastating film about grief that trusts its actors and its silences, and earns every one of "
          "its tears by the end.")  # 22 words
EDITS = {
    "one word swapped": REVIEW.replace("devastating", "heartbreaking"),
    "case and punctuation": REVIEW.upper().replace(",", "").replace(".", "!!!"),
    "a word inserted": REVIEW.replace("film about", "little film about"),
    "a word dropped and spacing": REVIEW.replace(" quietly", "").replace(" and ", "  and\n"),
}
HALF = ("A quietly devastating film about grief that trusts its actors is what the trailer promised, but the "
        "result is a loud mess of car chases.")  # shares the first half, differs in the rest
SALT = b"0123456789abcdef"


def _copies_of(query: str, stored: list[str], cfg: CopyConfig = DEFAULT) -> list[str]:
    """The stored texts the copy finder's core (LSH candidates, then exact verification) calls copies of query."""
    keys, sets = band_keys([query, *stored], cfg), shingle_sets([query, *stored], cfg)
    pairs = verified(candidate_pairs(keys[:1], keys[1:]), sets[1:], sets[:1], cfg.threshold)
    return [stored[i] for i in pairs[:, 0]]


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_light_edit_of_a_short_text_is_a_copy(edit: str) -> None:
    assert _copies_of(REVIEW, [EDITS[edit]]) == [EDITS[edit]]


def test_a_text_sharing_half_is_not_a_copy() -> None:
    assert jaccard(*shingle_sets([REVIEW, HALF])) > 0.3  # they do share a lot ...
    assert _copies_of(REVIEW, [HALF, "An unrelated tweet about flu vaccines http://bit.ly/x"]) == []  # ... not enough


def test_ngram_hashes_are_the_char_shingles_of_the_match_form() -> None:
    texts = [REVIEW, "Hi!", "", "hi", "x" * 9, REVIEW.upper().replace(",", " ;")]
    sets = distinct_sets(*ngram_hashes(texts), len(texts))
    assert [len(s) for s in sets] == [len(char_shingles(t)) for t in texts]
    assert np.array_equal(sets[0], sets[5]) and np.array_equal(sets[1], sets[3])


def test_config_refuses_bad_values_and_names_its_parameters() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CopyConfig(threshold=0.0)
    with pytest.raises(ValueError, match="positive"):
        CopyConfig(rows=0)
    with pytest.raises(ValueError, match="min_shared"):
        CopyConfig(min_shared=22)
    assert str(DEFAULT) == f"copies_c5_b21r3_t0.65_s1_m{DEFAULT.min_shared}"
    assert DEFAULT.index_name == "copies_c5_b21r3_t0.65_s1"  # the index does not depend on min_shared
    assert DEFAULT.candidate_probability(DEFAULT.threshold) > 0.98


def test_a_candidate_shares_at_least_min_shared_bands() -> None:
    query = np.array([[1, 2, 3]], dtype=np.uint64)
    stored = np.array([[1, 9, 9], [1, 2, 8], [7, 8, 9], [1, 2, 3]], dtype=np.uint64)
    assert candidate_pairs(query, stored).tolist() == [[0, 0], [1, 0], [3, 0]]
    assert candidate_pairs(query, stored, 2).tolist() == [[1, 0], [3, 0]]
    assert candidate_pairs(query, stored, 3).tolist() == [[3, 0]]
    one, two = CopyConfig(min_shared=1), CopyConfig(min_shared=2)
    p = 0.5 ** 3
    assert one.candidate_probability(0.5) == pytest.approx(1 - (1 - p) ** 21)
    assert two.candidate_probability(0.5) == pytest.approx(1 - (1 - p) ** 21 - 21 * p * (1 - p) ** 20)


def _stage(store: Store, source: str, fid: str, texts: list[str]) -> None:
    ids = [f"{fid}-{i}" for i in range(len(texts))]
    store.write_parquet(layout.staging(source, fid), pa.table({"record_id": ids, "content_hash": ids, "text": texts}))


def test_find_copies_reads_candidates_across_partitions_and_rebuilds_a_missing_index(store: Store) -> None:
    _stage(store, "reviews", "f1", [EDITS["one word swapped"], HALF])
    _stage(store, "tweets", "f2", ["Flu season starts early this year http://bit.ly/x", EDITS["a word inserted"]])
    assert not store.exists(layout.copies("reviews", "f1"))  # staged before the index existed
    assert find_copies(store, [REVIEW]) == [{"f1-0", "f2-1"}]
    mine = [EDITS["one word swapped"], EDITS["a word inserted"]]  # the texts of f1-0 and f2-1: each is the other's
    assert find_copies(store, mine) == [{"f1-0", "f2-1"}] * 2
    assert find_copies(store, mine, own=["f1-0", "f2-1"]) == [{"f2-1"}, {"f1-0"}]  # not itself, still the other
    texts = [EDITS["one word swapped"], HALF]
    index = partition_index(store, "reviews", "f1", band_keys(texts).ravel())
    assert store.exists(layout.copies("reviews", "f1")) and index.num_rows == 2 * DEFAULT.bands
    assert set(index.column("record_key").to_pylist()) == set(record_id_keys(["f1-0", "f1-1"]).tolist())
    reader = pa.ipc.open_file(store.random_access(layout.copies("reviews", "f1")))
    assert reader.num_record_batches == BUCKETS
    for bucket in {int(k) >> (64 - BUCKET_BITS) for k in index.column("key").to_pylist()}:  # its batch holds it
        stored = reader.get_batch(bucket).column("key").to_numpy()
        assert len(stored) and (np.diff(stored.astype(np.int64)) >= 0).all()  # sorted: searched by bisection
    keys = index.column("key").to_numpy()
    some = keys[[0, 5, 30]]  # the look-up of a few keys: their rows
    assert sorted(partition_index(store, "reviews", "f1", some).column("key").to_pylist()) == sorted(some.tolist())
    assert partition_index(store, "reviews", "f1", np.array([1, 2], np.uint64)).num_rows == 0
    other = CopyConfig(bands=4, rows=2)
    stale = partition_index(store, "reviews", "f1", band_keys(texts, other).ravel(), other)  # another config: rebuilt
    assert stale.num_rows == 2 * 4
    _stage(store, "tweets", "f3", ["!!!", "..."])
    assert find_copies(store, ["", "?!"]) == [set(), set()]  # no shingle, no copy: not every punctuation-only row


def test_a_purge_removes_only_the_deleted_records_rows_once_and_a_stale_index_goes_whole(store: Store) -> None:
    texts = [EDITS["one word swapped"], HALF, REVIEW]
    _stage(store, "reviews", "f1", texts)
    store.write_parquet(layout.copies_before_ipc("reviews", "f1"), pa.table({"record_key": [1]}))  # an older store's
    queried = band_keys(texts).ravel()
    assert partition_index(store, "reviews", "f1", queried).num_rows == 3 * DEFAULT.bands
    assert not store.exists(layout.copies_before_ipc("reviews", "f1"))  # rebuilt: the Parquet index went
    assert purge_index(store, "reviews", "f1", {"f1-1", "elsewhere"}) == DEFAULT.bands
    before = store.read_bytes(layout.copies("reviews", "f1"))
    assert purge_index(store, "reviews", "f1", {"f1-1"}) == 0  # a re-run: nothing more, nothing rewritten
    assert store.read_bytes(layout.copies("reviews", "f1")) == before
    left = partition_index(store, "reviews", "f1", queried)
    assert sorted(set(left.column("record_key").to_pylist())) == sorted(record_id_keys(["f1-0", "f1-2"]).tolist())
    assert left.num_rows == 2 * DEFAULT.bands and find_copies(store, [REVIEW]) == [{"f1-0", "f1-2"}]
    assert purge_index(store, "reviews", "f1", {"f1-0"}, CopyConfig(bands=4, rows=2)) == 0  # stale for that config
    assert not store.exists(layout.copies("reviews", "f1"))  # so it is removed, to be rebuilt from staging


def test_candidates_are_read_from_the_staging_groups_the_index_names_and_a_purge_keeps_them_there(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "GROUP_ROWS", 4)
    texts = [f"filler note number {i} about the weather in town today" for i in range(10)]
    texts.append(EDITS["one word swapped"])
    ids = [f"f1-{i}" for i in range(len(texts))]
    staged = pa.table({"record_id": ids, "content_hash": ids, "text": texts})
    store.write_parquet(layout.staging("reviews", "f1"), staged, group_rows=layout.GROUP_ROWS)
    write_copy_index(store, "reviews", "f1", staged)
    purge_parquet(store, {"f1-0", "f1-5"}, set())  # rows leave groups 0 and 1: the others must not move
    assert purge_index(store, "reviews", "f1", {"f1-0", "f1-5"}) == 2 * DEFAULT.bands
    with store.open(layout.staging("reviews", "f1")) as fh:
        parquet = pq.ParquetFile(fh)
        sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
        held = {i: set(parquet.read_row_group(i, ["record_id"]).column("record_id").to_pylist()) for i in range(3)}
    assert sizes == [3, 3, 3]
    index = partition_index(store, "reviews", "f1", band_keys(texts).ravel())
    named = index.column("record_key").to_pylist()
    assert len(named) == 9 * DEFAULT.bands and not set(record_id_keys(["f1-0", "f1-5"]).tolist()) & set(named)
    keys_held = {g: set(record_id_keys(sorted(ids)).tolist()) for g, ids in held.items()}
    for key, group in zip(named, index.column("group").to_pylist(), strict=True):
        assert key in keys_held[group]

    def whole_partition(*_: object, **__: object) -> None:
        raise AssertionError("a search read a whole staging partition")

    monkeypatch.setattr(pq.ParquetFile, "read", whole_partition)
    assert find_copies(store, [REVIEW]) == [{"f1-10"}]  # from group 2 alone


def test_fingerprint_matcher_finds_near_copies_from_fingerprints_alone() -> None:
    deleted = [REVIEW, "Study finds coffee drinkers live longer, doctors say http://bit.ly/abc"]
    index = WithdrawnIndex.build(fingerprint_table("req-1", deleted, SALT), SALT)
    new = [EDITS["one word swapped"], HALF, "study finds COFFEE drinkers live longer doctors say! http://bit.ly/abc",
           "", "the", EDITS["case and punctuation"]]
    assert index.match(new) == ["req-1", None, "req-1", None, None, "req-1"]


def test_fingerprint_matcher_agrees_with_comparing_every_row_with_every_fingerprint() -> None:
    """Verification is exact (nothing below the threshold is matched) and LSH loses nothing here: at the threshold
    a pair is a candidate with probability 0.9988, and most copies are well above it."""
    rng = random.Random(3)
    words = [f"w{i}" for i in range(60)] + ["the", "and", "of"] * 20  # common words: shingles many texts share
    deleted = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(150)]
    new = [" ".join([*t.split()[:-1], rng.choice(words)]) for t in deleted[:60]]
    new += [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(60)]
    prints = fingerprint_table("r", deleted, SALT)
    got = WithdrawnIndex.build(prints, SALT).match(new)
    sets = [np.asarray(s, dtype=np.uint64) for s in prints.column("shingles").to_pylist()]
    want = [any(jaccard(shingle_hashes(t, SALT), s) >= DEFAULT.threshold for s in sets) for t in new]
    assert [g is not None for g in got] == want and 20 < sum(want) < len(new)


def test_a_purge_blanks_the_deleted_records_rows_in_place_leaving_nothing_of_their_texts(store: Store) -> None:
    texts = [f"note {i}: the ferry to the island leaves at {i} past the hour, weather permitting" for i in range(40)]
    texts[7] = REVIEW  # the deleted record's text, shared by no other
    _stage(store, "reviews", "f1", texts)
    write_copy_index(store, "reviews", "f1", pa.table({"record_id": [f"f1-{i}" for i in range(40)], "text": texts}))
    path = store.path(layout.copies("reviews", "f1"))
    before, inode = store.read_bytes(layout.copies("reviews", "f1")), os.stat(path).st_ino
    assert purge_index(store, "reviews", "f1", {"f1-7"}) == DEFAULT.bands
    after = store.read_bytes(layout.copies("reviews", "f1"))
    assert len(after) == len(before) and os.stat(path).st_ino == inode  # patched, not written again
    assert sum(a != b for a, b in zip(before, after, strict=True)) <= (DEFAULT.bands * 4 + 8)  # its bytes alone
    assert int(record_id_keys(["f1-7"])[0]).to_bytes(8, "little") not in after  # its id's key is gone
    reader = pa.ipc.open_file(pa.BufferReader(after))
    mine = band_keys([REVIEW]).ravel()
    bits = (mine >> np.uint64(64 - BUCKET_BITS - 32)) & np.uint64(0xFFFFFFFF)
    for bucket, stored_bits in zip((mine >> np.uint64(64 - BUCKET_BITS)).tolist(), bits.tolist(), strict=True):
        stored = reader.get_batch(bucket).column("key").to_numpy()
        assert (np.diff(stored.astype(np.int64)) >= 0).all()  # still sorted: searched by bisection
        assert stored_bits not in stored.tolist()  # nothing of its text's keys is left in its buckets
    assert partition_index(store, "reviews", "f1", mine).num_rows == 0
    assert find_copies(store, [EDITS["one word swapped"]]) == [set()]
    assert find_copies(store, [texts[3]])[0] >= {"f1-3"}
    assert purge_index(store, "reviews", "f1", {"f1-7"}) == 0
    assert store.read_bytes(layout.copies("reviews", "f1")) == after  # a re-run writes nothing

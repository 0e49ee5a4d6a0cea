"""The deletion locator and the batched purge: a deletion reads and rewrites only the partitions that hold its rows,
requests are unreadable at once and purged together, and a pass is crash-safe and idempotent."""

from __future__ import annotations

import datetime as dt
import random
from functools import partial

import pyarrow as pa
import pytest

from tasks import certificate, layout, passed, provenance
from tasks.batching import dealt
from tasks.config import get_settings
from tasks.deletion import requests
from tasks.deletion.apply import apply_batch, apply_pending, process_pending
from tasks.deletion.batch import finish, plan, purge_pass, purge_target, purge_targets
from tasks.deletion.locator import Locator, drop_entries
from tasks.deletion.resolve import StagedKeys, resolve_all
from tasks.deletion.verify import verify_deletion
from tasks.ids import record_id_keys
from tasks.policy import load_policy
from tasks.sources import file_id
from tasks.storage import Store
from tests.helpers import files_containing, ingest_without_engine, jsonl, write_source

FILES = 6
WORDS = [
    "river", "lantern", "quiet", "harbor", "velvet", "orbit", "cactus", "meadow", "thunder", "pixel",
    "saddle", "marble", "ginger", "falcon", "tundra", "violin", "cobalt", "pepper", "glacier", "canyon",
    "walnut", "ember", "prairie", "comet", "hollow", "lagoon",
]
TEXTS = [" ".join(random.Random(n).choices(WORDS, k=14)) for n in range(FILES * 5)]  # no two are near copies


def _rows(f: int) -> list[dict]:
    return [{"id": f"{f}-{i}", "text": TEXTS[f * 5 + i], "label": "fresh", "owner": f"owner{f}-{i % 2}"}
            for i in range(5)]


@pytest.fixture
def spread(store: Store) -> Store:
    """Six raw files, each its own partition; validated."""
    write_source(store, "films", {f"f{f}.jsonl": jsonl(_rows(f)) for f in range(FILES)})
    ingest_without_engine(store)
    policy = load_policy("research")
    stats = [provenance.validate_partition(store, k, policy) for k in store.list("records", ".parquet")]
    provenance.mark_current(store, policy, stats)
    return store


def _rid(f: int, i: int) -> str:
    return requests.record_id_of("films", f"{f}-{i}")


def _snapshot(store: Store) -> dict[str, bytes]:
    return {k: store.read_bytes(k) for k in store.list("") if not k.startswith((layout.LEDGER, layout.REPORTS))}


def _fid(f: int) -> str:
    return file_id("films", f"raw/films/f{f}.jsonl")


def _counting_parquet_reads(store: Store) -> list[str]:
    """The keys of every Parquet read from now on (instrumentation, not a fake: the real read runs)."""
    reads: list[str] = []
    original = store.read_parquet

    def counted(key: str, columns: list[str] | None = None) -> pa.Table:
        reads.append(key)
        return original(key, columns)

    store.read_parquet = counted  # type: ignore[method-assign]
    return reads


def test_the_locator_names_only_the_partitions_holding_a_key(spread: Store) -> None:
    locator = Locator(spread)
    assert locator.find("record_id", {_rid(2, 1)}) == {("films", _fid(2))}
    assert locator.find("owner", {"owner4-0"}) == {("films", _fid(4))}
    assert locator.find("record_id", {"no-such-record"}) == set()
    assert drop_entries(spread, "films", _fid(2), {"record_id": {_rid(2, 1)}}) == 1
    assert Locator(spread).find("record_id", {_rid(2, 1)}) == set()


def test_a_partition_without_a_locator_is_always_a_candidate(spread: Store) -> None:
    spread.delete(layout.locator("films", _fid(3)))  # a store ingested before the locator existed
    assert Locator(spread).find("record_id", {_rid(1, 0)}) == {("films", _fid(1)), ("films", _fid(3))}
    requests.submit(spread, "record_id", [_rid(3, 2)])
    [done] = process_pending(spread)  # found all the same, by reading that partition
    assert done["resolved"]["record_ids"] == [_rid(3, 2)] and files_containing(spread, [TEXTS[17]]) == []


def test_deleting_one_record_rewrites_only_its_partition(spread: Store) -> None:
    before = _snapshot(spread)
    requests.submit(spread, "record_id", [_rid(2, 3)])
    [done] = process_pending(spread)
    after = _snapshot(spread)
    changed = {k for k in before if after.get(k) != before[k]}
    assert done["applied"]["purge"]["targets"] == [["films", _fid(2), "raw/films/f2.jsonl"]]
    assert changed and [k for k in changed if _fid(2) not in k] == ["raw/films/f2.jsonl"]  # nothing else
    assert any(k.startswith("raw/") for k in changed) and any(k.startswith("records/") for k in changed)
    assert files_containing(spread, [TEXTS[13]]) == []
    records = pa.ipc.open_file(spread.random_access(layout.copies("films", _fid(2)))).get_batch(0).column("record")
    index = records.dictionary.field("key").to_pylist()  # the index's records
    assert layout.copies("films", _fid(2)) in changed and index  # its copy index lost the record's band keys ...
    assert int(record_id_keys([_rid(2, 3)])[0]) not in index and int(record_id_keys([_rid(2, 4)])[0]) in index  # only


def test_soft_then_hard_in_one_batch(spread: Store) -> None:
    ids = [requests.submit(spread, "owner", [f"owner{f}-0"])["request_id"] for f in (0, 1, 5)]
    applied = apply_pending(spread)
    assert [d["applied"]["purge"]["state"] for d in applied] == [requests.PENDING] * 3
    gone = {r for d in applied for r in d["resolved"]["record_ids"]}
    assert len(gone) == 9 and not gone & set(passed.read_all(spread, ["record_id"]).column("record_id").to_pylist())
    assert files_containing(spread, [TEXTS[0]])  # unreadable, but its bytes are still there: purge pending
    late = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert {d["request_id"] for d in requests.overdue(spread, late)} == set(ids)
    assert requests.overdue(spread) == []
    done = purge_pass(spread)
    assert sorted(d["request_id"] for d in done) == sorted(ids)
    purge = done[0]["applied"]["purge"]
    assert purge["state"] == requests.DONE and purge["batch_requests"] == 3 and purge["targets_rewritten"] == 3
    assert files_containing(spread, [TEXTS[f * 5 + i] for f in (0, 1, 5) for i in (0, 2, 4)]) == []
    assert files_containing(spread, [TEXTS[1], TEXTS[26]])  # the other owner of the same files stays
    assert requests.pending(spread) == [] and purge_pass(spread) == []


def test_a_pass_that_died_half_way_is_finished_by_the_next(spread: Store) -> None:
    requests.submit(spread, "owner", ["owner0-1"])
    requests.submit(spread, "owner", ["owner3-1"])
    docs = apply_pending(spread)
    work = plan(spread, docs)
    first = purge_target(spread, work.blocks, work.targets[0], work.files.get(work.targets[0][:2], []))
    assert first["raw_rows_removed"] == 2  # ... and the process died before the other target and ``finish``
    assert len(requests.pending(spread)) == 2
    done = purge_pass(spread)
    assert len(done) == 2 and done[0]["applied"]["raw_rows_removed"] == 2  # the first target is not redone
    assert files_containing(spread, [TEXTS[1], TEXTS[3], TEXTS[16], TEXTS[18]]) == []
    assert finish(spread, plan(spread, []), []) == []


def test_many_requests_resolve_and_apply_in_one_pass_reading_each_partition_once(spread: Store) -> None:
    docs = [requests.submit(spread, "record_id", [_rid(f, i)]) for f in range(FILES) for i in range(5)]
    keys = StagedKeys(spread)
    reads = _counting_parquet_reads(spread)
    resolved = resolve_all(spread, docs, keys)
    staging = [k for k in reads if k.startswith(layout.STAGING)]
    assert all(len(d["resolved"]["record_ids"]) == 1 for d in resolved)
    # key columns once per partition; texts once per partition per breadth-first round (the copy search)
    assert sorted(set(staging)) == sorted(spread.list(layout.STAGING, ".parquet"))
    assert len(staging) <= FILES * 4
    raw_reads: list[str] = []
    read_bytes = spread.read_bytes
    spread.read_bytes = lambda key: raw_reads.append(key) or read_bytes(key)  # type: ignore[method-assign]
    applied = apply_batch(spread, resolved, keys)
    assert all(d["status"] == "applied" for d in applied)
    assert [k for k in raw_reads if k.endswith(".jsonl")] == []  # every row is staged: the purge reads them, once


def test_a_purge_after_certification_updates_the_certificate(spread: Store) -> None:
    requests.submit(spread, "owner", ["owner2-0"])
    [doc] = apply_pending(spread)
    cert = certificate.document(doc, [], vault_destroyed=False)
    key = partial(layout.deletion_report, doc["request_id"])
    spread.write_json(key(certificate.CERT_JSON), cert)
    assert "due to be purged by" in certificate.markdown(cert, None)
    purge_pass(spread)
    updated = spread.read_json(key(certificate.CERT_JSON))
    assert updated["applied"]["purge"]["state"] == requests.DONE and updated["applied"]["raw_rows_removed"] == 3
    assert f"Purged physically at {updated['applied']['purge']['purged_at']}" in spread.read_bytes(
        key(certificate.CERT_MD)).decode()


def test_a_locator_kept_as_parquet_is_converted_and_still_sends_the_purge_to_the_located_lines(spread: Store) -> None:
    """Stores ingested before 2026-12-05 kept each locator as Parquet rows of the keys themselves."""
    staged = spread.read_parquet(layout.staging("films", _fid(1)), ["record_id", "content_hash", "owner_id",
                                                                    "source_uri"]).to_pylist()
    rows = [(kind, row[column], [int(row["source_uri"].rsplit("#L", 1)[1])]) for row in staged
            for kind, column in (("record_id", "record_id"), ("content_hash", "content_hash"), ("owner", "owner_id"))]
    old = pa.table({"bucket": pa.array([0] * len(rows), pa.uint16()), "kind": [r[0] for r in rows],
                    "key": [r[1] for r in rows], "lines": pa.array([r[2] for r in rows], pa.list_(pa.int32()))})
    size = str(spread.size("raw/films/f1.jsonl")).encode()
    spread.write_parquet(layout.locator_before_ipc("films", _fid(1)),
                         old.replace_schema_metadata({b"raw_size": size, b"unreadable_rows": b"0"}))
    spread.delete(layout.locator("films", _fid(1)))
    assert Locator(spread).find("owner", {"owner1-1"}) == {("films", _fid(1))}  # not every partition: converted
    assert spread.exists(layout.locator("films", _fid(1)))
    assert not spread.exists(layout.locator_before_ipc("films", _fid(1)))  # the owners' names went with it
    requests.submit(spread, "owner", ["owner1-1"])
    [done] = process_pending(spread)
    purge = done["applied"]["purge"]
    assert purge["raw_files_read_by_locator"] == 1 and purge["raw_rows_removed"] == 2
    assert done["applied"]["purge"]["targets"] == [["films", _fid(1), "raw/films/f1.jsonl"]]


def _raw_lines(store: Store, f: int) -> list[str]:
    return store.read_bytes(f"raw/films/f{f}.jsonl").decode().splitlines()


def test_a_purge_reads_only_the_located_lines_and_keeps_them_true_for_the_next(spread: Store) -> None:
    """One JSONL partition purged twice: each pass confirms the locator's lines by content instead of parsing the
    file, removes exactly its rows, and leaves the lines renumbered for the next pass."""
    owner_lines = [n + 1 for n, row in enumerate(_rows(1)) if row["owner"] == "owner1-0"]
    assert owner_lines == [1, 3, 5]
    for selector, values, gone_texts in (("record_id", [_rid(1, 2)], [TEXTS[7]]),
                                         ("owner", ["owner1-0"], [TEXTS[5], TEXTS[9]])):
        requests.submit(spread, selector, values)
        [done] = process_pending(spread)
        purge = done["applied"]["purge"]
        assert purge["raw_files_read_by_locator"] == 1 and purge["raw_rows_removed"] == len(gone_texts)
        assert files_containing(spread, gone_texts) == []
    kept = [TEXTS[6], TEXTS[8]]  # rows 1 and 3 of file 1: owner1-1, not deleted
    assert [line.split('"text": "')[1].split('"')[0] for line in _raw_lines(spread, 1)] == kept
    requests.submit(spread, "record_id", [_rid(1, 3)])  # now line 2 of the rewritten file
    [done] = process_pending(spread)
    assert done["applied"]["purge"]["raw_files_read_by_locator"] == 1
    assert files_containing(spread, [TEXTS[8]]) == [] and len(_raw_lines(spread, 1)) == 1


def test_a_raw_file_changed_since_its_locator_is_parsed_whole(spread: Store) -> None:
    key = "raw/films/f2.jsonl"
    spread.write_bytes(key, b"\n" + spread.read_bytes(key))  # a blank line first: every row one line down
    requests.submit(spread, "record_id", [_rid(2, 0)])
    [done] = process_pending(spread)
    purge = done["applied"]["purge"]
    assert purge["raw_files_read_by_locator"] == 0 and purge["raw_rows_removed"] == 1
    assert files_containing(spread, [TEXTS[10]]) == [] and len(_raw_lines(spread, 2)) == 5


def test_a_partition_purged_before_still_gives_up_its_edited_copies(spread: Store) -> None:
    """A purge rewrites a partition's copy index; its row groups must stay one a bucket, or a later deletion's
    copy search reads only some buckets of it and misses the edited copies there (as it did before this test)."""
    edited = TEXTS[13].replace(TEXTS[13].split()[3], "zeppelin", 1)  # one word swapped: a near copy of row 3 of f2
    other = " ".join(random.Random(99).choices(WORDS, k=14))
    write_source(spread, "films", {"f9.jsonl": jsonl([
        {"id": "9-0", "text": other, "label": "fresh", "owner": "someone"},
        {"id": "9-1", "text": edited, "label": "fresh", "owner": "someone-else"}])})
    ingest_without_engine(spread)
    requests.submit(spread, "record_id", [requests.record_id_of("films", "9-0")])
    process_pending(spread)  # the partition holding the edited copy is purged (its copy index rewritten)
    requests.submit(spread, "record_id", [_rid(2, 3)])
    [done] = process_pending(spread)
    assert requests.record_id_of("films", "9-1") in done["resolved"]["record_ids"]
    assert files_containing(spread, [edited]) == []


@pytest.mark.parametrize("markers", ["current", "without parse times"])
def test_a_purged_raw_file_is_neither_parsed_nor_published_again_by_the_next_ingest(spread: Store,
                                                                                    markers: str) -> None:
    """The purge took the same rows out of staging and records: the next delivery's ingest leaves that partition
    as it is (each was parsed and published again: minutes at 10M records), and counts its records as they are;
    so do parse markers written before they recorded the parse's time (after one publish that records the new
    digest)."""
    if markers != "current":
        for key in spread.list(layout.ingest_marker("parse", "films", "x").rsplit("/", 1)[0], ".json"):
            spread.write_json(key, {k: v for k, v in spread.read_json(key).items() if k != "parsed_at"})
        ingest_without_engine(spread)
    requests.submit(spread, "record_id", [_rid(4, 1)])
    process_pending(spread)
    records_before = {k: spread.read_bytes(k) for k in spread.list(layout.records_dir(), layout.PARQUET)}
    write_source(spread, "films", {"f9.jsonl": jsonl([{"id": "9-0", "text": "a later delivery of one review",
                                                       "label": "fresh", "owner": "someone"}])})
    parsed, published = ingest_without_engine(spread)
    assert {s["file"]: s["skipped"] for s in parsed} == {**{f"raw/films/f{f}.jsonl": True for f in range(FILES)},
                                                         "raw/films/f9.jsonl": False}
    delivered = file_id("films", "raw/films/f9.jsonl")
    assert {p["partition"]: (p["skipped"], p["records"]) for p in published} == {
        **{_fid(f): (True, 4 if f == 4 else 5) for f in range(FILES)}, delivered: (False, 1)}
    assert all(spread.read_bytes(k) == v for k, v in records_before.items())
    marker = spread.read_json(layout.ingest_marker("parse", "films", _fid(4)))
    assert marker["fingerprint"]["size"] == spread.size("raw/films/f4.jsonl")
    assert files_containing(spread, [TEXTS[21]]) == []


def test_a_purge_runs_two_partitions_at_a_time_on_threads_or_on_the_configured_scheduler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.delete import purge_flow, purge_runner

    monkeypatch.delenv("CUSTODY_DASK_ADDRESS", raising=False)
    local = purge_runner()
    assert isinstance(local, ThreadPoolTaskRunner) and local._max_workers == 2  # no cluster to start for a purge
    assert isinstance(purge_flow.task_runner, ThreadPoolTaskRunner) and purge_flow.task_runner._max_workers == 2
    monkeypatch.setenv("CUSTODY_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    assert isinstance(purge_runner(), DaskTaskRunner)


def test_verify_deletion_reads_the_arrow_indexes_and_finds_a_purged_store_clean(spread: Store) -> None:
    requests.submit(spread, "record_id", [_rid(2, 3)])
    [done] = process_pending(spread)
    report = verify_deletion(spread, get_settings(), done["request_id"])
    assert report["clean"] is True and report["complete"] is True and report["fingerprints"] == 1
    assert not [reason for reason in report["not_scanned"] if reason != "binary"]  # the .arrow files were read


@pytest.mark.parametrize("damage", ["cut short", "not arrow"])
def test_a_damaged_copy_index_or_locator_never_keeps_a_deletion_from_finishing(spread: Store, damage: str) -> None:
    """The indexes are derived data: a damaged copy index is rebuilt from staging, a damaged locator is read as
    none (the partition is looked at whole) and removed by the purge; the request is applied and purged."""
    for key in (layout.copies("films", _fid(2)), layout.locator("films", _fid(2))):
        data = spread.read_bytes(key)
        spread.write_bytes(key, data[:len(data) // 2] if damage == "cut short" else b"not an arrow file" * 100)
    assert Locator(spread).find("record_id", {_rid(2, 3)}) == {("films", _fid(2))}  # a candidate for every key
    requests.submit(spread, "record_id", [_rid(2, 3)])
    [done] = process_pending(spread)
    assert done["applied"]["purge"]["state"] == requests.DONE and done["resolved"]["record_ids"] == [_rid(2, 3)]
    assert files_containing(spread, [TEXTS[13]]) == [] and files_containing(spread, [TEXTS[14]])
    assert not spread.exists(layout.locator("films", _fid(2)))  # removed: the next purge parses the raw file whole
    records = pa.ipc.open_file(spread.random_access(layout.copies("films", _fid(2)))).get_batch(0).column("record")
    keys = records.dictionary.field("key").to_pylist()  # rebuilt from staging, then purged
    assert int(record_id_keys([_rid(2, 3)])[0]) not in keys and int(record_id_keys([_rid(2, 4)])[0]) in keys


def test_a_pass_is_dealt_into_even_shares_that_purge_every_partition_once(spread: Store) -> None:
    for f in range(FILES):
        requests.submit(spread, "owner", [f"owner{f}-0"])
    work = plan(spread, apply_pending(spread))
    shares = dealt(work.jobs(), 4)
    assert len(shares) == 4 and sorted(job[0] for share in shares for job in share) == work.targets
    assert sorted(map(len, shares)) == [1, 1, 2, 2] and len(dealt(work.jobs(), 16)) == FILES  # no empty share
    reports = [report for share in shares for report in purge_targets(spread, work.blocks, share)]
    done = finish(spread, work, reports)
    assert len(done) == FILES and {d["applied"]["purge"]["state"] for d in done} == {requests.DONE}
    assert files_containing(spread, [TEXTS[f * 5 + i] for f in range(FILES) for i in (0, 2, 4)]) == []


def test_a_resolution_past_its_key_cache_budget_reads_again_and_finds_the_same(spread: Store) -> None:
    """Memory follows the cache's budget, not the store: with none, every look-up reads the key columns again
    and the requests resolve and apply as with the whole store cached."""
    docs = [requests.submit(spread, "owner", [f"owner{f}-1"]) for f in range(FILES)]
    reads = _counting_parquet_reads(spread)
    uncached = StagedKeys(spread, cache_bytes=0)
    resolved = resolve_all(spread, docs, uncached)
    keyed = [k for k in reads if k.startswith(layout.STAGING)]
    assert not uncached._tables and len(keyed) > len(set(keyed))  # nothing kept: partitions read again
    cached = StagedKeys(spread)
    assert [d["resolved"]["record_ids"] for d in resolved] == [
        sorted(cached.rows("owner_id", {f"owner{f}-1"}).column("record_id").to_pylist()) for f in range(FILES)]
    assert cached.partitions_of("owner_id", {"owner3-1"}) == {("films", _fid(3))}
    applied = apply_batch(spread, resolved, uncached)
    assert [len(d["resolved"]["record_ids"]) for d in applied] == [2] * FILES

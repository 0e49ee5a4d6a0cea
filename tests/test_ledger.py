"""The deletion package without an engine: resolution through content, physical purge, idempotence, races."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pyarrow as pa
import pytest

from tasks import layout, provenance
from tasks.deletion import locks, requests
from tasks.deletion.apply import process_pending
from tasks.deletion.blocklist import request_blocks
from tasks.deletion.purge import purge_raw
from tasks.deletion.resolve import StagedKeys, resolve
from tasks.deletion.tombstones import tombstoned_ids, write_tombstones
from tasks.deletion.vault import destroy_vault
from tasks.errors import CustodyError
from tasks.passed import read_all
from tasks.policy import load_policy
from tasks.storage import Store
from tests.helpers import files_containing, ingest_without_engine, jsonl, write_source

ALICE = ["Alice wrote this unusual sentence about purple elephants dancing in the moonlight tonight.",
         "Alice also reviewed the quiet film about lighthouse keepers on a remote northern island.",
         "Alice thinks the soundtrack of that movie was louder than any thunderstorm she remembers."]
BOB_NEAR = ("Alice also reviewed the quiet film about lighthouse keepers on a remote northern island, "
            "apparently.")  # a near duplicate of ALICE[1]
CAROL = ["Carol enjoyed the documentary on deep sea creatures and their glowing bioluminescent lures.",
         "Carol found the ending of the thriller predictable but the acting was excellent throughout."]


WORK_LOCK = f"{layout.LEDGER}/work.lock"


def _rows() -> list[dict]:
    rows = [{"id": f"a{i}", "text": t, "label": "fresh", "owner": "alice"} for i, t in enumerate(ALICE)]
    rows += [{"id": "b0", "text": ALICE[0], "label": "fresh", "owner": "bob"},  # exact copy under another owner
             {"id": "b1", "text": BOB_NEAR, "label": "rotten", "owner": "bob"}]
    rows += [{"id": f"c{i}", "text": t, "label": "fresh", "owner": "carol"} for i, t in enumerate(CAROL)]
    return rows


@pytest.fixture
def populated(store: Store) -> Store:
    write_source(store, "people", {"part-0.jsonl": jsonl(_rows()[:4]), "part-1.jsonl.gz": jsonl(_rows()[4:], gz=True)})
    ingest_without_engine(store)
    policy = load_policy("research")
    stats = [provenance.validate_partition(store, k, policy) for k in store.list("records", ".parquet")]
    provenance.mark_current(store, policy, stats)
    return store


def _record_texts(store: Store) -> set[str]:
    return set(store.read_parquets(layout.records_dir(), ["text"]).column("text").to_pylist())


def test_owner_deletion_follows_copies_and_purges_every_file(populated: Store) -> None:
    store = populated
    doc = requests.submit(store, "owner", ["alice"], reason="consent withdrawn")
    assert requests.load(store, doc["request_id"])["status"] == "received"
    [done] = process_pending(store)
    assert [h["status"] for h in done["history"]] == ["received", "resolved", "applied"]
    assert done["resolved"]["counts"] == {"selected": 3, "duplicates": 2}  # bob's exact copy and near copy
    assert files_containing(store, [*ALICE, BOB_NEAR]) == []  # raw files included
    assert _record_texts(store) == set(CAROL)
    assert "purple elephants" not in store.read_bytes(layout.request(doc["request_id"])).decode()
    assert len(tombstoned_ids(store)) == 5
    assert set(read_all(store, ["text"]).column("text").to_pylist()) == set(CAROL)


def test_reapply_is_a_no_op_and_redelivery_does_not_resurrect(populated: Store) -> None:
    store = populated
    requests.submit(store, "record_id", [requests.record_id_of("people", "c0")])
    process_pending(store)
    assert process_pending(store) == []
    before = _record_texts(store)
    write_source(store, "people", {"redelivered.jsonl": jsonl(_rows())})  # the provider sends it all again
    ingest_without_engine(store)
    assert CAROL[0] not in _record_texts(store)
    assert _record_texts(store) - before == set()  # nothing deleted came back... and nothing else was lost
    assert before <= _record_texts(store)


def test_text_deletion_keeps_only_hashes_in_the_ledger(populated: Store) -> None:
    doc = requests.submit(populated, "text", requests.text_hashes([CAROL[1]]))
    [done] = process_pending(populated)
    assert done["resolved"]["counts"]["selected"] == 1
    assert CAROL[1] not in populated.read_bytes(layout.request(doc["request_id"])).decode()
    assert files_containing(populated, [CAROL[1]]) == []


def test_crash_mid_apply_is_finished_by_rerunning_without_double_work(populated: Store) -> None:
    store = populated
    doc = resolve(store, requests.submit(store, "owner", ["carol"]))
    write_tombstones(store, doc, StagedKeys(store).hashes_of(set(doc["resolved"]["record_ids"])))
    raw = purge_raw(store, request_blocks(doc))
    assert raw["raw_rows_removed"] == 2  # ... and here the process died: status is still "resolved"
    assert requests.load(store, doc["request_id"])["status"] == "resolved"
    [done] = process_pending(store)
    assert done["applied"]["raw_rows_removed"] == 0 and done["applied"]["partitions_rewritten"] > 0
    assert files_containing(store, CAROL) == []


def test_request_matching_nothing_is_applied_cleanly(populated: Store) -> None:
    requests.submit(populated, "owner", ["nobody"])
    [done] = process_pending(populated)
    assert done["resolved"]["record_ids"] == [] and done["applied"]["rows_removed"] == 0


def test_the_vault_keeps_only_texts_a_dataset_holds_until_destroyed(populated: Store) -> None:
    store = populated
    held = [requests.record_id_of("people", "a0"), requests.record_id_of("people", "c0")]
    store.write_parquet(layout.manifest("reviews", "v1"), pa.table({"record_id": held, "weight": [1.0, 1.0]}))
    doc = requests.submit(store, "owner", ["alice"])
    [done] = process_pending(store)
    assert done["applied"]["vaulted_for_unlearning"] == 1  # a0 only: a1, a2 and bob's copies are in no dataset
    vault = store.read_parquet(layout.vault(doc["request_id"]))
    assert vault.to_pylist() == [{"record_id": held[0], "text": ALICE[0]}]
    assert destroy_vault(store, doc["request_id"]) and not store.exists(layout.vault(doc["request_id"]))
    assert not destroy_vault(store, doc["request_id"])


def _apply_in_process(url: str) -> int:
    return len(process_pending(Store(url)))


def test_two_concurrent_appliers_apply_each_request_exactly_once(populated: Store) -> None:
    store = populated
    first = requests.submit(store, "owner", ["alice"])
    second = requests.submit(store, "owner", ["carol"])
    with mp.get_context("spawn").Pool(2) as pool:
        applied = pool.map(_apply_in_process, [store.url, store.url])
    assert sorted(applied) in ([0, 2], [1, 1])
    for doc in (first, second):
        history = requests.load(store, doc["request_id"])["history"]
        assert [h["status"] for h in history].count("applied") == 1
    assert files_containing(store, ALICE + CAROL) == []
    assert not store.exists(layout.APPLY_LOCK)


def test_a_held_lock_stays_fresh_past_the_stale_age(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # refreshed every 0.25 s: a refresh would have to stall 1.5 s (an fsync on a loaded machine) to fail this; at
    # 0.6 s it failed once, right after 17 GB were deleted
    monkeypatch.setattr(locks, "STALE_LOCK_SECONDS", 1.5)
    with locks.store_lock(store, WORK_LOCK):
        time.sleep(2.0)  # older than the stale age: without the refresh a second taker would break it
        with pytest.raises(CustodyError, match="is held by pid"), locks.store_lock(store, WORK_LOCK, 1.0):
            pass
    assert not store.exists(WORK_LOCK)


def test_a_lock_nobody_refreshes_is_taken_over(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "STALE_LOCK_SECONDS", 0.6)
    store.write_json(WORK_LOCK, {"pid": os.getpid(), "host": "elsewhere", "at": time.time(), "token": "x"})
    with locks.store_lock(store, WORK_LOCK, timeout=5):
        assert store.read_json(WORK_LOCK)["token"] != "x"


def test_unfinished_lists_open_requests_old_enough(populated: Store) -> None:
    store = populated
    done, open_ = requests.submit(store, "owner", ["alice"]), requests.submit(store, "owner", ["carol"])
    requests.set_status(store, requests.load(store, done["request_id"]), "certified")
    assert [d["request_id"] for d in requests.unfinished(store)] == [open_["request_id"]]
    assert requests.unfinished(store, min_age_seconds=3600) == []


SHORT = ["A quietly devastating film about grief that trusts its actors and its silences, and earns every tear by "
         "the end.",
         "Flu shots are now recommended for everyone over six months old, the health agency said on Monday."]


def test_owner_deletion_follows_lightly_edited_short_copies_and_spares_shared_halves(store: Store) -> None:
    copies = [SHORT[0].replace("devastating", "heartbreaking"),  # a word swapped: word-5-gram Jaccard ~0.6
              SHORT[1].upper().replace(",", ""),  # case and punctuation
              SHORT[0].replace("film about", "little film about")]  # a word inserted
    halves = ["A quietly devastating film about grief that trusts its actors, the trailer promised; the result is a "
              "loud mess of car chases.", "Local clinics ran out of masks again this winter, the health agency said "
              "on Monday."]  # each shares a part of an owner's text and differs in the rest
    rows = [{"id": f"s{i}", "text": t, "label": "fresh", "owner": "alice"} for i, t in enumerate(SHORT)]
    rows += [{"id": f"d{i}", "text": t, "label": "rotten", "owner": "dave"} for i, t in enumerate(copies)]
    rows += [{"id": f"e{i}", "text": t, "label": "fresh", "owner": "erin"} for i, t in enumerate(halves)]
    write_source(store, "short", {"part-0.jsonl": jsonl(rows[:3]), "part-1.jsonl": jsonl(rows[3:])})
    ingest_without_engine(store)
    requests.submit(store, "owner", ["alice"])
    [done] = process_pending(store)
    assert done["resolved"]["counts"] == {"selected": 2, "duplicates": 3}
    assert _record_texts(store) == set(halves)
    assert files_containing(store, [*SHORT, *copies]) == []

"""Ingestion tasks without an engine: bad input is quarantined with a reason, the rest goes through."""

import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import ingest
from tasks.datasheet import load_datasheet
from tasks.deletion import requests
from tasks.deletion.apply import process_pending
from tasks.deletion.fingerprints import read_fingerprints
from tasks.deletion.resolve import resolve
from tasks.ids import record_id
from tasks.sources import file_id, list_raw_files
from tests.helpers import datasheet, files_containing, ingest_without_engine, jsonl, write_source

GOOD = {"id": "1", "text": "A perfectly fine review of a film.", "label": "fresh", "owner": "alice"}


def _run_all(store):
    parsed, published = ingest_without_engine(store, ingest.IngestConfig(max_record_bytes=200))
    records = store.read_parquets("records")
    quarantine = store.read_parquets("quarantine")
    return parsed, published, records, quarantine


def _parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def test_malformed_rows_are_quarantined_with_reasons(store) -> None:
    lines = [
        GOOD,
        b"\xff\xfe not utf-8".decode("latin-1"),  # placeholder replaced below with raw bytes
        "{not json",
        "[1, 2]",
        {"id": "4", "label": "x"},
        {"id": "5", "text": 42},
        {"id": "6", "text": "   "},
        {"id": "7", "text": "x" * 500},
        {"id": "8", "text": "ok text here", "label": {"nested": 1}},
        {"text": "no id here at all"},
        {"id": "10", "text": "Another good line of text.", "collected": "not a date"},
    ]
    data = jsonl(lines).replace(b"\xc3\xbf\xc3\xbe not utf-8", b"\xff\xfe not utf-8")
    write_source(store, "messy", {"a.jsonl": data, "b.csv": b"id,text,label,owner\n11,good csv row,fresh,bob\n12,"
                                  b"too,many,columns,here\n13,bad \xff byte,rotten,bob\n",
                                  "c.jsonl.gz": b"this is not gzip", "d.parquet": b"PAR1 corrupt",
                                  "e.parquet": _parquet([{"id": "20", "text": "parquet row", "label": "fresh",
                                                          "owner": "carol"}])},
                 datasheet("messy", fields={"text": "text", "label": "label", "owner": "owner", "id": "id",
                                            "collected_at": "collected"}))
    parsed, _, records, quarantine = _run_all(store)
    assert sorted(records.column("source_record_id").to_pylist()) == ["1", "11", "20"]
    reasons = {(uri.rsplit("/", 1)[-1], tuple(r)) for uri, r in
               zip(quarantine.column("source_uri").to_pylist(), quarantine.column("reasons").to_pylist(), strict=True)}
    assert reasons == {
        ("a.jsonl#L2", ("undecodable_bytes",)), ("a.jsonl#L3", ("malformed_json",)),
        ("a.jsonl#L4", ("malformed_json",)), ("a.jsonl#L5", ("missing_text",)), ("a.jsonl#L6", ("wrong_type",)),
        ("a.jsonl#L7", ("empty_text",)), ("a.jsonl#L8", ("too_large",)), ("a.jsonl#L9", ("wrong_type",)),
        ("a.jsonl#L10", ("missing_id",)), ("a.jsonl#L11", ("wrong_type",)),
        ("b.csv#row=2", ("malformed_row",)), ("b.csv#row=3", ("undecodable_bytes",)),
        ("c.jsonl.gz", ("unreadable_file",)), ("d.parquet", ("unreadable_file",)),
    }
    assert all(q["stage"] == "ingest" and q["detail"] for q in quarantine.to_pylist())
    assert sum(p["rows_in"] for p in parsed) == 11 + 3 + 1


def test_provenance_comes_from_the_datasheet(store) -> None:
    write_source(store, "prov", {"a.jsonl.gz": jsonl([GOOD], gz=True)})
    _, _, records, _ = _run_all(store)
    rec = records.to_pylist()[0]
    assert rec["license"] == "CC-BY-4.0" and rec["consent"] == "granted" and rec["owner_id"] == "alice"
    assert rec["source_uri"].endswith("raw/prov/a.jsonl.gz#L1") and rec["content_hash"] and rec["datasheet_hash"]
    assert rec["record_id"] == record_id("prov", "1")


def test_rerun_is_idempotent_and_duplicates_are_handled(store) -> None:
    rows = [GOOD, {**GOOD, "id": "2"},  # same text, different id: exact duplicate
            {**GOOD, "id": "1", "text": "A different text reusing id one."}]  # id conflict
    write_source(store, "dups", {"a.jsonl": jsonl(rows), "b.jsonl": jsonl([GOOD])})  # b: a re-delivery
    _, published, records, quarantine = _run_all(store)
    assert records.num_rows == 1
    assert quarantine.column("reasons").to_pylist() == [["duplicate_id"]]
    assert sum(p["exact_duplicates"] for p in published) == 2
    before = {k: store.read_bytes(k) for k in store.list("records")}
    parsed, published, _, _ = _run_all(store)
    assert all(p["skipped"] for p in parsed + published)
    assert {k: store.read_bytes(k) for k in store.list("records")} == before


def test_gzip_jsonl_and_csv_and_parquet_read(store) -> None:
    write_source(store, "fmt", {"x.jsonl.gz": jsonl([GOOD], gz=True),
                                "y.csv.gz": gzip.compress(b"id,text,label,owner\n2,csv text,fresh,bob\n"),
                                "z.parquet": _parquet([{"id": "3", "text": "pq text", "label": None, "owner": "c"}]),
                                "notes.txt": b"ignored"})
    _, _, records, quarantine = _run_all(store)
    assert sorted(records.column("source_record_id").to_pylist()) == ["1", "2", "3"]
    assert quarantine.num_rows == 0


# -- a withdrawal is a standing rule: what a deletion names never comes back, whenever it is delivered -------------
ANN = ["Ann thinks the harbour film is a slow, grey portrait of a town that forgot its own fishermen.",
       "Ann wrote that the glacier documentary made her cry twice, once for the ice and once for the music."]
NEW = "Ann, delivered after her deletion: the rain in the last scene of the ferry film felt like a goodbye."
OTHERS = [{"id": "k1", "text": "Ben liked the lighthouse keeper and his dog more than anyone else did.",
           "label": "fresh", "owner": "ben"},
          {"id": "k2", "text": "Cid found the desert chase film loud, long and strangely moving at the end.",
           "label": "rotten", "owner": "cid"}]
WITHDRAW_SHEET = datasheet("people", fields={"text": "text", "label": "label", "owner": "owner", "id": "id",
                                             "collected_at": "collected"})


def _ann(prefix: str, texts: list[str] = ANN) -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": t, "label": "fresh", "owner": "ann"} for i, t in enumerate(texts)]


def _deliver(store, files: dict[str, list[dict]]) -> None:
    write_source(store, "people", {name: jsonl(rows) for name, rows in files.items()}, WITHDRAW_SHEET)


def _delete_owner(store, owner: str = "ann") -> dict:
    requests.submit(store, "owner", [owner], reason="consent withdrawn")
    [done] = process_pending(store)
    return done


def _owners(store) -> set[str]:
    return set(store.read_parquets("records", ["owner_id"]).column("owner_id").to_pylist())


def test_an_owner_delivered_again_after_the_deletion_never_becomes_a_record(store) -> None:
    _deliver(store, {"a.jsonl": _ann("a") + OTHERS})
    ingest_without_engine(store)
    request_id = _delete_owner(store)["request_id"]
    copy = {"id": "z1", "text": ANN[0].upper().replace(",", ""), "label": "fresh", "owner": "zed"}  # case, commas
    edit = {"id": "z2", "text": ANN[1].replace("twice", "thrice"), "label": "fresh", "owner": "zoe"}  # a word
    _deliver(store, {"b.jsonl": [*_ann("b"), *_ann("a"), copy, edit, OTHERS[0] | {"id": "k3"}, *_ann("n", [NEW])]})
    parsed, _ = ingest_without_engine(store)
    assert _owners(store) == {"ben", "cid"}
    stats = next(p for p in parsed if p["file"].endswith("b.jsonl"))
    assert (stats["withdrawn"], stats["withdrawn_owner"], stats["withdrawn_near_copy"]) == (7, 5, 2)
    assert stats["rows_in"] == 8 and stats["parsed"] == 1 and stats["quarantined"] == 0
    assert files_containing(store, [*ANN, NEW, copy["text"], edit["text"]]) == []
    again, _ = ingest_without_engine(store)  # the rewritten file is parsed already: nothing to do
    assert all(p["skipped"] for p in again)
    # ann's new text and zoe's edit, withdrawn at ingest, are remembered (the case-folded copy is ANN[0]'s) ...
    assert read_fingerprints(store, request_id).num_rows == 4
    _deliver(store, {"c.jsonl": [{"id": "z3", "text": NEW.replace("rain", "snow"), "label": "x", "owner": "zed"}]})
    parsed, _ = ingest_without_engine(store)  # ... so its near copies are refused too
    assert next(p for p in parsed if p["file"].endswith("c.jsonl"))["withdrawn_near_copy"] == 1


def test_rows_delivered_but_not_yet_ingested_are_purged_and_never_ingested(store) -> None:
    _deliver(store, {"a.jsonl": OTHERS})
    ingest_without_engine(store)
    _deliver(store, {"b.jsonl": [*_ann("b"), OTHERS[1] | {"id": "k4", "text": "Cid again, on another film."}]})
    done = _delete_owner(store)  # b.jsonl was delivered, never ingested: staging knows nothing of ann
    assert done["resolved"]["record_ids"] == [] and done["applied"]["raw_rows_removed"] == 2
    assert done["applied"]["fingerprints"] == 2
    assert read_fingerprints(store, done["request_id"]).num_rows == 2
    assert files_containing(store, ANN) == []
    ingest_without_engine(store)
    assert _owners(store) == {"ben", "cid"} and store.read_parquets("records").num_rows == 3


def test_a_quarantined_row_of_the_owner_leaves_raw_and_quarantine(store) -> None:
    bad_date = _ann("q", ANN[:1])[0] | {"collected": "not a date"}
    _deliver(store, {"a.jsonl": [bad_date, *OTHERS], "b.jsonl": ["{torn line", *OTHERS]})
    ingest_without_engine(store)
    assert store.read_parquets("quarantine").column("reasons").to_pylist() == [["wrong_type"], ["malformed_json"]]
    done = _delete_owner(store)
    assert done["applied"]["quarantine_rows_removed"] == 1 and done["applied"]["raw_rows_removed"] == 1
    # the torn line in b.jsonl: nobody can tell whose it is, and the locator does not send the purge there
    assert done["applied"]["raw_rows_unreadable"] == 0 and done["applied"]["quarantine_rows_unmatchable"] == 0
    assert done["applied"]["purge"]["targets"] == [["people", file_id("people", "raw/people/a.jsonl"),
                                                    "raw/people/a.jsonl"]]
    assert done["applied"]["fingerprints"] == 1
    assert files_containing(store, [ANN[0]]) == []
    assert store.read_parquets("quarantine").column("reasons").to_pylist() == [["malformed_json"]]


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "received"])
def test_a_deletion_between_parse_and_publish_publishes_nothing_of_the_owner(store, applied: bool) -> None:
    bad_date = _ann("q", ["Ann's bad date row."])[0] | {"collected": "?"}
    _deliver(store, {"a.jsonl": [*_ann("a"), *OTHERS, bad_date]})
    cfg = ingest.IngestConfig()
    sheet, digest = load_datasheet(store, "people")
    [key] = list_raw_files(store, "people")
    ingest.parse_file(store, "people", key, sheet, digest, cfg)
    if applied:
        _delete_owner(store)
    else:  # acknowledged only: the block list counts it from the moment it is received
        requests.submit(store, "owner", ["ann"])
    ingest.cluster_store(store, cfg)
    [published] = [ingest.publish_partition(store, s, f) for s, f in ingest.staged_partitions(store)]
    assert _owners(store) == {"ben", "cid"} and published["records"] == 2
    assert published["withdrawn"] == (0 if applied else 2)  # applied: the purge took them out of staging already
    assert files_containing(store, [*ANN, bad_date["text"]]) == []  # staging, quarantine, raw


def test_rows_staged_after_the_resolution_are_withdrawn_at_publish(store) -> None:
    _deliver(store, {"a.jsonl": _ann("a") + OTHERS})
    ingest_without_engine(store)
    doc = resolve(store, requests.submit(store, "owner", ["ann"]))  # resolved from staging as it is now ...
    edit = {"id": "z2", "text": ANN[1].replace("twice", "thrice"), "label": "fresh", "owner": "zoe"}
    _deliver(store, {"b.jsonl": [edit, *_ann("n", [NEW])]})
    cfg = ingest.IngestConfig()
    sheet, digest = load_datasheet(store, "people")
    [parsed] = [ingest.parse_file(store, "people", k, sheet, digest, cfg)
                for k in list_raw_files(store, "people") if k.endswith("b.jsonl")]  # ... while b is parsed
    assert (parsed["withdrawn_owner"], parsed["parsed"]) == (1, 1)  # the owner is known, the copy not yet
    [done] = process_pending(store)  # applied: fingerprints of ann's texts, but b's rows were never resolved
    assert done["request_id"] == doc["request_id"] and done["resolved"]["counts"]["selected"] == 2
    ingest.cluster_store(store, cfg)
    published = [ingest.publish_partition(store, s, f) for s, f in ingest.staged_partitions(store)]
    assert sum(p.get("withdrawn_near_copy", 0) for p in published) == 1
    assert _owners(store) == {"ben", "cid"}
    assert files_containing(store, [*ANN, NEW, edit["text"]]) == []


def test_records_already_published_are_left_to_the_deletion_to_resolve(store) -> None:
    _deliver(store, {"a.jsonl": _ann("a") + OTHERS})
    ingest_without_engine(store)
    requests.submit(store, "owner", ["ann"])  # received, not yet applied ...
    _deliver(store, {"a.jsonl": [*_ann("a"), *OTHERS, OTHERS[0] | {"id": "k9", "text": "Ben, once more."}]})
    parsed, published = ingest_without_engine(store)  # ... when an ingest parses the file again
    assert [p["withdrawn"] for p in parsed + published] == [0, 0]  # dropping them here would leave no tombstone
    [done] = process_pending(store)
    assert done["resolved"]["counts"]["selected"] == 2 and done["applied"]["rows_removed"] > 0
    assert _owners(store) == {"ben", "cid"} and files_containing(store, ANN) == []

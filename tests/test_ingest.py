"""Ingestion tasks without an engine: bad input is quarantined with a reason, the rest goes through."""

import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import ingest
from tasks.ids import record_id
from tests.helpers import datasheet, ingest_without_engine, jsonl, write_source

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

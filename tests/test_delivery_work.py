"""A delivery's ingest gives work (a Prefect task) only to what it changes: the new file's parse, and the publish
of partitions whose parse, clusters or ledger changed. Everything else is decided from listings and markers, on
disk and on the S3 protocol, and a decision to skip must never hide a change."""

from __future__ import annotations

import uuid

import pytest

from tasks import ingest, layout
from tasks.datasheet import load_datasheet
from tasks.deletion import requests
from tasks.ids import record_id
from tasks.sources import file_id
from tasks.storage import Store
from tests.helpers import ingest_without_engine, jsonl, write_source

LONG = ("the lighthouse keeper counted every ship that passed the northern cape during the long winter of the "
        "storms and wrote each name into a blue ledger kept beside the lamp so that the harbour master could "
        "read them when the ice finally broke in early spring")
A_ROWS = [{"id": "a1", "text": LONG, "owner": "alice"},
          {"id": "a2", "text": "A short note about the village bakery and its famous rye bread.", "owner": "alice"}]
B_ROWS = [{"id": "b1", "text": "Bob's review of a film about a submarine crew lost under the polar ice.",
           "owner": "bob"},
          {"id": "b2", "text": A_ROWS[1]["text"], "owner": "bob"}]  # an exact copy: a and b both have clusters
C_ROWS = [{"id": "c1", "text": LONG.replace("early spring", "late spring"), "owner": "carol"},  # near copy of a1
          {"id": "c2", "text": "Carol planted tomatoes along the fence and none of them survived.", "owner": "carol"}]
CFG = ingest.IngestConfig()


@pytest.fixture(params=["local", "s3"])
def notes(request: pytest.FixtureRequest, store: Store) -> Store:
    """Two files ingested, on disk or on the S3 protocol (moto): where a file's version is its inode and mtime, or
    its ETag, both from a listing and from one file's info."""
    if request.param == "s3":
        store = Store(f"s3://work-{uuid.uuid4().hex[:8]}/store", request.getfixturevalue("moto_s3"))
        store.ensure_bucket()
    write_source(store, "notes", {"a.jsonl": jsonl(A_ROWS), "b.jsonl": jsonl(B_ROWS)})
    ingest_without_engine(store)
    return store


def _part(name: str) -> tuple[str, str]:
    return "notes", file_id("notes", f"raw/notes/{name}")


def _work(store: Store) -> tuple[list[str], set[tuple[str, str]]]:
    """What the flow would make tasks of: files to parse, and partitions to publish (before this run's parses)."""
    todo, _ = ingest.files_to_parse(store, "notes", load_datasheet(store, "notes")[1], CFG)
    partitions = ingest.staged_partitions(store)
    return todo, set(partitions) - set(ingest.unchanged_publishes(store, partitions))


def test_an_unchanged_store_gives_no_work_and_the_skipped_stats_are_the_published_ones(notes: Store) -> None:
    store = notes
    _, first = ingest_without_engine(store)
    assert _work(store) == ([], set())
    assert all(store.exists(layout.dedup_part(layout.CLUSTERS, *part)) for part in ingest.staged_partitions(store))
    ingest.cluster_store(store, CFG)  # clustering again leaves its unchanged files as they were
    assert _work(store) == ([], set())
    parsed, again = ingest_without_engine(store)
    assert all(p["skipped"] for p in parsed + again)
    assert [{k: v for k, v in p.items() if k != "skipped"} for p in again] == \
        [{k: v for k, v in p.items() if k != "skipped"} for p in first]


def test_a_delivery_gives_work_to_its_file_and_to_the_partitions_its_clusters_reach(notes: Store) -> None:
    store = notes
    write_source(store, "notes", {"c.jsonl": jsonl(C_ROWS)}, {})
    todo, _ = _work(store)
    assert todo == ["raw/notes/c.jsonl"]
    sheet, digest = load_datasheet(store, "notes")
    ingest.parse_file(store, "notes", todo[0], sheet, digest, CFG)
    ingest.cluster_store(store, CFG)
    assert _work(store) == ([], {_part("a.jsonl"), _part("c.jsonl")})  # a1 is now the kept member of a cluster;
    # b's clusters (b2, an exact copy of a2) did not change
    ingest_without_engine(store)
    records = store.read_parquets("records", ["record_id", "near_dup_kept"]).to_pylist()
    kept = {r["record_id"]: r["near_dup_kept"] for r in records}
    assert kept[record_id("notes", "a1")] is True and kept[record_id("notes", "c1")] is False
    assert _work(store) == ([], set())


def test_a_request_filed_gives_every_partition_a_check(notes: Store) -> None:
    store = notes
    requests.submit(store, "owner", ["dora"])  # received, not applied, matching nothing yet: it still counts
    assert _work(store) == ([], {_part("a.jsonl"), _part("b.jsonl")})
    ingest_without_engine(store)
    assert _work(store) == ([], set())


def test_a_file_delivered_again_with_other_bytes_is_parsed_again(notes: Store) -> None:
    store = notes
    write_source(store, "notes", {"b.jsonl": jsonl([*B_ROWS, *C_ROWS[1:]])}, {})
    assert _work(store)[0] == ["raw/notes/b.jsonl"]

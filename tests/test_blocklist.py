"""The standing block list is read once per process and kept only while the ledger's files are unchanged: any
request filed, resolved or rewritten, any tombstone or fingerprint written, by this process or another, is seen."""

from __future__ import annotations

import json
import uuid

import pytest

from tasks import layout
from tasks.deletion import requests
from tasks.deletion.apply import process_pending
from tasks.deletion.blocklist import standing_blocks
from tasks.deletion.fingerprints import write_fingerprints
from tasks.storage import Store
from tests.helpers import ingest_without_engine, jsonl, write_source

TEXTS = {"alice": ["The harbour lights flickered twice before the ferry left at dawn.",
                   "Alice keeps a ledger of every tide she has watched since spring.",
                   "Seven gulls argued over a crust on the pier all afternoon."],
         "carol": ["Carol repaired the old clock tower with parts from a bicycle.",
                   "A quiet library smells of dust, glue and forgotten umbrellas.",
                   "The orchestra tuned for an hour and then played only one waltz."]}
ROWS = [{"id": f"{owner}{i}", "text": text, "owner": owner} for owner, texts in TEXTS.items()
        for i, text in enumerate(texts)]


@pytest.fixture(params=["local", "s3"])
def ledger_store(request: pytest.FixtureRequest, store: Store) -> Store:
    """A small ingested store, on disk or on the S3 protocol (moto): the two ways a file's version is listed."""
    if request.param == "s3":
        store = Store(f"s3://blocks-{uuid.uuid4().hex[:8]}/store", request.getfixturevalue("moto_s3"))
        store.ensure_bucket()
    write_source(store, "notes", {"part-0.jsonl": jsonl(ROWS)})
    ingest_without_engine(store)
    return store


def test_the_block_list_is_reused_until_the_ledger_changes(ledger_store: Store) -> None:
    store = ledger_store
    assert not standing_blocks(store)
    assert standing_blocks(store) is standing_blocks(store)  # nothing changed: not read again

    doc = requests.submit(store, "owner", ["carol"])
    received = standing_blocks(store)
    assert received.owners == {"carol": doc["request_id"]}  # counts from receipt

    [applied] = process_pending(store)
    blocks = standing_blocks(store)
    assert blocks is not received
    assert set(blocks.record_ids) == set(applied["resolved"]["record_ids"]) and len(blocks.record_ids) == 3
    assert blocks.copies_from == (f"{doc['request_id']}:3",)  # the deleted texts' fingerprints

    write_fingerprints(store, doc["request_id"], ["a copy an ingest withdrew later, fingerprinted under it"])
    assert standing_blocks(store).copies_from == (f"{doc['request_id']}:4",)


def test_a_request_rewritten_at_the_same_size_is_read_again(ledger_store: Store) -> None:
    store = ledger_store
    doc = requests.submit(store, "owner", ["carol"])
    assert standing_blocks(store).owners == {"carol": doc["request_id"]}
    before = store.read_bytes(layout.request(doc["request_id"]))
    store.write_bytes(layout.request(doc["request_id"]), json.dumps(
        {**doc, "selector": {"kind": "owner", "values": ["alice"]}}, indent=2).encode())
    assert len(store.read_bytes(layout.request(doc["request_id"]))) == len(before)  # same size, other content
    assert standing_blocks(store).owners == {"alice": doc["request_id"]}

"""The one read path: passed the current policy, redacted text, minus tombstones; per partition or whole."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tasks import layout, passed, provenance
from tasks.deletion.tombstones import TOMBSTONE_SCHEMA
from tasks.errors import Fatal
from tasks.ids import record_id
from tasks.policy import load_policy
from tests.helpers import ingest_without_engine, jsonl, write_source

EMAIL = "jane.doe@example.com"
ROWS = [{"id": "clean", "text": "a warm and funny film about a family", "label": "fresh", "owner": "o1"},
        {"id": "mail", "text": f"great film, write to {EMAIL} for more", "label": "fresh", "owner": "o2"},
        {"id": "card", "text": "my card 4111 1111 1111 1111 is on file here", "label": "rotten", "owner": "o3"},
        {"id": "gone", "text": "a dull and lifeless plot all the way through", "label": "rotten", "owner": "o4"}]


@pytest.fixture
def raw_store(store):
    write_source(store, "rt", {"a.jsonl": jsonl(ROWS[:2]), "b.jsonl": jsonl(ROWS[2:])})
    ingest_without_engine(store)
    store.write_parquet(layout.tombstones("req-1"), pa.table(
        {"record_id": [record_id("rt", "gone")], "content_hash": ["h"], "request_id": ["req-1"]},
        schema=TOMBSTONE_SCHEMA))
    return store


def _validate(store) -> None:
    policy = load_policy("research")  # redacts e-mail, rejects credit cards
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list(layout.records_dir(), layout.PARQUET)])


def test_read_all_gives_passed_records_with_redacted_text_and_no_tombstoned_ones(raw_store) -> None:
    _validate(raw_store)
    table = passed.read_all(raw_store, ["text", "policy_hash"])
    texts = dict(zip(table.column("record_id").to_pylist(), table.column("text").to_pylist(), strict=True))
    assert set(texts) == {record_id("rt", "clean"), record_id("rt", "mail")}  # card rejected, gone tombstoned
    assert EMAIL not in texts[record_id("rt", "mail")] and "[EMAIL]" in texts[record_id("rt", "mail")]
    assert set(table.column("policy_hash").to_pylist()) == {passed.current_policy(raw_store)}


def test_before_validation_only_scoring_may_read_and_then_every_live_record(raw_store) -> None:
    part = passed.partitions(raw_store)[1]
    with pytest.raises(Fatal, match="custody validate"):
        passed.read_all(raw_store)
    with pytest.raises(Fatal, match="custody validate"):
        passed.read_partition(raw_store, part)
    ids = passed.read_partition(raw_store, part, ["text"], allow_unvalidated=True).column("record_id").to_pylist()
    assert ids == [record_id("rt", "card")]  # the tombstoned record is gone even before validation


def test_a_partition_ingested_after_validation_has_no_verdict(raw_store) -> None:
    _validate(raw_store)
    write_source(raw_store, "rt", {"c.jsonl": jsonl([{"id": "late", "text": "a late but lovely review of it",
                                                     "label": "fresh", "owner": "o5"}])})
    ingest_without_engine(raw_store)
    late = next(p for p in passed.partitions(raw_store, ["rt"]) if p.file_id.startswith("c.jsonl"))
    with pytest.raises(Fatal, match="no verdict"):
        passed.read_partition(raw_store, late)
    assert passed.read_partition(raw_store, late, ["text"], require_verdict=False).num_rows == 0
    assert record_id("rt", "late") not in passed.read_all(raw_store, ["text"]).column("record_id").to_pylist()


def test_lookup_finds_only_usable_records_and_snippets_never_show_identifiers(raw_store) -> None:
    _validate(raw_store)
    wanted = [record_id("rt", k) for k in ("mail", "card", "gone")]
    found = passed.lookup(raw_store, wanted, ["text", "source"])
    assert found.column("record_id").to_pylist() == [record_id("rt", "mail")]
    long_text = f"{'word ' * 30}{EMAIL} and more"
    shown = passed.snippet(long_text)
    assert EMAIL not in shown and len(shown) == passed.SNIPPET_CHARS and shown.endswith("...")
    assert passed.snippet(f"mail {EMAIL}") == "mail [EMAIL]" and passed.snippet(None) == ""

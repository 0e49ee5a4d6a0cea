"""The scoring report (published as a Prefect artifact) shows record ids; redacted snippets stay in the store."""

from __future__ import annotations

import pytest

from tasks import layout, provenance
from tasks.ids import record_id
from tasks.policy import load_policy
from tasks.scoring import quality
from tasks.scoring.report import FLAGGED_FILE, scoring_report
from tests.helpers import ingest_without_engine, jsonl, write_source

EMAIL, PHONE = "jane.doe@example.com", "(650) 253-0000"
PII_TEXT = f"a lovely film, write to {EMAIL} or call {PHONE} for the tickets"


@pytest.fixture
def pii_store(store):
    rows = [{"id": str(i), "text": f"the story of the year and a warm film number {i}", "label": "fresh",
             "owner": "o"} for i in range(6)]
    rows.append({"id": "pii", "text": PII_TEXT, "label": "fresh", "owner": "o"})
    write_source(store, "rt", {"a.jsonl": jsonl(rows)})
    ingest_without_engine(store)
    return store


def _validate(store) -> None:
    policy = load_policy("research")  # redacts e-mail and phone numbers
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list(layout.records_dir(), layout.PARQUET)])


def test_the_report_shows_the_record_id_and_not_the_email_or_phone_under_the_research_policy(pii_store) -> None:
    _validate(pii_store)
    rid = quality.run(pii_store, quality.QualityConfig())["run_id"]
    markdown, flagged, _ = scoring_report(pii_store, "quality", rid)
    assert record_id("rt", "pii") in markdown
    assert EMAIL not in markdown and PHONE not in markdown and "253-0000" not in markdown
    assert "lovely film" not in markdown  # the artifact names records; the redacted snippet stays in the store
    snippets = pii_store.read_parquet(layout.scoring_report(rid, FLAGGED_FILE)).column("snippet").to_pylist()
    assert any("[EMAIL]" in t and "[PHONE]" in t for t in snippets)
    assert len(flagged) == 7 and all(len(r["text"]) <= 120 for r in flagged)


def test_the_report_redacts_identifiers_even_before_any_policy_has(pii_store) -> None:
    rid = quality.run(pii_store, quality.QualityConfig())["run_id"]  # scoring before validation is allowed
    markdown, _, _ = scoring_report(pii_store, "quality", rid)
    assert record_id("rt", "pii") in markdown
    assert EMAIL not in markdown and "253-0000" not in markdown

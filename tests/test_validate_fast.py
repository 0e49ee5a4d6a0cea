"""The vectorised validation path gives exactly the verdicts of scanning every row and handing GX every column.

The PII prefilter (``tasks.pii.candidates``) may flag rows with no PII but must never pass over a row the precise
scanner finds PII in; hypothesis hunts for such a row among texts built from the characters the detectors care
about. A few thousand adversarial records then go through ``validate_table`` and through a straightforward
reference, and the verdict tables and quarantine rows must agree.
"""

from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.pii import PII_KINDS, candidates, redact, scan
from tasks.policy import Policy, load_policy
from tasks.provenance import pii_columns, run_suite, validate_table
from tasks.schema import record_schema
from tests.test_provenance import _rec

SNIPPETS = ["jane.doe@example.com", "a@b.co", "+1 415-555-2671", "(415) 555-2671", "415.555.2671", "+44 20 7946 0958",
            "4111 1111 1111 1111", "4111-1111-1111-1111", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
            "10.0.0.1", "255.255.255.255", "2001:db8::1", "fe80:0:0:0:200:f8ff:fe21:67cf", "ab:cd::ef",
            "http://", "https://x.co/", "www.", "WWW.", "hTTp://", "ext. 12", "x123", "٤١٥٥٥٥٢٦٧١",
            "０３-１２３４-５６７８"]
SPACES = " \t\n\x0b\x1c\x85\u00a0\u2003\u3000\u200b\u00ad"  # Python's whitespace of several kinds, and two non-spaces
# digits of several scripts, the detectors' separators and letters
ALPHABET = "0123456789٣０߀१-.:/@+()[]~x_%#abcdefxABCDEFXZwhtps" + SPACES
NO_DIGITS = "".join(c for c in ALPHABET if not c.isdigit())
# short texts of few parts, some without any digit, so that one detector's match is often the row's only one
texts = st.lists(st.one_of(st.sampled_from(SNIPPETS), st.sampled_from(SPACES), st.text(alphabet=ALPHABET, max_size=4),
                           st.text(alphabet=NO_DIGITS, max_size=6)), max_size=4).map("".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=50))
def test_prefilter_never_passes_over_a_row_with_pii(batch: list[str]) -> None:
    flagged = candidates(pa.array(batch, pa.string())).to_pylist()
    for text, flag in zip(batch, flagged, strict=True):
        assert flag or not scan(text), text


def test_prefilter_leaves_plain_text_and_digits_in_urls_alone() -> None:
    plain = ["A thoughtful review of the film.", "naïve café — 東京 😀", "see http://t.co/4815162342 now", "",
             "www.example.com/a/1234567890", None]
    assert candidates(pa.array(plain, pa.string())).to_pylist() == [False] * len(plain)
    assert candidates(pa.array(["call 415-555-2671", "x@y.io", "ab:cd:"])).to_pylist() == [True] * 3


def _adversarial(n: int, seed: int = 16) -> list[dict]:
    """Records with PII at the edges, unicode, nulls, empty and very long texts, duplicate ids, bad provenance."""
    rng = random.Random(seed)
    words = ["review", "naïve", "東京", "😀", "Straße", "the", "2019", "no.", "x", "ab:", "@", "www.a1.com/7"]
    fields = {"license": ["CC-BY-4.0"] * 6 + ["CC0-1.0", "CC-BY-NC-4.0", "GPL-3.0-only", "unknown", None],
              "consent": ["granted"] * 6 + ["revoked", "unknown", "maybe", None],
              "owner_id": ["alice"] * 8 + [None], "tdm_reservation": [None] * 6 + [True, False]}
    rows = []
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        pii = rng.choice(SNIPPETS)
        text = rng.choice([body, f"{pii} {body}", f"{body} {pii}", f"{pii}{body}{pii}", pii, "", "x" * 19,
                           "y" * 20, body + "\u00a0" + pii])
        if rng.random() < 0.01:  # past the commercial policy's 100,000 characters
            text = f"{pii} {'lorem ipsum ' * 9000}{text}"
        rid = f"r{i}" if rng.random() > 0.01 else "r0"  # a few duplicated ids
        rows.append(_rec(rid, text, **{k: rng.choice(v) for k, v in fields.items()}))
    return rows


def _reference(records: pa.Table, policy: Policy) -> list[dict]:
    """Every row scanned in Python, and GX given every column: the path before the prefilter."""
    df = records.to_pandas()
    scans = [scan(t, policy.pii.phone_region) if isinstance(t, str) else [] for t in df["text"]]
    for kind in PII_KINDS:
        df[f"pii_{kind}"] = [sum(s.kind == kind for s in spans) for spans in scans]
    reasons = run_suite(df, policy)[0]
    to_redact = policy.pii.kinds_with("redact")
    return [{"record_id": rid, "passed": rid not in reasons, "reasons": reasons.get(rid, []),
             "text_redacted": redact(t, spans, to_redact) if any(s.kind in to_redact for s in spans) else None,
             "pii_found": sorted({s.kind for s in spans}), "policy_hash": policy.hash}
            for rid, t, spans in zip(df["record_id"], df["text"], scans, strict=True)]


def test_verdicts_equal_the_reference_on_adversarial_records() -> None:
    records = pa.Table.from_pylist(_adversarial(3000), schema=record_schema())
    for policy in (load_policy("commercial"), load_policy("research")):
        validation, quarantine, _ = validate_table(records, policy)
        expected = _reference(records, policy)
        assert validation.to_pylist() == expected
        assert [(q["record_id"], q["reasons"], q["raw"]) for q in quarantine] == [
            (e["record_id"], e["reasons"], t[:4096]) for e, t in zip(expected, records.column("text").to_pylist(),
                                                                   strict=True) if not e["passed"]]
        kinds = {k for e in expected for k in e["pii_found"]}
        assert kinds == set(PII_KINDS) and 0 < sum(e["passed"] for e in expected) < len(expected)


def test_a_partition_without_rows_validates_to_nothing() -> None:
    """A chunked column without chunks (a partition whose rows were all purged or tombstoned) once crashed the whole
    process in the prefilter (pyarrow's indices_nonzero): it must validate to an empty verdict table."""
    texts = pa.chunked_array([], pa.string())
    assert texts.num_chunks == 0
    columns = pii_columns(texts, load_policy("commercial"))
    assert {len(v) for v in columns.values()} == {0}
    verdicts, quarantine, _ = validate_table(record_schema().empty_table(), load_policy("commercial"))
    assert verdicts.num_rows == 0 and quarantine == []

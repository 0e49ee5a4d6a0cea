"""The provenance gate on a planted-violation corpus: every violation caught with the right reason."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from tasks.policy import PolicyError, load_policy, parse_policy
from tasks.provenance import expectation_specs, validate_table
from tasks.schema import record_schema

CLEAN = "A thoughtful and well written review of the film."


def _rec(rid: str, text: str = CLEAN, **kw) -> dict:
    base = {"record_id": rid, "text": text, "label": "fresh", "source": "planted", "source_record_id": rid,
            "owner_id": "alice", "license": "CC-BY-4.0", "consent": "granted", "consent_basis": "contract",
            "consent_at": None, "collected_at": None, "ingested_at": dt.datetime.now(dt.UTC),
            "source_uri": f"file:///raw/planted/a.jsonl#L{rid}", "content_hash": rid, "n_chars": len(text),
            "near_dup_cluster": None, "near_dup_kept": True, "datasheet_hash": "x", "extra": None}
    base.update(kw)
    return base


PLANTED = {  # record id -> (record, reasons expected under the commercial policy)
    "ok1": (_rec("ok1"), []),
    "ok2": (_rec("ok2", license="CC0-1.0", text="Invalid card 4111 1111 1111 1112 is just a number."), []),
    "ok3": (_rec("ok3", license="MIT", text="Server at 10.0.0.1 was down, said the admin."), []),  # redacted
    "nolicense": (_rec("nolicense", license=None), ["license_missing"]),
    "unknownlic": (_rec("unknownlic", license="unknown"), ["license_unknown"]),
    "nc": (_rec("nc", license="CC-BY-NC-4.0"), ["license_noncommercial"]),
    "gpl": (_rec("gpl", license="GPL-3.0-only"), ["license_not_allowed"]),
    "revoked": (_rec("revoked", consent="revoked"), ["consent_revoked", "consent_not_granted"]),
    "nullconsent": (_rec("nullconsent", consent=None), ["consent_missing"]),  # GX InSet passes nulls
    "email": (_rec("email", text="Write to jane.doe@example.com for the screener copy."), ["pii_email"]),
    "phone": (_rec("phone", text="Call the box office at +1 415-555-2671 tonight."), ["pii_phone"]),
    "card": (_rec("card", text="Paid with 4111 1111 1111 1111 at the cinema."), ["pii_credit_card"]),
    "iban": (_rec("iban", text="Refunds go to DE89 3704 0044 0532 0130 00 please."), ["pii_iban"]),
    "short": (_rec("short", text="meh"), ["text_too_short"]),
    "noowner": (_rec("noowner", owner_id=None), ["missing_owner_id"]),
}


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=record_schema())


def test_every_planted_violation_is_caught_and_no_clean_record_rejected() -> None:
    policy = load_policy("commercial")
    dup = _rec("dupe", text="First text with this id, long enough.")
    dup2 = _rec("dupe", text="Second text with the same id, long enough.")
    validation, quarantine, report = validate_table(_table([r for r, _ in PLANTED.values()] + [dup, dup2]), policy)
    got = {}
    for q in quarantine:
        got.setdefault(q["record_id"], sorted(q["reasons"]))
    expected = {rid: sorted(reasons) for rid, (_, reasons) in PLANTED.items() if reasons}
    expected["dupe"] = ["duplicate_id"]
    assert got == expected
    verdict = {r["record_id"]: r for r in validation.to_pylist()}
    assert verdict["ok1"]["passed"] and verdict["ok2"]["passed"] and verdict["ok3"]["passed"]
    assert verdict["ok3"]["text_redacted"] == "Server at [IP_ADDRESS] was down, said the admin."
    assert all("(expect_" in q["detail"] for q in quarantine)  # the expectation that caught it is named
    assert {r["reason"] for r in report} >= {"license_unknown", "pii_email", "consent_revoked"}


def test_research_policy_allows_nc_and_unknown_but_never_revoked() -> None:
    policy = load_policy("research")
    rows = [PLANTED[k][0] for k in ("nc", "unknownlic", "revoked", "email")]
    validation, quarantine, _ = validate_table(_table(rows), policy)
    assert [q["record_id"] for q in quarantine] == ["revoked"]
    email = next(v for v in validation.to_pylist() if v["record_id"] == "email")
    assert email["passed"] and "[EMAIL]" in email["text_redacted"]


def test_suite_has_one_expectation_per_rule_and_gx_kinds() -> None:
    specs = expectation_specs(load_policy("commercial"))
    reasons = [s[0] for s in specs]
    assert len(reasons) == len(set(reasons))
    assert ("consent_not_granted", "ExpectColumnValuesToBeInSet") in [(r, c) for r, c, _ in specs]
    assert ("consent_missing", "ExpectColumnValuesToNotBeNull") in [(r, c) for r, c, _ in specs]


@pytest.mark.parametrize(("yaml_text", "field"), [
    ("name: x\npurpose: commercial\nlicenses: {allowed: [CC-BY-NC-4.0]}\n", "licenses.allowed"),
    ("name: x\npurpose: fun\nlicenses: {allowed: [MIT]}\n", "purpose"),
    ("name: x\npurpose: research\nlicenses: {allowed: [MIT]}\npii: {email: drop}\n", "pii.email"),
    ("name: x\npurpose: research\nlicenses: {allowed: [MIT]}\nrequired_fields: [nope]\n", "required_fields"),
    ("name: x\npurpose: research\nlicenses: {allowed: [MIT]}\ntext_length: {min: 9, max: 3}\n", "text_length"),
])
def test_bad_policy_names_the_field(yaml_text: str, field: str) -> None:
    with pytest.raises(PolicyError, match=f"field '{field}"):
        parse_policy(yaml_text, "bad.yaml")


def test_digits_in_urls_are_not_pii() -> None:
    from tasks.pii import scan

    assert scan("recipe http://pinterest.com/pin/34832597089660045/ via @pinterest") == []
    assert [s.kind for s in scan("card 4111 1111 1111 1111, not 4111 1111 1111 1112")] == ["credit_card"]

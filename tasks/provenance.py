"""The provenance gate: a Great Expectations suite generated from a policy, run per record partition.

Every rule of the policy becomes one GX expectation whose ``meta.reason`` is a machine-readable reason code;
GX reports failing rows, so each rejected record is quarantined with every reason that applies. PII is found
by ``tasks.pii`` (an Arrow prefilter over the column, then the precise scanner on the rows it flags): kinds the
policy rejects become count columns GX checks, kinds it redacts are replaced in the validated text. GX sees only
the columns its suite reads. Results go to ``validation/<policy-hash>/`` (pass/fail per
record, redacted text), ``quarantine/`` (stage ``validate``) and ``reports/validation/`` (GX results).
Records themselves are never rewritten, so a new policy re-evaluates everything.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
from collections import Counter, defaultdict
from functools import cache
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.errors import Fatal
from tasks.passed import live_records
from tasks.pii import PII_KINDS, candidates, redact, scan
from tasks.policy import Policy
from tasks.schema import quarantine_schema
from tasks.storage import Store

log = logging.getLogger(__name__)
VALIDATION_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("passed", pa.bool_()), ("reasons", pa.list_(pa.string())),
    ("text_redacted", pa.string()), ("pii_found", pa.list_(pa.string())), ("policy_hash", pa.string()),
])


def _allowed_regex(policy: Policy) -> str:
    patterns = [*policy.licenses.allowed, "unknown"]
    return "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)


def expectation_specs(policy: Policy) -> list[tuple[str, str, dict[str, Any]]]:
    """``(reason, GX expectation class name, kwargs)`` for every rule of ``policy``."""
    specs: list[tuple[str, str, dict[str, Any]]] = [
        (f"missing_{f}", "ExpectColumnValuesToNotBeNull", {"column": f})
        for f in policy.required_fields if f not in ("license", "consent")]
    specs += [
        ("license_missing", "ExpectColumnValuesToNotBeNull", {"column": "license"}),
        ("license_not_allowed", "ExpectColumnValuesToMatchRegex",
         {"column": "license", "regex": _allowed_regex(policy)}),
        ("consent_missing", "ExpectColumnValuesToNotBeNull", {"column": "consent"}),
        ("consent_invalid", "ExpectColumnValuesToBeInSet",
         {"column": "consent", "value_set": ["granted", "revoked", "unknown"]}),
        ("consent_revoked", "ExpectColumnValuesToNotBeInSet", {"column": "consent", "value_set": ["revoked"]}),
        ("text_too_short", "ExpectColumnValueLengthsToBeBetween",
         {"column": "text", "min_value": policy.text_length.min}),
        ("text_too_long", "ExpectColumnValueLengthsToBeBetween",
         {"column": "text", "max_value": policy.text_length.max}),
        ("duplicate_id", "ExpectColumnValuesToBeUnique", {"column": "record_id"}),
    ]
    if not policy.licenses.allow_unknown:
        specs.append(("license_unknown", "ExpectColumnValuesToNotBeInSet",
                      {"column": "license", "value_set": ["unknown"]}))
    if policy.purpose == "commercial":
        specs.append(("license_noncommercial", "ExpectColumnValuesToNotMatchRegex",
                      {"column": "license", "regex": "-NC"}))
    if policy.tdm.respect_reservations:
        specs.append(("tdm_reserved", "ExpectColumnValuesToNotBeInSet",
                      {"column": "tdm_reservation", "value_set": [True]}))
    if policy.consent.require_granted:
        specs.append(("consent_not_granted", "ExpectColumnValuesToBeInSet",
                      {"column": "consent", "value_set": ["granted"]}))
    specs += [(f"pii_{kind}", "ExpectColumnValuesToBeBetween", {"column": f"pii_{kind}", "max_value": 0})
              for kind in sorted(policy.pii.kinds_with("reject"))]
    return specs


@cache
def _gx_objects(policy_json: str) -> tuple[Any, Any]:
    """An ephemeral GX context with a pandas batch definition and the policy's suite (one per process)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    policy = Policy.model_validate_json(policy_json)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("custody").add_dataframe_asset("records")
    batch_definition = asset.add_batch_definition_whole_dataframe("partition")
    suite = context.suites.add(gx.ExpectationSuite(name=f"policy-{policy.name}-{policy.hash}"))
    for reason, cls, kwargs in expectation_specs(policy):
        suite.add_expectation(getattr(gxe, cls)(**kwargs, meta={"reason": reason}))
    return batch_definition, suite


def suite_json(policy: Policy) -> dict[str, Any]:
    """The generated suite as GX's own JSON (stored under reports/ beside the results)."""
    return _gx_objects(policy.model_dump_json())[1].to_json_dict()


def run_suite(df: pd.DataFrame, policy: Policy) -> tuple[dict[str, list[str]], dict[str, str], list[dict]]:
    """Validate ``df``; returns reasons per record_id, expectation type per reason, and a compact GX report.

    GX names failing rows by their index (positions: ``df`` has a range index); asking it for ``record_id``
    instead makes it look each failing row up one by one (about a fifth of its time at 17% rejects).
    """
    batch_definition, suite = _gx_objects(policy.model_dump_json())
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    ids = df["record_id"].tolist()
    reasons: dict[str, list[str]] = defaultdict(list)
    caught_by: dict[str, str] = {}
    report = []
    for res in result.results:
        reason = res.expectation_config.meta["reason"]
        caught_by[reason] = res.expectation_config.type
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise Fatal(f"GX expectation for {reason} raised: {res.exception_info.get('exception_message')}")
        for row in res.result.get("unexpected_index_list") or []:
            if reason not in reasons[ids[row]]:
                reasons[ids[row]].append(reason)
        report.append({"reason": reason, "expectation": res.expectation_config.type, "success": res.success,
                       "kwargs": res.expectation_config.kwargs,
                       "unexpected_count": res.result.get("unexpected_count", 0),
                       "element_count": res.result.get("element_count", len(df))})
    return reasons, caught_by, report


def pii_columns(texts: pa.ChunkedArray, policy: Policy) -> dict[str, pa.Array]:
    """``pii_<kind>`` counts, ``pii_found`` and ``text_redacted`` (null when nothing was redacted) per row.

    The precise scanner runs in Python only on rows the Arrow prefilter (``tasks.pii.candidates``) flags: it never
    passes over a row the scanner would find PII in, so the columns equal a scan of every row, at a fraction of it.
    """
    n = len(texts)
    flags = candidates(texts)  # indices_nonzero of a chunked array without chunks crashes the process (pyarrow 25)
    rows = pc.indices_nonzero(flags.combine_chunks() if isinstance(flags, pa.ChunkedArray) else flags)
    counts = {kind: [0] * n for kind in PII_KINDS}
    found: list[list[str]] = [[]] * n  # the shared empty list is never mutated; hits get their own
    redacted: list[str | None] = [None] * n
    to_redact = policy.pii.kinds_with("redact")
    for i, text in zip(rows.to_pylist(), texts.take(rows).to_pylist(), strict=True):
        spans = scan(text, policy.pii.phone_region)
        for span in spans:
            counts[span.kind][i] += 1
        found[i] = sorted({s.kind for s in spans})
        if any(s.kind in to_redact for s in spans):
            redacted[i] = redact(text, spans, to_redact)
    return {**{f"pii_{kind}": pa.array(c, pa.int64()) for kind, c in counts.items()},
            "pii_found": pa.array(found, pa.list_(pa.string())), "text_redacted": pa.array(redacted, pa.string())}


def suite_frame(records: pa.Table, pii: dict[str, pa.Array], policy: Policy) -> pd.DataFrame:
    """The columns the suite reads, and ``record_id`` by which GX names failing rows, as a pandas frame.

    GX's pandas engine copies and indexes every column it is given, so only these leave Arrow. Records ingested
    before reservations were recorded state none (a null ``tdm_reservation``).
    """
    needed = dict.fromkeys(["record_id", *(kwargs["column"] for _, _, kwargs in expectation_specs(policy))])
    return pa.table({name: _suite_column(records, pii, name) for name in needed}).to_pandas()


def _suite_column(records: pa.Table, pii: dict[str, pa.Array], name: str) -> pa.Array | pa.ChunkedArray:
    if name in pii:
        return pii[name]
    if name == "tdm_reservation" and name not in records.column_names:
        return pa.nulls(records.num_rows, pa.bool_())
    return records.column(name)


def _quarantine_rows(records: pa.Table, reasons: dict[str, list[str]], caught_by: dict[str, str],
                     policy: Policy) -> list[dict[str, Any]]:
    """One quarantine row per rejected record (every row of a duplicated id), with its reasons and raw text."""
    if not reasons:
        return []
    hit = pc.is_in(records.column("record_id"), value_set=pa.array(list(reasons), pa.string()))
    now = dt.datetime.now(dt.UTC)
    rows = records.filter(hit).select(["source", "source_uri", "record_id", "text"]).to_pylist()
    for row in rows:
        why = reasons[row["record_id"]]
        text = row.pop("text")
        row.update(stage="validate", reasons=why, quarantined_at=now,
                   detail="; ".join(f"{r} ({caught_by[r]})" for r in why) + f" [policy {policy.hash}]",
                   raw=text[:4096] if isinstance(text, str) else None)
    return rows


def validate_table(records: pa.Table, policy: Policy) -> tuple[pa.Table, list[dict[str, Any]], list[dict]]:
    """Pure core: validation rows, quarantine rows and the GX report for one table of records."""
    pii = pii_columns(records.column("text"), policy)
    reasons, caught_by, report = run_suite(suite_frame(records, pii, policy), policy) if records.num_rows else (
        {}, {}, [])
    ids = records.column("record_id").to_pylist()
    validation = pa.table({
        "record_id": ids, "passed": [r not in reasons for r in ids], "reasons": [reasons.get(r, []) for r in ids],
        "text_redacted": pii["text_redacted"], "pii_found": pii["pii_found"],
        "policy_hash": [policy.hash] * len(ids)}, schema=VALIDATION_SCHEMA)
    return validation, _quarantine_rows(records, reasons, caught_by, policy), report


def _retire_other_policies(store: Store, part: layout.Partition, keep: str) -> None:
    """Delete ``part``'s validation quarantine files of other policies: only the current verdict stands."""
    for stale in store.list(layout.quarantine_dir(part.source), layout.PARQUET):
        if layout.is_validation_quarantine_of(stale, part) and stale != keep:
            store.delete(stale)


def validate_partition(store: Store, key: str, policy: Policy, tombstoned: frozenset[str] = frozenset()
                       ) -> dict[str, Any]:
    """Driver for one ``records/`` partition; skipped when done under this policy for the same partition bytes."""
    part = layout.partition_of(key)
    q_key = layout.validation_quarantine(part, policy.hash)
    marker = layout.validation_marker(policy.hash, part)
    fingerprint = {"size": store.size(key), "tombstones": len(tombstoned)}
    _retire_other_policies(store, part, q_key)
    if store.exists(marker) and store.read_json(marker)["fingerprint"] == fingerprint:
        return {**store.read_json(marker)["stats"], "skipped": True}
    records = live_records(store, part, tombstoned=tombstoned)
    validation, quarantine, report = validate_table(records, policy)
    store.write_parquet(layout.verdicts(policy.hash, part), validation, VALIDATION_SCHEMA)
    if quarantine:
        store.write_parquet(q_key, pa.Table.from_pylist(quarantine, schema=quarantine_schema()), quarantine_schema())
    else:
        store.delete(q_key)
    store.write_json(layout.validation_report(policy.hash, part),
                     {"policy": policy.name, "policy_hash": policy.hash, "partition": key, "results": report})
    counts = Counter(r for q in quarantine for r in q["reasons"])
    stats = {"source": part.source, "partition": part.name, "checked": records.num_rows,
             "passed": records.num_rows - len(quarantine), "rejected": len(quarantine),
             "redacted": int(pc.sum(pc.is_valid(validation.column("text_redacted"))).as_py() or 0),
             **{f"rejected_{k}": v for k, v in sorted(counts.items())}}
    store.write_json(marker, {"fingerprint": fingerprint, "stats": stats})
    return {**stats, "skipped": False}


def mark_current(store: Store, policy: Policy, stats: list[dict[str, Any]]) -> None:
    """Make ``policy`` the one whose verdicts downstream stages read (``tasks.passed``)."""
    store.write_json(layout.validation_suite(policy.hash), suite_json(policy))
    store.write_json(layout.CURRENT_POLICY, {"policy": policy.name, "policy_hash": policy.hash,
                                             "purpose": policy.purpose,
                                             "validated_at": dt.datetime.now(dt.UTC).isoformat(),
                                             "checked": sum(s["checked"] for s in stats),
                                             "passed": sum(s["passed"] for s in stats),
                                             "policy_doc": policy.model_dump()})

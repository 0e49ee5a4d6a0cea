"""The provenance gate: a Great Expectations suite generated from a policy, run per record partition.

Every rule of the policy becomes one GX expectation whose ``meta.reason`` is a machine-readable reason code;
GX reports failing rows by ``record_id``, so each rejected record is quarantined with every reason that
applies. PII is found by ``tasks.pii``: kinds the policy rejects become count columns GX checks, kinds it
redacts are replaced in the validated text. Results go to ``validation/<policy-hash>/`` (pass/fail per
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
from tasks.pii import PII_KINDS, redact, scan
from tasks.policy import Policy
from tasks.schema import quarantine_schema
from tasks.storage import Store

log = logging.getLogger(__name__)
VALIDATION_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("passed", pa.bool_()), ("reasons", pa.list_(pa.string())),
    ("text_redacted", pa.string()), ("pii_found", pa.list_(pa.string())), ("policy_hash", pa.string()),
])
_COLUMNS = ["record_id", "text", "source", "owner_id", "license", "consent", "label", "source_uri", "content_hash",
            "collected_at", "consent_at", "source_record_id", "tdm_reservation"]


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
    """Validate ``df``; returns reasons per record_id, expectation type per reason, and a compact GX report."""
    batch_definition, suite = _gx_objects(policy.model_dump_json())
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                  "unexpected_index_column_names": ["record_id"]})
    reasons: dict[str, list[str]] = defaultdict(list)
    caught_by: dict[str, str] = {}
    report = []
    for res in result.results:
        reason = res.expectation_config.meta["reason"]
        caught_by[reason] = res.expectation_config.type
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise Fatal(f"GX expectation for {reason} raised: {res.exception_info.get('exception_message')}")
        for row in res.result.get("unexpected_index_list") or []:
            if reason not in reasons[row["record_id"]]:
                reasons[row["record_id"]].append(reason)
        report.append({"reason": reason, "expectation": res.expectation_config.type, "success": res.success,
                       "kwargs": res.expectation_config.kwargs,
                       "unexpected_count": res.result.get("unexpected_count", 0),
                       "element_count": res.result.get("element_count", len(df))})
    return reasons, caught_by, report


def apply_pii(df: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """Add ``pii_<kind>`` counts, ``pii_found`` and ``text_redacted`` (null when nothing was redacted)."""
    scans = [scan(t, policy.pii.phone_region) if isinstance(t, str) else [] for t in df["text"]]
    out = df.copy()
    for kind in PII_KINDS:
        out[f"pii_{kind}"] = [sum(1 for s in spans if s.kind == kind) for spans in scans]
    out["pii_found"] = [sorted({s.kind for s in spans}) for spans in scans]
    to_redact = policy.pii.kinds_with("redact")
    out["text_redacted"] = [redact(t, spans, to_redact) if any(s.kind in to_redact for s in spans) else None
                            for t, spans in zip(df["text"], scans, strict=True)]
    return out


def validate_table(records: pa.Table, policy: Policy) -> tuple[pa.Table, list[dict[str, Any]], list[dict]]:
    """Pure core: validation rows, quarantine rows and the GX report for one table of records."""
    df = apply_pii(records.select([c for c in _COLUMNS if c in records.column_names]).to_pandas(), policy)
    if "tdm_reservation" not in df:  # records ingested before reservations were recorded state none
        df["tdm_reservation"] = None
    reasons, caught_by, report = run_suite(df, policy) if len(df) else ({}, {}, [])
    now = dt.datetime.now(dt.UTC)
    quarantine = [
        {"source": row.source, "source_uri": row.source_uri, "record_id": row.record_id, "stage": "validate",
         "reasons": reasons[row.record_id],
         "detail": "; ".join(f"{r} ({caught_by[r]})" for r in reasons[row.record_id]) + f" [policy {policy.hash}]",
         "raw": row.text[:4096] if isinstance(row.text, str) else None, "quarantined_at": now}
        for row in df.itertuples() if row.record_id in reasons]
    validation = pa.table({
        "record_id": df["record_id"].tolist(), "passed": [r not in reasons for r in df["record_id"]],
        "reasons": [reasons.get(r, []) for r in df["record_id"]],
        "text_redacted": [t if isinstance(t, str) else None for t in df["text_redacted"]],
        "pii_found": df["pii_found"].tolist(), "policy_hash": [policy.hash] * len(df)}, schema=VALIDATION_SCHEMA)
    return validation, quarantine, report


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

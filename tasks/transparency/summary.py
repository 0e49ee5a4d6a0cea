"""The public summary of training content of a model version, after the European Commission's template.

The template (published 24 July 2025, under art. 53(1)(d) of the AI Act) has three parts: general information,
the list of data sources (public datasets, licensed and other private data, crawled data with its top domains,
user data, synthetic data, other) and data processing (respect of text-and-data-mining reservations, removal of
unlawful content and personal data). Every figure here comes from the ledger (``tasks.transparency.facts``); what
the ledger cannot know is listed under ``unknown`` with the datasheet field that would supply it. ``custody
summary --model NAME@VERSION`` writes it as JSON and Markdown under ``reports/transparency/models/``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import pyarrow.compute as pc

from tasks import model_registry as registry
from tasks.datasheet import ACQUISITIONS
from tasks.transparency.facts import CHARS_PER_TOKEN, TDM_REASON, DatasetFacts, characters, reserved, timeframe

TEMPLATE = "European Commission, Template for the public summary of training content for general-purpose AI " \
           "models (24 July 2025)"
SHARE_THRESHOLD = 0.03  # the template lists public datasets above 3% of all public data of a modality by name
DOMAIN_SHARE = 0.10  # the template's top 10% of crawled domains, by size of content
SECTIONS = {"public_dataset": "2.1 Publicly available datasets",
            "licensed": "2.2.1 Private datasets commercially licensed by rights holders or their representatives",
            "private_third_party": "2.2.2 Private datasets obtained from other third parties",
            "crawled": "2.3 Data crawled and scraped from online sources", "user": "2.4 User data",
            "synthetic": "2.5 Synthetic data", "other": "2.6 Other sources of data"}
CURRENT, SUPERSEDED = "current", "superseded"


def _unknown(question: str, field: str) -> dict[str, str]:
    return {"question": question, "datasheet_field": field}


def size_band(tokens: int) -> str:
    """The template's size bands for text (tokens)."""
    if tokens < 10**9:
        return "less than 1 billion tokens"
    return "1 billion to 10 trillion tokens" if tokens <= 10**13 else "more than 10 trillion tokens"


def _source_entry(facts: DatasetFacts, source: str, total: int) -> dict[str, Any]:
    sheet, train = facts.sheets.get(source), facts.split("train")
    rows = train.filter(pc.equal(train.column("source"), source))
    return {"source": source, "description": sheet.description if sheet else None,
            "homepage": sheet.homepage if sheet else None, "records": rows.num_rows,
            "share": round(rows.num_rows / total, 4) if total else 0.0,
            "licenses": dict(Counter(rows.column("license").to_pylist())),
            "consent": dict(Counter(rows.column("consent").to_pylist())),
            "consent_basis": dict(Counter(rows.column("consent_basis").to_pylist())),
            "tdm_reserved_records": reserved(rows)}


def _domains(entries: list[dict[str, Any]], facts: DatasetFacts) -> list[dict[str, Any]]:
    """The top 10% of crawled domains by characters (at least one), from the sources' homepages."""
    train, size = facts.split("train"), Counter()
    for entry in entries:
        rows = train.filter(pc.equal(train.column("source"), entry["source"]))
        size[urlparse(entry["homepage"] or "").netloc or "unknown"] += characters(rows)
    keep = max(1, round(len(size) * DOMAIN_SHARE))
    return [{"domain": d, "characters": n} for d, n in size.most_common(keep)]


def _categories(facts: DatasetFacts, unknown: list[dict[str, str]]) -> dict[str, Any]:
    total = facts.split("train").num_rows
    by_source = facts.by("source")
    entries = {s: _source_entry(facts, s, total) for s in sorted(by_source)}
    out: dict[str, Any] = {}
    for category in ACQUISITIONS:
        members = [e for s, e in entries.items() if (sheet := facts.sheets.get(s)) and sheet.acquisition == category]
        n = sum(e["records"] for e in members)
        named = [e for e in members if n and e["records"] / n > SHARE_THRESHOLD] if category == "public_dataset" \
            else members
        out[category] = {"section": SECTIONS[category], "used": bool(members), "records": n,
                         "share": round(n / total, 4) if total else 0.0, "sources": named,
                         "other_sources": {"count": len(members) - len(named),
                                           "records": n - sum(e["records"] for e in named)}}
    out["crawled"]["top_domains"] = _domains(out["crawled"]["sources"], facts) if out["crawled"]["used"] else []
    out["synthetic"]["audit_canaries"] = facts.canaries
    out["synthetic"]["used"] = out["synthetic"]["used"] or facts.canaries > 0
    loose = [e for s, e in entries.items() if not (facts.sheets.get(s) and facts.sheets[s].acquisition)]
    out["unclassified"] = {"records": sum(e["records"] for e in loose), "sources": loose}
    unknown += [_unknown(f"how source {e['source']!r} was obtained (template section 2)", "acquisition")
                for e in loose]
    if any(e["homepage"] is None for e in out["crawled"]["sources"]):
        unknown.append(_unknown("the domains of a crawled source", "homepage"))
    return out


def _tdm(facts: DatasetFacts, unknown: list[dict[str, str]]) -> dict[str, Any]:
    doc = facts.policy["doc"]
    silent = sorted(s for s, sheet in facts.sheets.items()
                    if sheet is None or (sheet.tdm_reservation is None and not sheet.fields.tdm_reservation))
    unknown += [_unknown(f"whether source {s!r} carries a text-and-data-mining reservation", "tdm_reservation")
                for s in silent]
    return {"policy_respects_reservations": doc["tdm"]["respect_reservations"] if doc and "tdm" in doc else None,
            "honoured": facts.rejected.get(TDM_REASON, 0),
            "reserved_in_training": reserved(facts.split("train")),
            "sources_reserving": sorted(s for s, sheet in facts.sheets.items() if sheet and sheet.tdm_reservation),
            "policies": {s: sheet.tdm_policy for s, sheet in facts.sheets.items() if sheet and sheet.tdm_policy},
            "sources_without_statement": silent}


def _processing(facts: DatasetFacts, unknown: list[dict[str, str]]) -> dict[str, Any]:
    sel, doc = facts.selection, facts.policy["doc"]
    unknown.append(_unknown("screening for unlawful content beyond the policy's rules (e.g. CSAM, terrorist "
                            "content)", "notes"))
    return {
        "tdm_reservations": _tdm(facts, unknown),
        "unlawful_content_and_personal_data": {
            "policy": {k: facts.policy[k] for k in ("name", "hash", "purpose")},
            "pii_actions": {k: v for k, v in doc["pii"].items() if k != "phone_region"} if doc else None,
            "records_with_pii_found": facts.pii_found,
            "rejected_by_policy": facts.rejected},
        "exclusions": {"by_scorers": sel["excluded"], "rules": sel["exclusions"],
                       "near_duplicates_not_selected": facts.near_dup_dropped,
                       "rejected_by_policy": facts.rejected.get("records", 0)},
        "deletions": {"requests": facts.deletions,
                      "records_removed": sum(d["removed"] for d in facts.deletions),
                      "records_no_longer_held": facts.missing}}


def build_summary(facts: DatasetFacts, model_ref: str, model_doc: dict[str, Any],
                  provider: str | None = None) -> dict[str, Any]:
    """The summary of ``model_ref`` (trained on ``facts``' dataset version) as a JSON-able dict."""
    unknown: list[dict[str, str]] = []
    train = facts.split("train")
    chars, (first, last) = characters(train), timeframe(train)
    languages = sorted({lang for s in facts.sheets.values() if s and s.languages for lang in s.languages})
    if not provider:
        unknown.append(_unknown("provider name and contact (template 1.1)", "none: pass --provider"))
    if not languages:
        unknown.append(_unknown("languages of the training content (template 1.3)", "languages"))
    tags = model_doc.get("tags", {})
    return {
        "document": "public-summary-of-training-content", "template": TEMPLATE, "status": CURRENT,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(), "supersedes": tags.get(registry.FROM_TAG),
        "general": {
            "provider": provider, "model": model_ref, "base_model": model_doc.get("config", {}).get("model"),
            "dataset": facts.ref, "dataset_version": facts.version, "manifest_sha256": facts.manifest_sha256,
            "policy_hash": facts.selection["policy_hash"], "deletion_request": tags.get(registry.REQUEST_TAG),
            "modality": "text",
            "training_size": {"records": facts.selection["counts"]["train"], "characters": chars,
                              "estimated_tokens": chars // CHARS_PER_TOKEN,
                              "size_band": size_band(chars // CHARS_PER_TOKEN),
                              "token_estimate": f"characters / {CHARS_PER_TOKEN}"},
            "held_out": {s: facts.selection["counts"][s] for s in ("validation", "test")},
            "collection_period": {"earliest": first, "latest": last}, "languages": languages or None},
        "sources": _categories(facts, unknown),
        "processing": _processing(facts, unknown),
        "figures": {c: dict(facts.by(c).most_common()) for c in ("source", "license", "consent", "consent_basis")},
        "unknown": unknown}


def supersede(doc: dict[str, Any], by: str, request_id: str | None) -> dict[str, Any]:
    """``doc`` kept with its numbers, marked superseded by version ``by`` (after deletion request ``request_id``)."""
    return {**doc, "status": SUPERSEDED, "superseded_by": by, "superseded_for": request_id,
            "superseded_at": dt.datetime.now(dt.UTC).isoformat()}


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"


def _source_lines(entries: list[dict[str, Any]]) -> list[str]:
    return [f"- **{e['source']}** ({e['records']} records, {e['share']:.1%} of training): {e['description'] or ''} "
            f"Licences {_counts(e['licenses'])}; consent {_counts(e['consent'])}; basis "
            f"{_counts(e['consent_basis'])}." for e in entries]


def _category_lines(sources: dict[str, Any]) -> list[str]:
    lines = []
    for category in ACQUISITIONS:
        c = sources[category]
        lines += [f"### {c['section']}", "", f"Used: {'yes' if c['used'] else 'no'}."]
        if c["records"]:
            lines += [f"{c['records']} training records ({c['share']:.1%})."]
        lines += _source_lines(c["sources"])
        if c["other_sources"]["count"]:
            lines.append(f"- {c['other_sources']['count']} other source(s) below {SHARE_THRESHOLD:.0%} of this "
                         f"category: {c['other_sources']['records']} records.")
        if category == "crawled" and c["top_domains"]:
            lines.append("Top domains by content: " + ", ".join(f"{d['domain']} ({d['characters']:,} characters)"
                                                                for d in c["top_domains"]) + ".")
        if category == "synthetic" and c["audit_canaries"]:
            lines.append(f"{c['audit_canaries']} audit canaries: synthetic records of random pseudo-words the "
                         "platform plants as a memorisation control (no one's data).")
        lines.append("")
    if sources["unclassified"]["sources"]:
        lines += ["### Sources whose datasheet does not say how they were obtained", "",
                  *_source_lines(sources["unclassified"]["sources"]), ""]
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """The summary as Markdown, in the template's order; counts, names and codes only, never a record's text."""
    g, p = doc["general"], doc["processing"]
    size, tdm, pii = g["training_size"], p["tdm_reservations"], p["unlawful_content_and_personal_data"]
    banner = ([f"> **Superseded** by the summary of {doc['superseded_by']} (deletion request "
               f"{doc['superseded_for']}, {doc['superseded_at'][:10]}). Kept as it was issued.", ""]
              if doc["status"] == SUPERSEDED else [])
    return "\n".join([
        f"# Public summary of training content: {g['model']}", "", *banner,
        f"Following the {doc['template']}. Generated {doc['generated_at'][:19]}Z from the Custody ledger.", "",
        "## 1. General information", "",
        f"- Provider: {g['provider'] or 'not recorded by Custody'}", f"- Model: {g['model']} (base {g['base_model']})"
        + (f"; replaces {doc['supersedes']} after deletion request {g['deletion_request']}" if doc["supersedes"]
           else ""),
        f"- Dataset version: {g['dataset']} (manifest sha256 `{g['manifest_sha256']}`, policy `{g['policy_hash']}`)",
        f"- Modality: {g['modality']}; languages: {', '.join(g['languages'] or ['not stated'])}",
        f"- Training data size: {size['records']} records ({p['deletions']['records_no_longer_held']} of this "
        f"version's records deleted since, not counted below), {size['characters']:,} characters, about "
        f"{size['estimated_tokens']:,} tokens ({size['token_estimate']}): {size['size_band']}",
        f"- Held out for evaluation: {_counts(g['held_out'])}",
        f"- Collection period (delivery dates where none was stated): {g['collection_period']['earliest']} to "
        f"{g['collection_period']['latest']}", "",
        "## 2. List of data sources", "", *_category_lines(doc["sources"]),
        "## 3. Data processing aspects", "", "### 3.1 Respect of reservations of rights from text and data mining", "",
        f"The provenance policy {'rejects' if tdm['policy_respects_reservations'] else 'does not reject'} records "
        f"with a machine-readable TDM reservation (TDMRep `tdm-reservation`, C2PA/CAWG training-and-data-mining). "
        f"Reservations honoured: **{tdm['honoured']}** records rejected (reason `{TDM_REASON}`); reserved records "
        f"in training: {tdm['reserved_in_training']}. Sources reserving: "
        f"{', '.join(tdm['sources_reserving']) or 'none'}.",
        "", "### 3.2 Removal of unlawful content and personal data", "",
        f"Policy {pii['policy']['name'] or '(no longer current)'} `{pii['policy']['hash']}` "
        f"({pii['policy']['purpose'] or 'purpose not recorded'}); PII actions: {_counts(pii['pii_actions'] or {})}.",
        f"Records of this dataset in which the PII scan found a kind: {_counts(pii['records_with_pii_found'])}.",
        f"Records rejected by the policy in the whole store, by reason: {_counts(pii['rejected_by_policy'])}.", "",
        "### 3.3 Other information", "",
        f"- Excluded by scorer flags: {p['exclusions']['by_scorers']}; near-duplicate copies never selected: "
        f"{p['exclusions']['near_duplicates_not_selected']}.",
        f"- Deletions honoured in this dataset's lineage: {len(p['deletions']['requests'])} request(s), "
        f"{p['deletions']['records_removed']} records removed"
        + "".join(f"; {d['request_id']} ({d['removed']}, {d['status']})" for d in p["deletions"]["requests"]) + ".",
        f"- Records of this version deleted since it was made: {p['deletions']['records_no_longer_held']}.",
        f"- Training content by licence: {_counts(doc['figures']['license'])}; by consent: "
        f"{_counts(doc['figures']['consent'])}.", "",
        "## What the ledger cannot say", "",
        *([f"- {u['question']}: datasheet field `{u['datasheet_field']}`" for u in doc["unknown"]] or ["- nothing"]),
        ""])

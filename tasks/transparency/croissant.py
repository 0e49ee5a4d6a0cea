"""A dataset version as Croissant 1.1 JSON-LD with the Responsible-AI (RAI) vocabulary, checked with ``mlcroissant``.

The document describes the version's manifest (``datasets/<name>/<version>/manifest.parquet``) as one FileObject
with its sha256 and a RecordSet of its columns, carries the content-addressed version id (``identifier``, and in
``version`` as semver build metadata: ``1.<deletions applied>.0+<version id>``), and fills the RAI fields from the
ledger: how the data was collected and when, how it was processed, what personal information it holds and how
deletions keep it current. ``custody export --dataset NAME@VERSION --format croissant`` writes it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tasks.transparency.facts import TDM_REASON, DatasetFacts, reserved, timeframe

CROISSANT_1_1 = "http://mlcommons.org/croissant/1.1"
RAI_1_0 = "http://mlcommons.org/croissant/RAI/1.0"
CONTEXT = {  # the Croissant 1.1 context, as the specification's examples and mlcroissant write it
    "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/", "arrayShape": "cr:arrayShape", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "containedIn": "cr:containedIn", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5",
    "name": {"@container": "@language"}, "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "samplingRate": "cr:samplingRate", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "transform": "cr:transform"}
MANIFEST_FIELDS = (("record_id", "sc:Text", "stable record id (a hash of the source and the id inside it)"),
                   ("weight", "sc:Float", "training weight"), ("label", "sc:Text", "task label"),
                   ("split", "sc:Text", "train, validation or test"), ("shard", "sc:Integer", "SISA shard"),
                   ("source", "sc:Text", "source name (its datasheet)"),
                   ("owner_id", "sc:Text", "rights holder or consent giver"),
                   ("canary", "sc:Boolean", "a synthetic audit canary planted by the platform, not data"))
SPDX_LICENSES = "https://spdx.org/licenses/"


def _license(spdx: str | None) -> str:
    return f"{SPDX_LICENSES}{spdx}.html" if spdx and spdx != "unknown" else "unknown (not stated by the source)"


def _collection(facts: DatasetFacts) -> str:
    parts = []
    for source, sheet in sorted(facts.sheets.items()):
        how = (sheet.acquisition or "unclassified") if sheet else "datasheet no longer held"
        desc = sheet.description.strip() if sheet else ""
        parts.append(f"{source} ({how}; {facts.by('source', None).get(source, 0)} records): {desc}")
    return " | ".join(parts)


def _rai(facts: DatasetFacts) -> dict[str, Any]:
    first, last = timeframe(facts.records)
    pii = ", ".join(f"{k}: {v}" for k, v in sorted(facts.pii_found.items())) or "none found"
    doc = facts.policy["doc"]
    actions = ", ".join(f"{k} {v}" for k, v in doc["pii"].items() if k != "phone_region") if doc else "not recorded"
    removed = sum(d["removed"] for d in facts.deletions)
    kinds = sorted({s.acquisition for s in facts.sheets.values() if s and s.acquisition})
    return {
        "rai:dataCollection": _collection(facts),
        "rai:dataCollectionType": kinds or ["unclassified: no datasheet states its acquisition"],
        "rai:dataCollectionTimeframe": [t for t in (first, last) if t],
        "rai:dataPreprocessingProtocol": [
            "Unicode NFC and whitespace normalisation; stable record ids and sha256 content hashes",
            "exact and MinHash near-duplicate clustering; one representative per cluster is selectable",
            f"provenance policy {facts.policy['name'] or facts.policy['hash']} (hash {facts.policy['hash']}) as a "
            f"Great Expectations suite; {facts.rejected.get('records', 0)} records rejected store-wide",
            f"selection strategy {facts.selection['strategy']}; {facts.selection['excluded']} records excluded by "
            "scorer flags"],
        "rai:personalSensitiveInformation": f"PII scan (e-mail, phone, card, IBAN, IP) under the policy: {actions}. "
                                            f"Records of this version with a kind found: {pii}.",
        "rai:dataUseCases": f"training and evaluating classifiers; policy purpose: "
                            f"{facts.policy['purpose'] or 'not recorded'}",
        "rai:dataLimitations": f"{facts.by('license', None).get('unknown', 0)} records state no licence; "
                               f"{facts.by('consent', None).get('unknown', 0)} state no consent; "
                               f"{reserved(facts.records)} carry a text-and-data-mining reservation; "
                               f"{facts.rejected.get(TDM_REASON, 0)} reserved records were rejected.",
        "rai:dataReleaseMaintenancePlan": (
            "Deletion requests remove records, their copies and near copies; each yields a new content-addressed "
            f"version. This version: {len(facts.deletions)} deletion(s) applied, {removed} records removed; "
            f"{facts.missing} of its records have been deleted since it was made."),
    }


def croissant(facts: DatasetFacts, url: str, content_url: str) -> dict[str, Any]:
    """Croissant 1.1 JSON-LD of a dataset version: ``url`` is the version's folder, ``content_url`` its manifest
    (a path relative to the document, as Croissant allows for files beside it, or a URL)."""
    licenses = Counter(facts.records.column("license").to_pylist())
    n = facts.records.num_rows
    splits = ", ".join(f"{k} {v}" for k, v in facts.selection["counts"].items())
    fields = [{"@type": "cr:Field", "@id": f"manifest-records/{name}", "name": name, "description": desc,
               "dataType": dtype, "source": {"fileObject": {"@id": "manifest"}, "extract": {"column": name}}}
              for name, dtype, desc in MANIFEST_FIELDS]
    return {
        "@context": CONTEXT, "@type": "sc:Dataset", "conformsTo": [CROISSANT_1_1, RAI_1_0],
        "name": facts.name, "identifier": facts.ref,
        "description": f"Dataset version {facts.ref}: {n} records ({splits}) selected by Custody from "
                       f"{len(facts.sheets)} source(s) under provenance policy {facts.policy['hash']}.",
        "version": f"1.{len(facts.deletions)}.0+{facts.version}", "datePublished": facts.selection["created_at"][:10],
        "citeAs": f"Custody dataset version {facts.ref}, manifest sha256 {facts.manifest_sha256}",
        "url": url, "license": sorted({_license(lic) for lic in licenses}),
        "creator": {"@type": "sc:Organization", "name": "Custody (chain of custody for training data)"},
        **_rai(facts),
        "distribution": [{"@type": "cr:FileObject", "@id": "manifest", "name": "manifest.parquet",
                          "description": "the version's manifest: one row per record", "contentUrl": content_url,
                          "encodingFormat": "application/x-parquet", "sha256": facts.manifest_sha256}],
        "recordSet": [{"@type": "cr:RecordSet", "@id": "manifest-records", "name": "manifest-records",
                       "description": "records of the version (ids and provenance keys, never text)",
                       "key": {"@id": "manifest-records/record_id"}, "field": fields}],
    }


def validate(doc: dict[str, Any]) -> list[str]:
    """Warnings ``mlcroissant`` has about ``doc``; raises ``mlcroissant.ValidationError`` on any error."""
    import mlcroissant as mlc

    dataset = mlc.Dataset(jsonld=doc)
    return [str(w) for w in dataset.metadata.ctx.issues.warnings]

"""A dataset version as SPDX 3.0.1 JSON-LD (Core, Software, Dataset and SimpleLicensing profiles).

One ``dataset_DatasetPackage`` per source (its datasheet: description, homepage, how it was obtained, declared
licence) and one for the dataset version (the content-addressed version id as ``software_packageVersion``, the
manifest's sha256 in ``verifiedUsing``, collection and preprocessing, personal information, the deletion
mechanism, concluded licence), linked by ``descendantOf`` relationships: the version descends from each source,
and a version derived by a deletion from the version it was derived from. Checked with the SPDX project's Python
bindings of the 3.0.1 model (``spdx-python-model``): every type, property, enumeration value and reference is
resolved and every cardinality checked. ``custody export --dataset NAME@VERSION --format spdx`` writes it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from tasks.transparency.facts import DatasetFacts, timeframe

CONTEXT = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
CREATION = "_:creationinfo"
NO_ASSERTION = "expandedlicensing_NoAssertionLicense"  # a licence nobody stated


def _time(value: str | dt.datetime) -> str:
    """SPDX's date-time form: UTC, seconds, a trailing Z."""
    stamp = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Graph:
    """The ``@graph`` being built, with ids in the version's namespace."""

    def __init__(self, facts: DatasetFacts) -> None:
        self.base = f"urn:custody:{facts.name}:{facts.version}/"
        self.nodes: list[dict[str, Any]] = []

    def add(self, kind: str, local: str, **props: Any) -> str:
        spdx_id = self.base + local
        self.nodes.append({"type": kind, "spdxId": spdx_id, "creationInfo": CREATION, **props})
        return spdx_id

    def relate(self, source: str, kind: str, targets: list[str], comment: str | None = None) -> None:
        extra = {"comment": comment} if comment else {}
        self.add("Relationship", f"relationship/{len(self.nodes)}", **{"from": source, "relationshipType": kind,
                                                                       "to": targets, **extra})

    def license(self, expression: str | None) -> str:
        """The id of a licence expression element (``NoAssertionLicense`` when nothing was stated)."""
        if not expression:
            return NO_ASSERTION
        spdx_id = f"{self.base}license/{expression.replace(' ', '_')}"
        if any(n["spdxId"] == spdx_id for n in self.nodes):
            return spdx_id
        return self.add("simplelicensing_LicenseExpression", f"license/{expression.replace(' ', '_')}",
                        simplelicensing_licenseExpression=expression)


def _expression(licenses: Counter) -> str | None:
    """One SPDX expression for a set of licences, or None when any record's licence is unknown."""
    if not licenses or any(lic in (None, "unknown") for lic in licenses):
        return None
    return " AND ".join(sorted(licenses))


def _source(graph: _Graph, facts: DatasetFacts, source: str) -> str:
    sheet = facts.sheets.get(source)
    props: dict[str, Any] = {"name": source, "software_primaryPurpose": "data", "dataset_datasetType": ["text"]}
    if sheet:
        props.update(description=sheet.description.strip(),
                     dataset_dataCollectionProcess=f"{sheet.acquisition or 'acquisition not stated'}; consent "
                                                   f"basis: {sheet.consent_basis}; default consent {sheet.consent}"
                                                   + ("; text-and-data-mining reserved" if sheet.tdm_reservation
                                                      else ""))
        if sheet.homepage:
            props.update(software_homePage=sheet.homepage, software_downloadLocation=sheet.homepage)
    pkg = graph.add("dataset_DatasetPackage", f"source/{source}", **props)
    declared = sheet.license if sheet and sheet.license != "unknown" else None
    graph.relate(pkg, "hasDeclaredLicense", [graph.license(declared)])
    return pkg


def _version(graph: _Graph, facts: DatasetFacts, url: str) -> str:
    first, last = timeframe(facts.records)
    pii = sum(facts.pii_found.values())
    counts = ", ".join(f"{k} {v}" for k, v in facts.selection["counts"].items())
    return graph.add(
        "dataset_DatasetPackage", "dataset", name=facts.ref, software_packageVersion=facts.version,
        description=f"{facts.records.num_rows} records ({counts}), selected by strategy "
                    f"{facts.selection['strategy']} under provenance policy {facts.policy['hash']}",
        software_primaryPurpose="data", dataset_datasetType=["text"], software_downloadLocation=url,
        builtTime=_time(facts.selection["created_at"]),
        verifiedUsing=[{"type": "Hash", "algorithm": "sha256", "hashValue": facts.manifest_sha256}],
        dataset_dataCollectionProcess=f"records collected {first or '?'} to {last or '?'} from "
                                      f"{len(facts.sheets)} source(s); provenance from each source's datasheet",
        dataset_dataPreprocessing=["Unicode NFC and whitespace normalisation", "exact and near-duplicate clustering",
                                   f"provenance policy {facts.policy['hash']}: "
                                   f"{facts.rejected.get('records', 0)} records rejected store-wide",
                                   f"{facts.selection['excluded']} records excluded by scorer flags"],
        dataset_hasSensitivePersonalInformation="yes" if pii else "noAssertion",
        dataset_anonymizationMethodUsed=[f"{k} {v}" for k, v in (facts.policy["doc"] or {}).get("pii", {}).items()
                                         if k != "phone_region" and v == "redact"],
        dataset_datasetUpdateMechanism=f"deletion requests yield a new content-addressed version; "
                                       f"{len(facts.deletions)} applied to this one",
        dataset_intendedUse=f"training classifiers ({facts.policy['purpose'] or 'purpose not recorded'})")


def spdx(facts: DatasetFacts, url: str, created: dt.datetime | None = None) -> dict[str, Any]:
    """SPDX 3.0.1 JSON-LD of a dataset version; ``url`` is where its manifest can be fetched from."""
    graph = _Graph(facts)
    tool = graph.add("Tool", "tool/custody", name="custody")
    agent = graph.add("SoftwareAgent", "agent/custody", name="Custody")
    version = _version(graph, facts, url)
    sources = [_source(graph, facts, s) for s in sorted(facts.sheets)]
    if sources:
        graph.relate(version, "descendantOf", sources, "records selected from these sources")
    for d in facts.deletions:
        graph.relate(version, "descendantOf", [f"urn:custody:{d['from'].replace('@', ':')}/dataset"],
                     f"derived by deletion request {d['request_id']}: {d['removed']} records removed")
    graph.relate(version, "hasConcludedLicense",
                 [graph.license(_expression(Counter(facts.records.column("license").to_pylist())))])
    ids = [n["spdxId"] for n in graph.nodes]
    document = {"type": "SpdxDocument", "spdxId": graph.base + "document", "creationInfo": CREATION,
                "name": f"SPDX 3 description of dataset version {facts.ref}", "rootElement": [version],
                "element": ids, "profileConformance": ["core", "software", "dataset", "simpleLicensing"]}
    creation = {"type": "CreationInfo", "@id": CREATION, "specVersion": "3.0.1",
                "created": _time(created or dt.datetime.now(dt.UTC)), "createdBy": [agent], "createdUsing": [tool]}
    return {"@context": CONTEXT, "@graph": [creation, document, *graph.nodes]}


def validate(doc: dict[str, Any]) -> list[str]:
    """Check ``doc`` against the SPDX 3.0.1 model: decode it (types, properties, enumerations, date-times), resolve
    every reference, and encode it again (cardinalities). Returns the ids referenced but not defined in ``doc``
    (relationships to another document's elements); raises ``ValueError``, ``KeyError`` or ``TypeError`` on a
    violation."""
    import spdx_python_model

    model, objects = spdx_python_model.load_data(doc)
    model.JSONLDSerializer().serialize_data(objects)
    return sorted(objects.missing_ids)

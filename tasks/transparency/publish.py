"""Writing the transparency documents: validated, under ``reports/transparency/``, the summary also in MLflow.

``write_summary`` writes a model version's public summary (JSON and Markdown) and logs both on the version's MLflow
run; when the version was made by unlearning a deletion request, the summary of the version it replaces is kept,
marked superseded (JSON, Markdown and its MLflow copy). ``refresh_after_certificate`` does that for every version a
certified request produced: the summaries stay current as the law asks. ``export_dataset`` writes a dataset
version's Croissant or SPDX 3 document after its validator accepted it.
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path
from typing import Any

from tasks import layout
from tasks import model_registry as registry
from tasks.errors import NotFound, unknown_name
from tasks.names import parse_ref
from tasks.storage import Store
from tasks.transparency import croissant, spdx
from tasks.transparency.facts import dataset_facts
from tasks.transparency.summary import CURRENT, SUPERSEDED, build_summary, markdown, supersede

SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"
FILES = {"croissant": "croissant.json", "spdx": "spdx.json"}
VALIDATORS = {"croissant": "mlcroissant", "spdx": "spdx-python-model (SPDX 3.0.1 bindings)"}


def _log_artifacts(run_id: str, files: dict[str, bytes]) -> None:
    """Put ``files`` under ``transparency/`` of an MLflow run (a finished run takes artifacts too)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        registry.client().log_artifacts(run_id, tmp, "transparency")


def _save(store: Store, ref: str, doc: dict[str, Any], run_id: str | None) -> dict[str, str]:
    name, version = registry.split_ref(ref)
    files = {SUMMARY_JSON: layout.model_summary(name, version, SUMMARY_JSON),
             SUMMARY_MD: layout.model_summary(name, version, SUMMARY_MD)}
    store.write_json(files[SUMMARY_JSON], doc)
    store.write_bytes(files[SUMMARY_MD], markdown(doc).encode())
    if run_id:
        _log_artifacts(run_id, {f: store.read_bytes(k) for f, k in files.items()})
    return {"json": store.uri(files[SUMMARY_JSON]), "markdown": store.uri(files[SUMMARY_MD])}


def _model_doc(store: Store, ref: str) -> dict[str, Any]:
    name, version = parse_ref("--model", ref)
    key = layout.model_doc(name, version)
    if not store.exists(key):
        raise NotFound(f"no registered model version {ref} in this store; see `custody status`")
    return store.read_json(key)


def _supersede_previous(store: Store, doc: dict[str, Any]) -> str | None:
    """Mark the summary of the version ``doc``'s model replaced superseded; the ref when there was one to mark."""
    previous = doc["supersedes"]
    if not previous:
        return None
    key = layout.model_summary(*registry.split_ref(previous), SUMMARY_JSON)
    if not store.exists(key) or store.read_json(key)["status"] != CURRENT:
        return None
    old = supersede(store.read_json(key), doc["general"]["model"], doc["general"]["deletion_request"])
    _save(store, previous, old, _model_doc(store, previous).get("run_id"))
    return previous


def write_summary(store: Store, model_ref: str, provider: str | None = None) -> dict[str, Any]:
    """Write (or rewrite) the public summary of ``model_ref``; a superseded summary is kept as it was issued.

    Raises:
        NotFound: no such model version, or its dataset version is gone.
    """
    key = layout.model_summary(*parse_ref("--model", model_ref), SUMMARY_JSON)
    if store.exists(key) and store.read_json(key)["status"] == SUPERSEDED:
        old = store.read_json(key)
        return {"ok": True, "model": model_ref, "status": SUPERSEDED, "superseded_by": old["superseded_by"],
                "json": store.uri(key), "markdown": store.uri(key.replace(SUMMARY_JSON, SUMMARY_MD)), "kept": True}
    model_doc = _model_doc(store, model_ref)
    doc = build_summary(dataset_facts(store, model_doc["dataset"]), model_ref, model_doc, provider)
    paths = _save(store, model_ref, doc, model_doc.get("run_id"))
    size = doc["general"]["training_size"]
    return {"ok": True, "model": model_ref, "dataset": doc["general"]["dataset"], "status": CURRENT, **paths,
            "supersedes": doc["supersedes"], "superseded": _supersede_previous(store, doc),
            "training_records": size["records"], "size_band": size["size_band"],
            "tdm_reservations_honoured": doc["processing"]["tdm_reservations"]["honoured"],
            "unknown": len(doc["unknown"])}


def refresh_after_certificate(store: Store, request: dict[str, Any]) -> list[dict[str, Any]]:
    """New summaries for the versions a certified deletion request produced; their predecessors' are superseded.

    ``request`` is the request's ledger document (``tasks.deletion.requests``) once certified.
    """
    models = (request.get("certificate") or {}).get("models") or []
    return [write_summary(store, m["final"]) for m in models if m.get("action") == "unlearned" and m.get("final")]


def export_dataset(store: Store, ref: str, fmt: str) -> dict[str, Any]:
    """Write dataset version ``ref`` as ``croissant`` or ``spdx`` under ``reports/``, once its validator accepts it.

    Raises:
        Fatal: an unknown format. NotFound: no such dataset version.
    """
    if fmt not in FILES:
        raise unknown_name("format", fmt, tuple(FILES))
    name, version = parse_ref("--dataset", ref)
    facts = dataset_facts(store, ref)
    key = layout.dataset_export(name, version, FILES[fmt])
    manifest = layout.manifest(name, version)
    if fmt == "croissant":  # the manifest relative to the document: mlcroissant reads it from there
        doc = croissant.croissant(facts, store.uri(layout.dataset_dir(name, version)),
                                  posixpath.relpath(manifest, posixpath.dirname(key)))
        notes = croissant.validate(doc)
    else:
        doc = spdx.spdx(facts, store.uri(manifest))
        notes = [f"references another document's element {i}" for i in spdx.validate(doc)]
    store.write_json(key, doc)
    return {"ok": True, "dataset": ref, "format": fmt, "path": store.uri(key), "validator": VALIDATORS[fmt],
            "valid": True, "warnings": notes, "records": facts.records.num_rows}

"""The deletion certificate: what was deleted, what held it, what was done, and how well, as evidence.

Written to ``reports/deletions/<request-id>/certificate.{json,md}`` with a plot of the forget-set losses
(source, unlearned, oracle) and logged to MLflow (experiment ``custody-unlearning``). It names records by
count, id digest and content hash only, never by text. Certification destroys the request's forget vault,
the last copy of the deleted texts, and moves the request to ``certified``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from tasks import layout
from tasks import model_registry as registry
from tasks.deletion import requests, vault
from tasks.deletion.verify import latest_verification
from tasks.plots import figure_png
from tasks.storage import Store

SHOWN = ("test_accuracy", "test_f1", "retain_accuracy", "forget_accuracy", "forget_loss", "mia_loss_auc",
         "mia_loss_tpr_at_1fpr", "mia_mink_auc", "mia_mink_tpr_at_1fpr")
CERT_JSON, CERT_MD, LOSSES_PNG = "certificate.json", "certificate.md", "forget_losses.png"  # per request
SUMMARY_FIELDS = ("source", "action", "final", "final_method", "fell_back")  # a model's line in the request


def model_entry(result: dict[str, Any]) -> dict[str, Any]:
    """One model's part of the certificate: the action, the gate, and the numbers against the oracle."""
    if result["action"] != "unlearned":
        return {k: result[k] for k in ("source", "action", "note") if k in result}
    last = result["steps"][-1]
    oracle, source = result["evaluations"]["oracle"], result["evaluations"]["source"]
    cost = last["evaluation"]["cost_seconds"]
    return {"source": result["source"], "action": "unlearned", "dataset": {"from": result["source_dataset"],
                                                                            "to": result["dataset"]},
            "forget_records": result["forget_records"], "requested_method": result["requested_method"],
            "final": result["final"], "final_method": result["final_method"], "fell_back": result["fell_back"],
            "attempts": [{"method": s["method"], "version": s["version"], **s["gate"]} for s in result["steps"]],
            "aliases_moved": result["aliases_moved"],
            "metrics": {k: {"unlearned": last["evaluation"].get(k), "oracle": oracle.get(k),
                            "source": source.get(k)} for k in SHOWN},
            "forget_loss_ks_pvalue": last["vs_oracle"]["forget_loss_ks_pvalue"],
            "cost": {"seconds": cost, "oracle_seconds": oracle["cost_seconds"],
                     "fraction_of_oracle": cost / oracle["cost_seconds"] if oracle["cost_seconds"] else None,
                     "examples_processed": last["evaluation"]["examples_processed"],
                     "oracle_examples_processed": oracle["examples_processed"]}}


def losses_png(results: list[dict[str, Any]]) -> bytes | None:
    """Per-example forget-set losses of each unlearned model's source, every attempt, and the oracle: one dot a
    record (forget sets are small), with a box for the spread."""
    shown = [r for r in results if r["action"] == "unlearned"]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.4), squeeze=False)
    for ax, r in zip(axes[0], shown, strict=True):
        columns = {"source\n(held them)": r["evaluations"]["source"]["forget_losses"],
                   **{f"{s['method']}\n({'passed' if s['gate']['passed'] else 'rejected'})":
                      s["evaluation"]["forget_losses"] for s in r["steps"]},
                   "oracle\n(retrained)": r["evaluations"]["oracle"]["forget_losses"]}
        ax.boxplot(list(columns.values()), showfliers=False, widths=0.5)
        for i, values in enumerate(columns.values(), start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=10, alpha=0.6)
        ax.set_xticks(range(1, len(columns) + 1), list(columns), fontsize=8)
        ax.set_ylabel("per-example loss on the forget set")
        ax.set_title(f"{r['source']} → {r['final']}", fontsize=9)
    return figure_png(fig)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(cert: dict[str, Any], plot: str | None) -> str:
    """The certificate as a reader sees it: what was deleted, and per model the attempts with their verdicts and
    the numbers against the oracle and the source (``plot`` is the losses figure's file name, if any)."""
    d = cert["deleted"]
    lines = [f"# Deletion certificate {cert['request_id']}", "",
             f"Issued {cert['issued_at']}. Request by **{cert['selector']['kind']}** "
             f"({cert['selector']['values']} value(s)), reason: {cert['reason'] or 'not given'}.", "",
             "## Deleted", "",
             f"{d['records']} records ({d['selected']} selected, {d['duplicates']} exact or near duplicates of their "
             f"text), {len(d['content_hashes'])} distinct texts; record-id digest `{d['ids_digest']}`. Purged "
             f"physically: {cert['applied'].get('rows_removed', 0)} Parquet rows, "
             f"{cert['applied'].get('raw_rows_removed', 0)} raw rows. The forget vault was "
             f"{'destroyed' if cert['vault_destroyed'] else 'never needed'}.", "",
             "## Models", ""]
    if not cert["models"]:
        lines += ["No dataset version or registered model held these records: nothing to unlearn.", ""]
    for m in cert["models"]:
        if m["action"] != "unlearned":
            lines += [f"- **{m['source']}**: {m['action']} — {m.get('note', '')}", ""]
            continue
        attempts = "; ".join(f"{a['method']} → {a['version']}: {'passed' if a['passed'] else 'failed'} "
                             f"({' '.join(a['reasons'])})" for a in m["attempts"])
        lines += [f"### {m['source']} → {m['final']} ({m['final_method']})", "",
                  f"Dataset {m['dataset']['from']} → {m['dataset']['to']}; {m['forget_records']} trained-on records "
                  f"forgotten. Attempts: {attempts}."
                  + (" **Fell back to an exact method.**" if m["fell_back"] else ""),
                  f"Aliases moved: {', '.join(m['aliases_moved']) or 'none'}; {m['source']} is retired.", "",
                  "| metric | unlearned | oracle | source |", "|---|---|---|---|",
                  *(f"| {k} | {_fmt(v['unlearned'])} | {_fmt(v['oracle'])} | {_fmt(v['source'])} |"
                    for k, v in m["metrics"].items()),
                  f"| forget-loss KS p-value vs oracle | {_fmt(m['forget_loss_ks_pvalue'])} | | |",
                  f"| cost (s) | {_fmt(m['cost']['seconds'])} | {_fmt(m['cost']['oracle_seconds'])} | |",
                  f"| examples processed | {m['cost']['examples_processed']} | "
                  f"{m['cost']['oracle_examples_processed']} | |", ""]
    if plot:
        lines += [f"![forget-set losses]({plot})", ""]
    return "\n".join(lines)


def document(doc: dict[str, Any], results: list[dict[str, Any]], vault_destroyed: bool) -> dict[str, Any]:
    """The certificate of request ``doc`` from its per-model ``results``: the selector by kind and count only (its
    values may be texts), the deleted records by count, digest and content hash."""
    resolved = doc["resolved"]
    return {"request_id": doc["request_id"], "issued_at": dt.datetime.now(dt.UTC).isoformat(),
            "selector": {"kind": doc["selector"]["kind"], "values": len(doc["selector"]["values"])},
            "reason": doc.get("reason"),
            "deleted": {"records": len(resolved["record_ids"]), **resolved["counts"],
                        "content_hashes": resolved["content_hashes"], "ids_digest": resolved.get("ids_digest")},
            "applied": doc.get("applied", {}), "models": [model_entry(r) for r in results],
            "vault_destroyed": vault_destroyed, "history": doc["history"]}


def certify(store: Store, doc: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the certificate (store + MLflow), destroy the vault, and mark the request certified."""
    import mlflow

    request_id = doc["request_id"]
    key = partial(layout.deletion_report, request_id)
    previous = store.read_json(key(CERT_JSON)) if store.exists(key(CERT_JSON)) else {}
    cert = document(doc, results, store.exists(layout.vault(request_id)) or previous.get("vault_destroyed", False))
    cert["verification"] = latest_verification(store, request_id)  # custody verify-deletion, if it ran already
    png = losses_png(results)
    if png:
        store.write_bytes(key(LOSSES_PNG), png)
    store.write_json(key(CERT_JSON), cert)
    store.write_bytes(key(CERT_MD), markdown(cert, LOSSES_PNG if png else None).encode())
    registry.use_experiment(registry.UNLEARNING_EXPERIMENT)
    with mlflow.start_run(run_name=f"certificate {request_id}"), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({registry.REQUEST_TAG: request_id, registry.KIND_TAG: "certificate"})
        for name in (CERT_JSON, CERT_MD, LOSSES_PNG):
            if store.exists(key(name)):
                (Path(tmp) / name).write_bytes(store.read_bytes(key(name)))
        mlflow.log_artifacts(tmp, "certificate")
    vault.destroy_vault(store, request_id)
    return requests.set_status(store, doc, requests.CERTIFIED, certificate={
        "json": store.uri(key(CERT_JSON)), "markdown": store.uri(key(CERT_MD)),
        "models": [{k: m.get(k) for k in SUMMARY_FIELDS} for m in cert["models"]]})

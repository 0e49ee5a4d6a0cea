"""The deletion certificate: what was deleted, what held it, what was done, and how well, as evidence.

Written to ``reports/deletions/<request-id>/certificate.{json,md}`` with a plot of the per-record scores (source,
attempts, oracle) and logged to MLflow (experiment ``custody-unlearning``). The JSON's ``verdict`` says in plain
words what was done and on what evidence; ``positive_control``, ``noise_floor`` and ``per_record`` hold the
evidence (``tasks.unlearning.evidence``) of each model's judged attempt, by source version. It names records by
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
from tasks.deletion.verify import latest_verification, update_certificate
from tasks.plots import figure_png
from tasks.storage import Store

SHOWN = ("test_accuracy", "test_f1", "retain_accuracy", "forget_accuracy", "forget_loss", "mia_loss_auc",
         "mia_loss_tpr_at_1fpr", "mia_mink_auc", "mia_mink_tpr_at_1fpr")
SHOWN_LM = ("test_perplexity", "retain_perplexity", "forget_perplexity", "verbatim_rouge_l", "mia_loss_auc",
            "mia_min_k_auc", "mia_min_k_tpr_at_1fpr", "mia_min_k_plus_plus_auc", "mia_zlib_auc", "mia_reference_auc")
CERT_JSON, CERT_MD, SCORES_PNG = "certificate.json", "certificate.md", "per_record_scores.png"  # per request
SUMMARY_FIELDS = ("source", "action", "final", "final_method", "fell_back", "decision")  # a model's line


def judged_step(result: dict[str, Any]) -> dict[str, Any]:
    """The attempt the evidence judged: the first approximate one, else the last (an exact method needs none)."""
    return next((s for s in result["steps"] if not s["gate"]["exact"]), result["steps"][-1])


def model_entry(result: dict[str, Any]) -> dict[str, Any]:
    """One model's part of the certificate: the attempts with their decisions, the final attempt's evidence
    (per-record rows apart: see ``document``), and the numbers against the oracle and the source."""
    if result["action"] != "unlearned":
        return {k: result[k] for k in ("source", "action", "note") if k in result}
    last = result["steps"][-1]
    oracle, source = result["evaluations"]["oracle"], result["evaluations"]["source"]
    cost = last["evaluation"]["cost_seconds"]
    decisive = judged_step(result)
    return {"source": result["source"], "action": "unlearned", "dataset": {"from": result["source_dataset"],
                                                                            "to": result["dataset"]},
            "forget_records": result["forget_records"], "requested_method": result["requested_method"],
            "final": result["final"], "final_method": result["final_method"], "fell_back": result["fell_back"],
            "exact": last["gate"]["exact"], "decision": decisive["gate"]["decision"],
            "attempts": [{"method": s["method"], "version": s["version"], **s["gate"]} for s in result["steps"]],
            "aliases_moved": result["aliases_moved"],
            "evidence": {"judged": decisive["method"],
                         **{k: v for k, v in decisive["evidence"].items() if k != "per_record"}},
            "metrics": {k: {"unlearned": last["evaluation"].get(k), "oracle": oracle.get(k),
                            "source": source.get(k)} for k in (SHOWN_LM if "test_perplexity" in oracle else SHOWN)},
            "cost": {"seconds": cost, "oracle_seconds": oracle["cost_seconds"],
                     "fraction_of_oracle": cost / oracle["cost_seconds"] if oracle["cost_seconds"] else None,
                     "examples_processed": last["evaluation"]["examples_processed"],
                     "oracle_examples_processed": oracle["examples_processed"]}}


def scores_png(results: list[dict[str, Any]]) -> bytes | None:
    """Per forget record, its logit confidence under the source, every attempt and the oracle (a line a record:
    forgetting pulls the line down to the oracle's level), and the membership scores of the source and the judged
    candidate against the 1% and 0.1% FPR thresholds."""
    shown = [r for r in results if r["action"] == "unlearned"]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy.stats import norm

    fig, axes = plt.subplots(2, len(shown), figsize=(5.5 * len(shown), 6.4), squeeze=False)
    for top, bottom, r in zip(axes[0], axes[1], shown, strict=True):
        columns = {"source": r["evaluations"]["source"]["forget_confidence"],
                   **{f"{s['method']}\n({s['gate']['decision']})": s["evaluation"]["forget_confidence"]
                      for s in r["steps"]},
                   "oracle": r["evaluations"]["oracle"]["forget_confidence"]}
        values = np.array(list(columns.values()))
        top.plot(range(len(columns)), values, color="0.6", lw=0.6, alpha=0.6)
        top.boxplot(values.T, positions=range(len(columns)), showfliers=False, widths=0.4)
        top.set_xticks(range(len(columns)), list(columns), fontsize=8)
        top.set_ylabel("logit confidence (per forget record)")
        top.set_title(f"{r['source']} → {r['final']}", fontsize=9)
        rows = judged_step(r)["evidence"]["per_record"]
        for x, key in enumerate(("source_score", "candidate_score")):
            scores = [row[key] for row in rows]
            bottom.scatter(x + np.random.default_rng(x).uniform(-0.15, 0.15, len(scores)), scores, s=10, alpha=0.7)
        for fpr in (0.01, 0.001):
            bottom.axhline(norm.ppf(1 - fpr), ls="--", lw=0.8, color="0.4")
            bottom.text(1.3, norm.ppf(1 - fpr), f"{fpr:.1%} FPR", fontsize=7, va="bottom")
        bottom.set_xticks([0, 1], ["source", "judged candidate"], fontsize=8)
        bottom.set_xlim(-0.5, 1.8)
        bottom.set_ylabel("membership score (σ of non-members)")
    fig.tight_layout()
    return figure_png(fig)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _ci(pair: list[float]) -> str:
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def evidence_lines(m: dict[str, Any]) -> list[str]:
    """The evidence section of one model: method kind, test, n, controls, equivalence, membership, calibration."""
    e, pc, nf, eq = m["evidence"], m["evidence"]["positive_control"], m["evidence"]["noise_floor"], \
        m["evidence"]["equivalence"]
    kind = "exact" if m["exact"] else "approximate"
    lines = [f"**Evidence** (judged: {e['judged']}; the served model is {kind}). Decision: **{m['decision']}**.", "",
             f"- Positive control ({pc['test']}, n = {pc['n']}): the source is {pc['effect']:.2f} noise units from "
             f"the oracle, 95% CI {_ci(pc['effect_ci95'])}, p = {pc['p_value']:.3g} (vs the margin: "
             f"{pc['p_value_vs_margin']:.3g}), Cohen's d {pc['cohens_d']:.2f}; minimum detectable effect at this n "
             f"{pc['minimum_detectable_effect']:.2f}; records needed {pc['required_records']:.0f}. "
             f"{'Fired.' if pc['fires'] else 'Did not fire.'}",
             f"- Noise floor ({nf['source']}): equivalence margin ±{nf['margin']:.2f} noise units"
             + (f" (measured seed-to-seed distance {nf['measured']:.2f})" if "measured" in nf else "") + ".",
             f"- Equivalence ({eq['test']}): effect {eq['effect']:.2f}, 90% CI {_ci(eq['effect_ci90'])}, "
             f"p = {eq['p_value']:.3g}.",
             "- Membership (LiRA-style, oracle as reference, Gaussian fit on the test population): "
             + "; ".join(f"{name}: TPR {v['tpr_at_0.01_fpr']['tpr']:.2f} {_ci(v['tpr_at_0.01_fpr']['ci95'])} at 1% "
                         f"FPR, {v['tpr_at_0.001_fpr']['tpr']:.2f} {_ci(v['tpr_at_0.001_fpr']['ci95'])} at 0.1%, "
                         f"AUC {v['auc']['auc']:.2f} {_ci(v['auc']['ci95'])}" for name, v in e["membership"].items()),
             f"- Calibrated error rates of this gate: {e['calibration']['sentence']}", ""]
    return lines


def _purged(applied: dict[str, Any]) -> str:
    """When the bytes went (a batched purge may come after the certificate, which it then updates)."""
    purge = applied.get("purge", {})
    if purge.get("state") == "pending":
        return f"Unreadable since the request was applied; its bytes are due to be purged by {purge['due_by']}."
    return (f"Purged physically{' at ' + purge['purged_at'] if purge.get('purged_at') else ''}: "
            f"{applied.get('rows_removed', 0)} Parquet rows, {applied.get('raw_rows_removed', 0)} raw rows.")


def markdown(cert: dict[str, Any], plot: str | None) -> str:
    """The certificate as a reader sees it: the verdict, what was deleted, and per model the attempts with their
    decisions, the evidence and the numbers against the oracle and the source (``plot``: the figure's file name)."""
    d = cert["deleted"]
    lines = [f"# Deletion certificate {cert['request_id']}", "", f"**Verdict:** {cert['verdict']['summary']}", "",
             f"Issued {cert['issued_at']}. Request by **{cert['selector']['kind']}** "
             f"({cert['selector']['values']} value(s)), reason: {cert['reason'] or 'not given'}.", "",
             "## Deleted", "",
             f"{d['records']} records ({d['selected']} selected, {d['duplicates']} exact or near duplicates of their "
             f"text), {len(d['content_hashes'])} distinct texts; record-id digest `{d['ids_digest']}`. "
             f"{_purged(cert['applied'])} The forget vault was "
             f"{'destroyed' if cert['vault_destroyed'] else 'never needed'}.", "",
             "## Models", ""]
    if not cert["models"]:
        lines += ["No dataset version or registered model held these records: nothing to unlearn.", ""]
    for m in cert["models"]:
        if m["action"] != "unlearned":
            lines += [f"- **{m['source']}**: {m['action']} — {m.get('note', '')}", ""]
            continue
        attempts = "; ".join(f"{a['method']} → {a['version']}: {a['decision']}, "
                             f"{'accepted' if a['passed'] else 'not accepted'} ({'; '.join(a['reasons'])})"
                             for a in m["attempts"])
        lines += [f"### {m['source']} → {m['final']} ({m['final_method']})", "",
                  f"Dataset {m['dataset']['from']} → {m['dataset']['to']}; {m['forget_records']} trained-on records "
                  f"forgotten. Attempts: {attempts}."
                  + (" **Fell back to an exact method.**" if m["fell_back"] else ""),
                  f"Aliases moved: {', '.join(m['aliases_moved']) or 'none'}; {m['source']} is retired.", "",
                  *evidence_lines(m),
                  "| metric | unlearned | oracle | source |", "|---|---|---|---|",
                  *(f"| {k} | {_fmt(v['unlearned'])} | {_fmt(v['oracle'])} | {_fmt(v['source'])} |"
                    for k, v in m["metrics"].items()),
                  f"| cost (s) | {_fmt(m['cost']['seconds'])} | {_fmt(m['cost']['oracle_seconds'])} | |",
                  f"| examples processed | {m['cost']['examples_processed']} | "
                  f"{m['cost']['oracle_examples_processed']} | |", "", *_privleak_lines(m["evidence"])]
    if plot:
        lines += [f"![per-record scores]({plot})", ""]
    return "\n".join(lines)


def _privleak_lines(evidence: dict[str, Any]) -> list[str]:
    """A language model's PrivLeak against the oracle (MUSE), per attack, for the judged model and the source."""
    if "privleak" not in evidence:
        return []
    return ["PrivLeak against the oracle (MUSE; 0 = the oracle's leakage, towards −100 = the forget set leaks, "
            "positive = over-unlearned), by attack: " + "; ".join(
                f"{who} " + ", ".join(f"{attack} {_fmt(value)}" for attack, value in sorted(by_attack.items()))
                for who, by_attack in evidence["privleak"].items()) + ".", ""]


def verdict(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The certificate's verdict in one word per model and one paragraph for a reader."""
    unlearned = [m for m in models if m["action"] == "unlearned"]
    if not unlearned:
        return {"forgotten": True, "summary": "no model learned these records; the data is deleted.", "models": {}}
    parts = []
    for m in unlearned:
        why = next((a["reasons"][0] for a in m["attempts"] if not a["exact"]), "")
        if m["exact"]:
            parts.append(f"{m['source']} was replaced by {m['final']}, made by an exact method ({m['final_method']}): "
                         "it never saw the deleted records" + (f". The approximate attempt was not accepted: {why}"
                                                              if m["fell_back"] and why else ""))
        else:
            parts.append(f"{m['source']} was replaced by {m['final']} ({m['final_method']}, approximate): {why}")
    return {"forgotten": all(m["attempts"][-1]["passed"] for m in unlearned), "summary": " ".join(
        p.rstrip(".") + "." for p in parts),
            "models": {m["source"]: {"final": m["final"], "method": m["final_method"], "exact": m["exact"],
                                     "decision": m["decision"]} for m in unlearned}}


def document(doc: dict[str, Any], results: list[dict[str, Any]], vault_destroyed: bool) -> dict[str, Any]:
    """The certificate of request ``doc`` from its per-model ``results``: the selector by kind and count only (its
    values may be texts), the deleted records by count, digest and content hash."""
    resolved, models = doc["resolved"], [model_entry(r) for r in results]
    return {"request_id": doc["request_id"], "issued_at": dt.datetime.now(dt.UTC).isoformat(),
            "selector": {"kind": doc["selector"]["kind"], "values": len(doc["selector"]["values"])},
            "reason": doc.get("reason"),
            "deleted": {"records": len(resolved["record_ids"]), **resolved["counts"],
                        "content_hashes": resolved["content_hashes"], "ids_digest": resolved.get("ids_digest")},
            "applied": doc.get("applied", {}), "models": models, "verdict": verdict(models),
            **evidence_keys(results), "vault_destroyed": vault_destroyed, "history": doc["history"]}


def evidence_keys(results: list[dict[str, Any]]) -> dict[str, Any]:
    """``positive_control``, ``noise_floor`` and ``per_record`` (rows by record-id digest) of each unlearned model's
    judged attempt, by source version."""
    judged = {r["source"]: judged_step(r)["evidence"] for r in results if r["action"] == "unlearned"}
    return {key: {source: e[key] for source, e in judged.items()}
            for key in ("positive_control", "noise_floor", "per_record")}


def certify(store: Store, doc: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the certificate (store + MLflow), destroy the vault, and mark the request certified."""
    import mlflow

    request_id = doc["request_id"]
    key = partial(layout.deletion_report, request_id)
    previous = store.read_json(key(CERT_JSON)) if store.exists(key(CERT_JSON)) else {}
    cert = document(doc, results, store.exists(layout.vault(request_id)) or previous.get("vault_destroyed", False))
    cert["verification"] = latest_verification(store, request_id)  # custody verify-deletion, if it ran already
    png = scores_png(results)
    if png:
        store.write_bytes(key(SCORES_PNG), png)
    store.write_json(key(CERT_JSON), cert)
    store.write_bytes(key(CERT_MD), markdown(cert, SCORES_PNG if png else None).encode())
    registry.use_experiment(registry.UNLEARNING_EXPERIMENT)
    with mlflow.start_run(run_name=f"certificate {request_id}"), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({registry.REQUEST_TAG: request_id, registry.KIND_TAG: "certificate"})
        for name in (CERT_JSON, CERT_MD, SCORES_PNG):
            if store.exists(key(name)):
                (Path(tmp) / name).write_bytes(store.read_bytes(key(name)))
        mlflow.log_artifacts(tmp, "certificate")
    vault.destroy_vault(store, request_id)
    return requests.set_status(store, doc, requests.CERTIFIED, certificate={
        "json": store.uri(key(CERT_JSON)), "markdown": store.uri(key(CERT_MD)), "verdict": cert["verdict"]["summary"],
        "models": [{k: m.get(k) for k in SUMMARY_FIELDS} for m in cert["models"]]})


def record_purge(store: Store, request_id: str, applied: dict[str, Any]) -> bool:
    """A purge pass that finished after certification: the certificate (JSON and markdown) says when the bytes
    went; False when the request is not certified yet (its certificate will say it when written)."""
    key = partial(layout.deletion_report, request_id)
    if not update_certificate(store, request_id, applied=applied):
        return False
    plot = SCORES_PNG if store.exists(key(SCORES_PNG)) else None
    store.write_bytes(key(CERT_MD), markdown(store.read_json(key(CERT_JSON)), plot).encode())
    return True

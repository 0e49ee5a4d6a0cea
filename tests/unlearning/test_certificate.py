"""Certificate rendering: the per-model entry, the verdict, the evidence keys and the markdown a reader gets, from a
request and its results (evidence weighed on synthetic confidences)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.certificate import document, markdown, model_entry, scores_png
from tasks.unlearning.evidence import Confidences, weigh
from tasks.unlearning.gate import GateConfig, gate

SECRET = "call me at 555-0100, I am Jane Roe"  # a text-selector value: raw text the certificate must not show
RNG = np.random.default_rng(0)
TRUTH = RNG.normal(1.0, 2.0, 3), RNG.normal(1.0, 2.0, 200)


def evaluation(accuracy: float, memorised: float, seed: int, cost: float, seen: int) -> dict:
    noise = np.random.default_rng(seed)
    metrics = {"test_accuracy": accuracy, "test_f1": accuracy - 0.01, "retain_accuracy": 0.9, "forget_accuracy": 0.5,
               "forget_loss": 0.7, "mia_loss_auc": 0.6, "mia_loss_tpr_at_1fpr": 0.0, "mia_mink_auc": 0.52,
               "mia_mink_tpr_at_1fpr": 0.0}
    return {**metrics, "forget_losses": [0.5, 0.7, 0.9], "cost_seconds": cost, "examples_processed": seen,
            "forget_confidence": (TRUTH[0] + memorised + noise.normal(0, 1, 3)).tolist(),
            "population_confidence": (TRUTH[1] + noise.normal(0, 1, 200)).tolist()}


def conf(ev: dict) -> Confidences:
    return Confidences(np.array(ev["forget_confidence"]), np.array(ev["population_confidence"]))


def attempt(method: str, version: str, exact: bool, ev: dict, source: dict, oracle: dict) -> dict:
    weighed = weigh(conf(source), conf(oracle), conf(ev), exact, record_digests=["d1", "d2", "d3"])
    weighed["calibration"] = {"sentence": "measured by the bench"}
    return {"method": method, "version": version, "evidence": weighed, "evaluation": ev,
            "gate": gate(weighed, oracle["test_accuracy"] - ev["test_accuracy"], GateConfig())}


@pytest.fixture
def results() -> list[dict]:
    """One model unlearned by NegGrad+ (inconclusive on 3 records) then retrain, and one never served."""
    oracle = evaluation(0.8125, 0.0, 1, cost=8.0, seen=400)
    source = evaluation(0.8250, 3.0, 2, cost=float("nan"), seen=0)
    candidate = evaluation(0.8000, 1.0, 3, cost=1.0, seen=30)
    steps = [attempt("neggrad-plus", "m@3", False, candidate, source, oracle),
             attempt("retrain", "m@4", True, oracle, source, oracle)]
    unlearned = {"source": "m@1", "action": "unlearned", "dataset": "d@new", "source_dataset": "d@old",
                 "forget_records": 3, "requested_method": "neggrad-plus", "final": "m@4", "final_method": "retrain",
                 "fell_back": True, "aliases_moved": ["serving"], "promoted": True, "oracle": "m@4", "steps": steps,
                 "evaluations": {"source": source, "oracle": oracle}}
    return [unlearned, {"source": "m@2", "action": "retired", "note": "never served; nothing to unlearn"}]


@pytest.fixture
def request_doc() -> dict:
    return {"request_id": "del-1", "selector": {"kind": "text", "values": [SECRET]}, "reason": "consent withdrawn",
            "resolved": {"record_ids": ["r1", "r2", "r3"], "counts": {"selected": 2, "duplicates": 1},
                         "content_hashes": ["h1", "h2"], "ids_digest": "abc123"},
            "applied": {"rows_removed": 6, "raw_rows_removed": 3}, "history": [{"status": "received"}]}


def test_model_entry_keeps_the_attempts_the_evidence_and_the_cost(results: list[dict]) -> None:
    entry = model_entry(results[0])
    assert [(a["method"], a["version"], a["decision"], a["passed"]) for a in entry["attempts"]] == [
        ("neggrad-plus", "m@3", "inconclusive", False), ("retrain", "m@4", "pass", True)]
    assert entry["exact"] is True and entry["decision"] == "inconclusive"  # the approximate attempt was judged
    assert entry["evidence"]["judged"] == "neggrad-plus" and "per_record" not in entry["evidence"]
    assert entry["metrics"]["test_accuracy"] == {"unlearned": 0.8125, "oracle": 0.8125, "source": 0.825}
    assert entry["cost"]["fraction_of_oracle"] == 1.0 and entry["cost"]["examples_processed"] == 400
    assert entry["dataset"] == {"from": "d@old", "to": "d@new"}
    assert model_entry(results[1]) == results[1]  # a model with nothing to unlearn is named with why


def test_the_certificate_has_the_verdict_and_the_evidence_by_model(request_doc: dict, results: list[dict]) -> None:
    cert = document(request_doc, results, vault_destroyed=True)
    assert {"verdict", "positive_control", "noise_floor", "per_record"} <= set(cert)
    assert cert["verdict"]["forgotten"] is True
    assert cert["verdict"]["models"] == {"m@1": {"final": "m@4", "method": "retrain", "exact": True,
                                                  "decision": "inconclusive"}}
    assert "exact method (retrain)" in cert["verdict"]["summary"] and "too few" in cert["verdict"]["summary"]
    assert [row["record"] for row in cert["per_record"]["m@1"]] == ["d1", "d2", "d3"]
    assert cert["positive_control"]["m@1"]["n"] == 3 and cert["noise_floor"]["m@1"]["source"] == "calibrated"


def test_markdown_shows_the_verdict_the_evidence_and_the_numbers(request_doc: dict, results: list[dict]) -> None:
    md = markdown(document(request_doc, results, vault_destroyed=True), "per_record_scores.png")
    assert "# Deletion certificate del-1" in md and "**Verdict:** m@1 was replaced by m@4" in md
    assert "Request by **text** (1 value(s)), reason: consent withdrawn." in md
    assert "3 records (2 selected, 1 exact or near duplicates of their text), 2 distinct texts" in md
    assert "record-id digest `abc123`" in md and "6 Parquet rows, 3 raw rows" in md and "was destroyed" in md
    assert "### m@1 → m@4 (retrain)" in md
    assert "neggrad-plus → m@3: inconclusive, not accepted (3 forgotten record(s) are too few" in md
    assert "retrain → m@4: pass, accepted (exact method" in md and "**Fell back to an exact method.**" in md
    assert "the served model is exact). Decision: **inconclusive**" in md
    assert "- Positive control (one-sided Welch t-test" in md and "n = 3" in md
    assert "- Noise floor (calibrated): equivalence margin ±0.50 noise units." in md
    assert "TOST" in md and "TPR" in md and "measured by the bench" in md
    assert "| test_accuracy | 0.812 | 0.812 | 0.825 |" in md
    assert "| cost (s) | 8.000 | 8.000 | |" in md and "| examples processed | 400 | 400 | |" in md
    assert "- **m@2**: retired — never served; nothing to unlearn" in md
    assert "![per-record scores](per_record_scores.png)" in md


def test_certificate_names_records_by_count_and_hash_never_by_text(request_doc: dict, results: list[dict]) -> None:
    cert = document(request_doc, results, vault_destroyed=True)
    assert cert["selector"] == {"kind": "text", "values": 1}
    assert SECRET not in str(cert) and SECRET not in markdown(cert, None)
    assert "555-0100" not in markdown(cert, None)


def test_a_request_that_held_nothing_says_so(request_doc: dict) -> None:
    cert = document(request_doc, [], vault_destroyed=False)
    md = markdown(cert, None)
    assert "nothing to unlearn" in md and "never needed" in md and "![" not in md
    assert cert["verdict"]["forgotten"] is True and cert["per_record"] == {}
    assert scores_png([]) is None


def test_scores_plot_is_a_png_when_a_model_was_unlearned(results: list[dict]) -> None:
    assert scores_png(results)[:8] == b"\x89PNG\r\n\x1a\n"

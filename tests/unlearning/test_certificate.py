"""Certificate rendering: the per-model entry and the markdown a reader gets, from a request and its results."""

from __future__ import annotations

import pytest

from tasks.certificate import document, losses_png, markdown, model_entry
from tasks.unlearning.gate import GateConfig, compare, gate

SECRET = "call me at 555-0100, I am Jane Roe"  # a text-selector value: raw text the certificate must not show


def evaluation(accuracy: float, auc: float, losses: list[float], cost: float, seen: int) -> dict:
    metrics = {"test_accuracy": accuracy, "test_f1": accuracy - 0.01, "retain_accuracy": 0.9, "forget_accuracy": 0.5,
               "forget_loss": sum(losses) / len(losses), "mia_loss_auc": auc, "mia_loss_tpr_at_1fpr": 0.0,
               "mia_mink_auc": 0.52, "mia_mink_tpr_at_1fpr": 0.0}
    return {**metrics, "forget_losses": losses, "cost_seconds": cost, "examples_processed": seen}


def attempt(method: str, version: str, exact: bool, ev: dict, oracle: dict) -> dict:
    vs = compare(ev, oracle)
    return {"method": method, "version": version, "gate": gate(vs, exact, GateConfig()), "vs_oracle": vs,
            "evaluation": ev}


@pytest.fixture
def results() -> list[dict]:
    """One model unlearned by NegGrad+ (rejected: far from the oracle) then retrain, and one never served."""
    oracle = evaluation(0.8125, 0.5, [0.9, 1.1, 1.3], cost=8.0, seen=400)
    source = evaluation(0.8250, 0.9, [0.1, 0.2, 0.3], cost=float("nan"), seen=0)
    rejected = evaluation(0.7000, 0.75, [0.4, 0.5, 0.6], cost=1.0, seen=30)
    steps = [attempt("neggrad-plus", "m@3", False, rejected, oracle), attempt("retrain", "m@4", True, oracle, oracle)]
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


def test_model_entry_keeps_the_attempts_the_numbers_and_the_cost(results: list[dict]) -> None:
    entry = model_entry(results[0])
    assert [(a["method"], a["version"], a["passed"]) for a in entry["attempts"]] == [
        ("neggrad-plus", "m@3", False), ("retrain", "m@4", True)]
    assert entry["metrics"]["test_accuracy"] == {"unlearned": 0.8125, "oracle": 0.8125, "source": 0.825}
    assert entry["cost"]["fraction_of_oracle"] == 1.0 and entry["cost"]["examples_processed"] == 400
    assert entry["dataset"] == {"from": "d@old", "to": "d@new"}
    assert model_entry(results[1]) == results[1]  # a model with nothing to unlearn is named with why


def test_markdown_shows_the_verdicts_and_numbers(request_doc: dict, results: list[dict]) -> None:
    md = markdown(document(request_doc, results, vault_destroyed=True), "forget_losses.png")
    assert "# Deletion certificate del-1" in md
    assert "Request by **text** (1 value(s)), reason: consent withdrawn." in md
    assert "3 records (2 selected, 1 exact or near duplicates of their text), 2 distinct texts" in md
    assert "record-id digest `abc123`" in md and "6 Parquet rows, 3 raw rows" in md and "was destroyed" in md
    assert "### m@1 → m@4 (retrain)" in md
    assert "neggrad-plus → m@3: failed (|MIA loss AUC - oracle| = 0.250 > 0.03 test accuracy 11.25 points below " \
           "the oracle > 1)" in md
    assert "retrain → m@4: passed (exact method: the deleted records never reached this model)" in md
    assert "**Fell back to an exact method.**" in md and "Aliases moved: serving; m@1 is retired." in md
    assert "| test_accuracy | 0.812 | 0.812 | 0.825 |" in md
    assert "| mia_loss_auc | 0.500 | 0.500 | 0.900 |" in md
    assert "| forget-loss KS p-value vs oracle | 1.000 | | |" in md
    assert "| cost (s) | 8.000 | 8.000 | |" in md and "| examples processed | 400 | 400 | |" in md
    assert "- **m@2**: retired — never served; nothing to unlearn" in md
    assert "![forget-set losses](forget_losses.png)" in md


def test_certificate_names_records_by_count_and_hash_never_by_text(request_doc: dict, results: list[dict]) -> None:
    cert = document(request_doc, results, vault_destroyed=True)
    assert cert["selector"] == {"kind": "text", "values": 1}
    assert SECRET not in str(cert) and SECRET not in markdown(cert, None)
    assert "555-0100" not in markdown(cert, None)


def test_a_request_that_held_nothing_says_so(request_doc: dict) -> None:
    md = markdown(document(request_doc, [], vault_destroyed=False), None)
    assert "nothing to unlearn" in md and "never needed" in md and "![" not in md
    assert losses_png([]) is None


def test_losses_plot_is_a_png_when_a_model_was_unlearned(results: list[dict]) -> None:
    assert losses_png(results)[:8] == b"\x89PNG\r\n\x1a\n"

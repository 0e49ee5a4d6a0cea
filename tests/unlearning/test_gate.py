"""The gate and compare: a candidate against the oracle, accepted or rejected on each criterion, at the edges."""

from __future__ import annotations

import math

import pytest

from tasks.unlearning.gate import GateConfig, compare, gate

CFG = GateConfig(max_mia_gap=0.03, max_accuracy_drop=0.01)


def assessed(test_accuracy: float, mia_loss_auc: float, forget_losses: list[float]) -> dict:
    """The shape ``tasks.evaluation.assess`` returns, with the numbers the gate reads."""
    return {"test_accuracy": test_accuracy, "mia_loss_auc": mia_loss_auc, "forget_loss": sum(forget_losses) / 4,
            "forget_losses": forget_losses, "cost_seconds": 1.5, "examples_processed": 40}


def test_compare_is_candidate_minus_oracle_on_every_shared_float() -> None:
    oracle = assessed(0.80, 0.50, [0.7, 0.8, 0.9, 1.0])
    out = compare(assessed(0.75, 0.60, [0.1, 0.2, 0.3, 0.4]), oracle)
    assert out["test_accuracy_minus_oracle"] == pytest.approx(-0.05)
    assert out["mia_loss_auc_minus_oracle"] == pytest.approx(0.10)
    assert out["cost_seconds_minus_oracle"] == 0.0
    assert "examples_processed_minus_oracle" not in out  # an int count is not compared
    assert out["forget_loss_ks_statistic"] == 1.0  # the two loss samples do not overlap at all
    assert out["forget_loss_ks_pvalue"] < 0.05


def test_compare_of_identical_models_has_no_gap_and_ks_cannot_tell_them_apart() -> None:
    same = assessed(0.80, 0.55, [0.3, 0.5, 0.7, 0.9])
    out = compare(same, dict(same))
    assert out["test_accuracy_minus_oracle"] == 0.0 and out["mia_loss_auc_minus_oracle"] == 0.0
    assert out["forget_loss_ks_statistic"] == 0.0 and out["forget_loss_ks_pvalue"] == 1.0


def test_compare_without_forget_losses_gives_nan_ks() -> None:
    out = compare(assessed(0.8, 0.5, []), assessed(0.8, 0.5, [0.1]))
    assert math.isnan(out["forget_loss_ks_pvalue"]) and math.isnan(out["forget_loss_ks_statistic"])


def comparison(mia_gap: float, accuracy_delta: float) -> dict[str, float]:
    return {"mia_loss_auc_minus_oracle": mia_gap, "test_accuracy_minus_oracle": accuracy_delta}


def test_gate_accepts_an_approximate_candidate_within_both_tolerances() -> None:
    verdict = gate(comparison(0.01, 0.02), exact=False, cfg=CFG)  # better accuracy than the oracle is fine
    assert verdict["passed"] is True
    assert verdict["reasons"] == ["|MIA loss AUC - oracle| = 0.010 <= 0.03; test accuracy within 1 point(s) of "
                                  "the oracle"]


@pytest.mark.parametrize("mia_gap", [0.031, -0.031, 0.5])
def test_gate_rejects_a_membership_gap_beyond_the_tolerance_either_way(mia_gap: float) -> None:
    verdict = gate(comparison(mia_gap, 0.0), exact=False, cfg=CFG)
    assert verdict["passed"] is False
    assert verdict["reasons"] == [f"|MIA loss AUC - oracle| = {abs(mia_gap):.3f} > 0.03"]


def test_gate_rejects_an_accuracy_drop_beyond_the_tolerance() -> None:
    verdict = gate(comparison(0.0, -0.02), exact=False, cfg=CFG)
    assert verdict["passed"] is False
    assert verdict["reasons"] == ["test accuracy 2.00 points below the oracle > 1"]


def test_gate_names_every_failed_criterion() -> None:
    verdict = gate(comparison(0.2, -0.2), exact=False, cfg=CFG)
    assert not verdict["passed"] and len(verdict["reasons"]) == 2


def test_gate_boundaries_are_inclusive() -> None:
    edge = GateConfig(max_mia_gap=0.25, max_accuracy_drop=0.5)  # exact in binary: no rounding at the boundary
    assert gate(comparison(0.25, -0.5), exact=False, cfg=edge)["passed"] is True
    assert gate(comparison(0.25, -0.5000001), exact=False, cfg=edge)["passed"] is False
    assert gate(comparison(0.2500001, -0.5), exact=False, cfg=edge)["passed"] is False


@pytest.mark.parametrize("missing", ["mia_loss_auc_minus_oracle", "test_accuracy_minus_oracle"])
def test_gate_rejects_a_candidate_it_cannot_measure(missing: str) -> None:
    nan = {**comparison(0.0, 0.0), missing: float("nan")}
    assert gate(nan, exact=False, cfg=CFG)["passed"] is False
    absent = comparison(0.0, 0.0)
    del absent[missing]
    assert gate(absent, exact=False, cfg=CFG)["passed"] is False


def test_gate_accepts_an_exact_method_whatever_its_numbers() -> None:
    verdict = gate(comparison(float("nan"), -0.9), exact=True, cfg=CFG)
    assert verdict == {"passed": True, "reasons": ["exact method: the deleted records never reached this model"]}


def test_default_gate_config_is_the_documented_tolerance() -> None:
    assert gate(comparison(0.03, -0.01), exact=False)["passed"] is True
    assert gate(comparison(0.031, 0.0), exact=False)["passed"] is False

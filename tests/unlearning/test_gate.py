"""The gate: the evidence's decision and the utility check turned into served or not, for each decision and policy."""

from __future__ import annotations

import pytest

from tasks.errors import CustodyError
from tasks.unlearning.evidence import FAIL, INCONCLUSIVE, PASS
from tasks.unlearning.gate import GateConfig, gate, record_digest


def weighed(decision: str, exact: bool = False) -> dict:
    """The part of ``evidence.weigh``'s result the gate reads."""
    return {"verdict": {"decision": decision, "exact": exact, "reasons": [f"because {decision}"]}}


def test_a_passing_decision_with_the_oracles_accuracy_is_served() -> None:
    verdict = gate(weighed(PASS), shortfall=-0.02, cfg=GateConfig())  # better than the oracle is fine
    assert verdict == {"passed": True, "decision": PASS, "exact": False, "reasons": ["because pass"]}


def test_a_passing_decision_that_lost_accuracy_is_not_served() -> None:
    verdict = gate(weighed(PASS), shortfall=0.02, cfg=GateConfig(max_accuracy_drop=0.01))
    assert verdict["passed"] is False
    assert verdict["reasons"][-1] == "test accuracy 2.00 points below the oracle > 1"


def test_the_accuracy_boundary_is_inclusive_and_nan_fails() -> None:
    edge = GateConfig(max_accuracy_drop=0.5)  # exact in binary: no rounding at the boundary
    assert gate(weighed(PASS), 0.5, edge)["passed"] is True
    assert gate(weighed(PASS), 0.5000001, edge)["passed"] is False
    assert gate(weighed(PASS), float("nan"), edge)["passed"] is False


def test_a_failing_decision_is_not_served() -> None:
    assert gate(weighed(FAIL), 0.0, GateConfig())["passed"] is False


def test_an_inconclusive_decision_falls_back_to_an_exact_method_by_default() -> None:
    verdict = gate(weighed(INCONCLUSIVE), 0.0, GateConfig())
    assert verdict["passed"] is False and verdict["decision"] == INCONCLUSIVE
    assert "an exact method takes over" in verdict["reasons"][-1]


def test_an_inconclusive_decision_is_served_only_when_the_policy_says_so_and_says_it() -> None:
    verdict = gate(weighed(INCONCLUSIVE), 0.0, GateConfig(on_inconclusive="accept"))
    assert verdict["passed"] is True and "without statistical evidence" in verdict["reasons"][-1]
    assert gate(weighed(INCONCLUSIVE), 0.5, GateConfig(on_inconclusive="accept"))["passed"] is False  # utility


def test_an_exact_method_is_served_whatever_its_accuracy() -> None:
    assert gate(weighed(PASS, exact=True), float("nan"), GateConfig())["passed"] is True


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(CustodyError, match="on_inconclusive"):
        GateConfig(on_inconclusive="hope")


def test_records_are_named_by_a_stable_digest_not_their_id() -> None:
    assert record_digest("src:123") == record_digest("src:123") != record_digest("src:124")
    assert len(record_digest("src:123")) == 16 and int(record_digest("src:123"), 16) >= 0

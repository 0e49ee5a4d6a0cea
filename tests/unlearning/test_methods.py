"""The unlearning methods behind one interface, and the order in which they are tried."""

from __future__ import annotations

import pytest

from tasks.errors import Fatal
from tasks.unlearning import METHODS, UnlearnConfig
from tasks.unlearning.base import AUTO, FromSource, Method
from tasks.unlearning.methods import BY_NAME, ORACLE, attempts, resolve_method
from tasks.unlearning.steps import Approximate


def test_every_configurable_method_has_one_implementation() -> None:
    assert set(BY_NAME) == set(METHODS) - {AUTO}
    assert all(isinstance(m, Method) and name == m.name for name, m in BY_NAME.items())


def test_exact_methods_are_sisa_and_retrain_and_only_sisa_needs_shards() -> None:
    assert {n for n, m in BY_NAME.items() if m.exact} == {"sisa", "retrain"}
    assert {n for n, m in BY_NAME.items() if m.sharded_only} == {"sisa"}
    assert {n for n, m in BY_NAME.items() if isinstance(m, Approximate)} == {"neggrad-plus", "npo", "scrub"}
    assert not isinstance(BY_NAME[ORACLE], FromSource)  # the oracle starts from scratch


def test_unknown_method_is_refused_with_the_valid_names() -> None:
    with pytest.raises(Fatal, match="neggrad-plus"):
        UnlearnConfig(method="forget-harder")


@pytest.mark.parametrize(("method", "sharded", "resolved"), [
    ("auto", True, "sisa"), ("auto", False, "neggrad-plus"), ("scrub", False, "scrub"), ("sisa", True, "sisa"),
    ("retrain", False, "retrain")])
def test_resolve_method(method: str, sharded: bool, resolved: str) -> None:
    assert resolve_method(method, sharded) == resolved


def test_sisa_on_an_unsharded_model_is_fatal() -> None:
    with pytest.raises(Fatal, match="sisa needs a sharded model"):
        resolve_method("sisa", sharded=False)


@pytest.mark.parametrize(("method", "sharded", "order"), [
    ("neggrad-plus", True, ["neggrad-plus", "sisa", "retrain"]),
    ("neggrad-plus", False, ["neggrad-plus", "retrain"]),
    ("scrub", True, ["scrub", "sisa", "retrain"]),
    ("scrub", False, ["scrub", "retrain"]),
    ("sisa", True, ["sisa", "retrain"]),
    ("retrain", True, ["retrain"]),
    ("retrain", False, ["retrain"])])
def test_attempts_fall_back_to_exact_methods_in_order_of_cost(method: str, sharded: bool, order: list[str]) -> None:
    assert attempts(method, sharded) == order

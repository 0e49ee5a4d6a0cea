"""The unlearning state machine on a real store and a real MLflow (SQLite under tmp_path), tiny BERTs, no Prefect:
status transitions, the fallback order from an approximate method to the exact ones, promotion, and re-runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks import layout
from tasks import model_registry as registry
from tasks.deletion import requests
from tasks.deletion.apply import process_pending
from tasks.errors import Fatal
from tasks.storage import Store
from tasks.training import run_training
from tasks.unlearning import GateConfig, UnlearnConfig, unlearn_request, unlearn_version
from tasks.unlearning.evidence import EvidenceConfig
from tests.helpers import files_containing, module_home, reviews_store, tiny_train_config

OWNER = "o03"
STATUSES = ["received", "resolved", "applied", "unlearned", "certified"]
FAST = {"max_steps": 3, "retain_sample": 40, "mink_sample": 20}
NEVER = GateConfig(max_accuracy_drop=-1.0)  # no candidate is 100 points above the oracle: every approximate one fails
# every approximate candidate is inconclusive (no forget set is that large) and the policy accepts it anyway
ALWAYS = GateConfig(max_accuracy_drop=1.0, on_inconclusive="accept", evidence=EvidenceConfig(min_records=10**9))


def trained(store: Store, shards: int) -> dict[str, Any]:
    """80 toy reviews from 8 owners, a 2-shard selection, one tiny model trained with ``shards`` shards."""
    ref, rows = reviews_store(store, n=80, owners=8, shards=2)
    model = run_training(store, tiny_train_config(ref, epochs=1, shards=shards))["ref"]
    return {"model": model, "texts": [r["text"] for r in rows if r["owner"] == OWNER]}


@pytest.fixture(scope="module")
def plain_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A home (store + MLflow) with one unsharded model, built once: each test unlearns from its own copy."""
    with module_home(tmp_path_factory, "plain") as (home, store):
        yield home, trained(store, shards=1)


@pytest.fixture
def plain(plain_home: tuple[Path, dict[str, Any]], custody_env: Path) -> tuple[Store, dict[str, Any]]:
    """A copy of the home with one unsharded model, as this test's ``CUSTODY_HOME``."""
    template, setup = plain_home
    shutil.copytree(template, custody_env)
    return Store.from_settings(), setup


def versions(name: str = "sent-classifier") -> list[Any]:
    return registry.client().search_model_versions(f"name='{name}'")


def only_unlearned(doc: dict[str, Any]) -> dict[str, Any]:
    (model,) = doc["certificate"]["models"]
    return model


def test_a_request_matching_nothing_goes_through_every_status_and_certifies_once(plain: tuple) -> None:
    store, _ = plain
    request = requests.submit(store, "owner", ["nobody"], None)
    seen: list[dict[str, Any]] = []
    doc = unlearn_request(store, request["request_id"], UnlearnConfig(**FAST), on_version=seen.append)
    assert [h["status"] for h in doc["history"]] == STATUSES
    assert doc["certificate"]["models"] == [] and seen == []
    md_key = layout.deletion_report(request["request_id"], "certificate.md")
    assert "nothing to unlearn" in store.read_bytes(md_key).decode()
    issued = store.read_json(layout.deletion_report(request["request_id"], "certificate.json"))["issued_at"]

    again = unlearn_request(store, request["request_id"], UnlearnConfig(**FAST))  # already certified: a no-op
    assert again == doc
    assert store.read_json(layout.deletion_report(request["request_id"], "certificate.json"))["issued_at"] == issued


def test_a_rejected_approximate_candidate_falls_back_to_the_retrain(plain: tuple) -> None:
    store, setup = plain
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    process_pending(store, request["request_id"])
    assert requests.load(store, request["request_id"])["status"] == "applied"
    seen: list[dict[str, Any]] = []

    doc = unlearn_request(store, request["request_id"], UnlearnConfig(method="neggrad-plus", gate=NEVER, **FAST),
                          on_version=seen.append)

    assert [h["status"] for h in doc["history"]] == STATUSES
    model = only_unlearned(doc)
    assert (model["source"], model["final_method"], model["fell_back"]) == (setup["model"], "retrain", True)
    (result,) = seen
    assert [(s["method"], s["gate"]["passed"]) for s in result["steps"]] == [("neggrad-plus", False),
                                                                              ("retrain", True)]
    assert result["final"] == result["oracle"]  # the oracle itself is served: no third model is trained
    candidate, final = result["steps"][0]["version"], result["final"]
    assert registry.tags(candidate)[registry.STATUS_TAG] == registry.REJECTED
    assert registry.tags(candidate)[registry.GATE_TAG] == "failed" and registry.aliases(candidate) == []
    assert registry.tags(setup["model"])[registry.STATUS_TAG] == registry.RETIRED
    assert registry.aliases(setup["model"]) == []
    assert registry.aliases(final) == [registry.SERVING]
    assert registry.tags(final)[registry.ROLE_TAG] == registry.UNLEARNED
    assert registry.tags(final)[registry.REQUEST_TAG] == request["request_id"]
    assert not store.exists(layout.vault(request["request_id"]))  # certification destroyed the forget texts
    assert files_containing(store, setup["texts"]) == []  # and nothing else holds them, the certificate included

    registered = len(versions())
    assert unlearn_request(store, request["request_id"], UnlearnConfig(method="neggrad-plus", **FAST)) == doc
    assert len(versions()) == registered  # a certified request is returned as it is


@pytest.mark.parametrize("method", ["neggrad-plus", "npo"])
def test_a_candidate_within_the_gate_is_served_without_fallback(plain: tuple, method: str) -> None:
    store, setup = plain
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    doc = unlearn_request(store, request["request_id"], UnlearnConfig(method=method, gate=ALWAYS, **FAST))
    model = only_unlearned(doc)
    assert (model["final_method"], model["fell_back"]) == (method, False)
    result = store.read_json(layout.model_result(request["request_id"], setup["model"]))
    assert result["promoted"] is True and result["final"] != result["oracle"]
    assert registry.tags(result["oracle"])[registry.ROLE_TAG] == registry.ORACLE
    assert registry.aliases(result["oracle"]) == []  # the oracle is only the yardstick here
    assert registry.aliases(result["final"]) == [registry.SERVING]


def test_a_sharded_model_falls_back_to_sisa_before_the_retrain(store: Store) -> None:
    setup = trained(store, shards=2)
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    doc = unlearn_request(store, request["request_id"], UnlearnConfig(method="scrub", gate=NEVER, **FAST))
    result = store.read_json(layout.model_result(request["request_id"], setup["model"]))
    assert [(s["method"], s["gate"]["passed"]) for s in result["steps"]] == [("scrub", False), ("sisa", True)]
    membership = result["steps"][-1]["evidence"]["membership"]  # the other shards' models are OUT references
    assert {"source (other shards as references)", "candidate (other shards as references)"} <= set(membership)
    assert all("source_shard_score" in row for row in result["steps"][-1]["evidence"]["per_record"])
    assert only_unlearned(doc)["final_method"] == "sisa"
    assert registry.aliases(result["final"]) == [registry.SERVING]
    sisa_cost = result["steps"][-1]["evaluation"]["examples_processed"]
    assert 0 < sisa_cost < result["evaluations"]["oracle"]["examples_processed"]  # only touched shards retrained


def test_sisa_on_an_unsharded_model_stops_before_registering_anything(plain: tuple) -> None:
    store, _ = plain
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    before = len(versions())
    with pytest.raises(Fatal, match="sisa needs a sharded model"):
        unlearn_request(store, request["request_id"], UnlearnConfig(method="sisa", **FAST))
    assert len(versions()) == before
    assert requests.load(store, request["request_id"])["status"] == "applied"  # left for a later run


def test_a_version_left_unpromoted_by_a_killed_run_is_promoted_by_the_next(plain: tuple) -> None:
    store, setup = plain
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    cfg = UnlearnConfig(method="retrain", **FAST)
    doc = unlearn_request(store, request["request_id"], cfg)
    key = layout.model_result(request["request_id"], setup["model"])
    result = store.read_json(key)
    # as if the process died after writing the result, before promotion: the alias still on the source
    registry.set_aliases(setup["model"], [registry.SERVING])
    store.write_json(key, {**result, "promoted": False})
    versions_before = len(versions())

    again = unlearn_version(store, doc, setup["model"], cfg)
    assert again == {**result, "promoted": True} == store.read_json(key)
    assert registry.aliases(result["final"]) == [registry.SERVING] and registry.aliases(setup["model"]) == []
    assert len(versions()) == versions_before  # finished from the written result: nothing trained again


def test_a_second_oracle_seed_measures_the_noise_floor_and_is_never_served(plain: tuple) -> None:
    store, setup = plain
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    doc = unlearn_request(store, request["request_id"], UnlearnConfig(method="neggrad-plus", oracle_seeds=2, **FAST))
    result = store.read_json(layout.model_result(request["request_id"], setup["model"]))
    floor = result["steps"][0]["evidence"]["noise_floor"]
    assert floor["source"] == "second oracle seed" and floor["margin"] >= floor["calibrated"]
    assert floor["margin"] == max(floor["calibrated"], floor["measured"])
    second = registry.find_version(request["request_id"], setup["model"], "retrain-seed2")
    assert second and registry.tags(second)[registry.ROLE_TAG] == registry.ORACLE and registry.aliases(second) == []
    assert second not in {result["final"], result["oracle"]}
    cert = store.read_json(layout.deletion_report(request["request_id"], "certificate.json"))
    assert cert["noise_floor"][setup["model"]] == floor and only_unlearned(doc)["final_method"] == "retrain"

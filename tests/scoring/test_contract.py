"""The scorer contract: declarations, dependency order, and the shared driver's prologue and epilogue."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tasks import layout, passed, provenance
from tasks.errors import Fatal
from tasks.policy import load_policy
from tasks.scoring import NEEDS, ORDER, SCORERS, get_scorer
from tasks.scoring.contract import Core, Scored, Scorer, ScorerRun, Whole, dependency_order
from tests.helpers import ingest_without_engine, jsonl, write_source


@dataclass(frozen=True)
class LengthConfig:
    scale: int = 1


def _lengths(run: ScorerRun) -> Core:
    """Characters per record, times the config's scale."""
    def core(records: pa.Table) -> pa.Table:
        return pa.table({"record_id": records.column("record_id"),
                         "chars": pc.multiply(pc.utf8_length(records.column("text")), run.cfg.scale)})
    return core


def _total(run: ScorerRun) -> Scored:
    table = pa.table({"record_id": ["all"], "chars": [7]})
    return Scored({"total": 7}, (Whole(table, scorer="length_total"),))


def _scorer(**overrides: Any) -> Scorer:
    fields = {"name": "length_v1", "config": LengthConfig, "inputs": ("text",), "identity": lambda _s, _c: "len",
              "scope": "partition", "partition_core": _lengths}
    return Scorer(**{**fields, **overrides})


@pytest.fixture
def small_store(store):
    rows = [{"id": str(i), "text": f"a review number {i} " + "y" * i, "label": "fresh", "owner": "o"}
            for i in range(12)]
    write_source(store, "rt", {f"p{k}.jsonl": jsonl(rows[k::3]) for k in range(3)})
    ingest_without_engine(store)
    return store


def _validate(store) -> None:
    policy = load_policy("research")
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list(layout.records_dir(), layout.PARQUET)])


def test_declared_scorers_come_in_dependency_order_and_unknown_names_fail() -> None:
    assert ORDER == ("embeddings", "quality", "dynamics", "influence", "poisoning", "mislabel")
    for name, needs in NEEDS.items():
        assert all(ORDER.index(n) < ORDER.index(name) for n in needs)
    assert {s.scope for s in SCORERS.values()} == {"partition", "store"}
    assert get_scorer("quality").scope == "partition" and get_scorer("poisoning").scope == "store"
    with pytest.raises(Fatal, match="valid: dynamics, embeddings"):
        get_scorer("nope")


def test_dependency_order_puts_needs_first_and_rejects_unknown_or_circular_needs() -> None:
    a, b, c = _scorer(name="a", needs=("c",)), _scorer(name="b"), _scorer(name="c", needs=("b",))
    assert [s.name for s in dependency_order([a, b, c])] == ["b", "c", "a"]
    with pytest.raises(Fatal, match="undeclared"):
        dependency_order([a, b])
    with pytest.raises(Fatal, match="circle"):
        dependency_order([_scorer(name="a", needs=("c",)), _scorer(name="c", needs=("a",))])


def test_a_declaration_must_supply_the_work_its_scope_needs() -> None:
    with pytest.raises(ValueError, match="partition_core"):
        _scorer(partition_core=None)
    with pytest.raises(ValueError, match="partition_core"):
        _scorer(scope="store", store_step=_total)
    with pytest.raises(ValueError, match="store_step"):
        _scorer(scope="store", partition_core=None)


def test_the_driver_writes_partitions_markers_whole_tables_and_the_run_record(small_store) -> None:
    store = small_store
    _validate(store)
    scorer = _scorer(store_step=_total)
    result = scorer.run(store, LengthConfig(scale=2))
    rid = result["run_id"]
    parts = passed.partitions(store)
    assert result == {"scorer": "length_v1", "run_id": rid, "partitions": 3, "records": 12, "total": 7}
    for part in parts:
        attrs = store.read_parquet(layout.attribute("length_v1", rid, part)).to_pylist()
        texts = passed.read_partition(store, part, ["text"]).to_pylist()
        assert {r["record_id"]: r["chars"] for r in attrs} == {t["record_id"]: 2 * len(t["text"]) for t in texts}
        assert store.exists(layout.score_marker("length_v1", rid, part))
    assert store.read_parquet(layout.attribute_whole("length_total", rid)).num_rows == 1
    assert store.read_json(layout.latest_attribute_run("length_v1")) == {"run_id": rid}
    assert store.read_json(layout.attribute_run("length_v1", rid))["config"] == {"scale": 2}
    again = scorer.run(store, LengthConfig(scale=2))
    assert again["skipped"] and again["run_id"] == rid
    assert scorer.run(store, LengthConfig(scale=3))["run_id"] != rid  # another config, another run


def test_only_the_failed_partition_is_scored_again(small_store) -> None:
    store = small_store
    _validate(store)
    bad = passed.partitions(store)[1]
    calls: list[int] = []

    def fragile(run: ScorerRun) -> Core:
        core = _lengths(run)

        def one(records: pa.Table) -> pa.Table:
            calls.append(records.num_rows)
            if fail_ids & set(records.column("record_id").to_pylist()):
                raise RuntimeError("bad partition")
            return core(records)
        return one

    fail_ids = set(passed.read_partition(store, bad, ["record_id"]).column("record_id").to_pylist())
    scorer = _scorer(partition_core=fragile, store_step=_total)
    first = scorer.run(store, LengthConfig())
    assert [f["partition"] for f in first["failed"]] == [layout.partition_key(bad)]
    error = first["failed"][0]["error"]  # named by type and place; a third-party message may quote a text
    assert error.startswith("RuntimeError at ") and "bad partition" not in error
    assert not store.exists(layout.attribute_run("length_v1", first["run_id"]))
    assert not store.exists(layout.attribute_whole("length_total", first["run_id"]))
    fail_ids.clear()
    calls.clear()
    second = scorer.run(store, LengthConfig())
    assert calls == [len(passed.read_partition(store, bad, ["record_id"]))]  # the done partitions are skipped
    assert "failed" not in second and second["records"] == calls[0] and second["total"] == 7
    assert store.exists(layout.attribute_run("length_v1", second["run_id"]))


def test_a_whole_store_scorer_writes_its_table_per_source(small_store) -> None:
    store = small_store
    _validate(store)

    def whole(run: ScorerRun) -> Scored:
        ids = pa.concat_tables([run.records(p) for p in passed.partitions(run.store, ["rt"])]).column("record_id")
        return Scored({"records": len(ids)}, (Whole(pa.table({"record_id": ids}), source="rt"),))

    scorer = _scorer(scope="store", partition_core=None, store_step=whole)
    result = scorer.run(store, LengthConfig())
    assert result["records"] == 12 and "partitions" not in result
    assert store.read_parquet(layout.attribute_whole("length_v1", result["run_id"], "rt")).num_rows == 12


def test_scoring_before_any_validation_reads_every_live_record_with_a_warning(small_store, caplog) -> None:
    store = small_store
    with caplog.at_level(logging.WARNING, logger="tasks.passed"):
        result = _scorer().run(store, LengthConfig())
    assert result["records"] == 12 and "failed" not in result
    assert "no validation has run" in caplog.text
    assert store.read_json(layout.attribute_run("length_v1", result["run_id"]))["input_policy"] == passed.NO_POLICY

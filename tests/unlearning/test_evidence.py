"""The gate's statistics on synthetic confidences whose truth is known: a memorised forget set, an oracle-like
candidate, too few records, a widened noise floor, and the calibration figures the certificate quotes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tasks.unlearning import calibration
from tasks.unlearning.evidence import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Confidences,
    EvidenceConfig,
    effect,
    equivalence,
    noise_unit,
    required_records,
    weigh,
)

N_POPULATION = 400


def world(n_forget: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What each record "is" (its confidence under any model that never saw it), forget records and population."""
    rng = np.random.default_rng(seed)
    return rng.normal(1.5, 2.0, n_forget), rng.normal(1.5, 2.0, N_POPULATION)


def model(truth: tuple[np.ndarray, np.ndarray], memorised: float, seed: int, noise: float = 1.0) -> Confidences:
    """A model's confidences: the truth, ``memorised`` added on the forget records, and its own seed's noise."""
    rng = np.random.default_rng(1000 + seed)
    forget, population = truth
    return Confidences(forget + memorised + rng.normal(0, noise, len(forget)),
                       population + rng.normal(0, noise, len(population)))


@pytest.mark.parametrize("seed", range(5))
def test_a_no_op_is_rejected_and_a_second_seed_oracle_accepted_when_the_source_memorised(seed: int) -> None:
    truth = world(80, seed)
    source, oracle = model(truth, 2.0, seed), model(truth, 0.0, seed + 100)
    noop = weigh(source, oracle, source, exact=False)
    assert noop["positive_control"]["fires"] and noop["verdict"]["decision"] == FAIL
    other_seed = weigh(source, oracle, model(truth, 0.0, seed + 200), exact=False)
    assert other_seed["verdict"]["decision"] == PASS, other_seed["verdict"]


def test_an_over_forgetting_candidate_is_not_equivalent_either() -> None:
    truth = world(80)
    source, oracle = model(truth, 2.0, 1), model(truth, 0.0, 2)
    streisand = model(truth, -2.0, 3)  # forget records now look *less* member-like than never-seen records
    assert weigh(source, oracle, streisand, exact=False)["verdict"]["decision"] == FAIL


def test_two_records_are_inconclusive_whatever_the_candidate() -> None:
    truth = world(2)
    source, oracle = model(truth, 5.0, 1), model(truth, 0.0, 2)
    for candidate in (source, model(truth, 0.0, 3)):
        verdict = weigh(source, oracle, candidate, exact=False)["verdict"]
        assert verdict["decision"] == INCONCLUSIVE and "too few" in verdict["reasons"][0]


def test_nothing_memorised_means_the_positive_control_does_not_fire_and_nothing_is_decided() -> None:
    truth = world(200)
    source, oracle = model(truth, 0.0, 1), model(truth, 0.0, 2)
    weighed = weigh(source, oracle, source, exact=False)
    assert not weighed["positive_control"]["fires"]
    assert weighed["verdict"]["decision"] == INCONCLUSIVE and "did not fire" in weighed["verdict"]["reasons"][0]


def test_an_exact_method_passes_with_its_evidence_reported() -> None:
    truth = world(3)
    source, oracle = model(truth, 1.0, 1), model(truth, 0.0, 2)
    weighed = weigh(source, oracle, oracle, exact=True)
    assert weighed["verdict"]["decision"] == PASS and weighed["verdict"]["exact"] is True
    assert {"positive_control", "noise_floor", "per_record", "equivalence", "membership"} <= set(weighed)


def test_a_noisy_candidate_drowns_the_evidence_and_is_not_accepted() -> None:
    """Scrambling the model widens the noise unit, so the source no longer stands out: no power, no acceptance."""
    truth = world(80)
    source, oracle = model(truth, 2.0, 1), model(truth, 0.0, 2)
    noisy = model(truth, 0.0, 3, noise=8.0)
    weighed = weigh(source, oracle, noisy, exact=False)
    assert weighed["noise_unit"] > 4 * noise_unit([source], oracle)
    assert not weighed["positive_control"]["fires"] and weighed["verdict"]["decision"] == INCONCLUSIVE


def test_the_measured_noise_floor_widens_the_margin_never_narrows_it() -> None:
    truth = world(60)
    source, oracle = model(truth, 3.0, 1), model(truth, 0.0, 2)
    far_oracle = model(truth, 1.5, 4)  # a second seed that disagrees on these records (atypical records)
    floor = weigh(source, oracle, source, exact=False, second_oracle=far_oracle)["noise_floor"]
    assert floor["source"] == "second oracle seed" and floor["margin"] == floor["measured"] > 0.5
    near = weigh(source, oracle, source, exact=False, second_oracle=model(truth, 0.0, 5))["noise_floor"]
    assert near["margin"] >= EvidenceConfig().margin
    alone = weigh(source, oracle, source, exact=False)["noise_floor"]
    assert alone == {**alone, "source": "calibrated", "margin": EvidenceConfig().margin}


def test_effects_are_in_the_source_oracle_noise_unit() -> None:
    truth = world(50)
    source, oracle = model(truth, 0.0, 1), model(truth, 0.0, 2)
    unit = noise_unit([source], oracle)
    assert unit == pytest.approx(math.sqrt(2), rel=0.15)  # two models with unit noise each
    assert noise_unit([source, model(truth, 0.0, 3, noise=3.0)], oracle) == pytest.approx(math.sqrt(10), rel=0.15)
    shifted = Confidences(oracle.forget + 3 * unit, oracle.population)
    assert effect(shifted, oracle, unit).estimate == pytest.approx(3.0)


def test_tost_is_two_sided_and_needs_the_whole_interval_inside() -> None:
    truth = world(400)
    source, oracle = model(truth, 0.0, 1), model(truth, 0.0, 2)
    unit = noise_unit([source], oracle)
    for shift, inside in ((0.0, True), (0.9, False), (-0.9, False)):
        candidate = Confidences(oracle.forget + shift * unit + 0.05 * np.sin(np.arange(400)), oracle.population)
        assert equivalence(effect(candidate, oracle, unit), 0.5, EvidenceConfig())["equivalent"] is inside


def test_required_records_grow_with_spread_and_shrink_with_the_margin() -> None:
    cfg = EvidenceConfig()
    assert required_records(1.0, 0.0, 0.5, cfg) == pytest.approx((1.645 + 1.960) ** 2 / 0.25, abs=1)
    assert required_records(2.0, 0.0, 0.5, cfg) > required_records(1.0, 0.0, 0.5, cfg)
    assert required_records(1.0, 0.0, 1.0, cfg) < required_records(1.0, 0.0, 0.5, cfg)
    assert required_records(1.0, 1.0, 0.5, cfg) == math.inf  # the population alone is too noisy


def test_membership_scores_flag_memorised_records_at_low_fpr() -> None:
    truth = world(60)
    source, oracle = model(truth, 6.0, 1), model(truth, 0.0, 2)
    weighed = weigh(source, oracle, oracle, exact=True, record_digests=[f"r{i}" for i in range(60)])
    tpr = weighed["membership"]["source"]["tpr_at_0.01_fpr"]
    assert tpr["tpr"] > 0.8 and tpr["ci95"][0] <= tpr["tpr"] <= tpr["ci95"][1]
    assert weighed["membership"]["candidate"]["auc"]["auc"] == pytest.approx(0.5, abs=0.15)
    assert [row["record"] for row in weighed["per_record"]] == [f"r{i}" for i in range(60)]


def test_the_calibration_quoted_is_the_bench_result() -> None:
    bench = json.loads((Path(__file__).parents[2] / calibration.BENCH).read_text())
    for name, quoted in calibration.MEASURED.items():
        measured = bench["regimes"][name]
        assert {k: measured[k] for k in quoted} == quoted
    assert set(calibration.MEASURED) == set(bench["regimes"])


def test_other_shards_are_out_references_for_a_sharded_model() -> None:
    """Four shard models; each record was trained on by its own shard only (SISA), which memorised it."""
    from tasks.unlearning.evidence import membership, shard_references

    rng = np.random.default_rng(3)
    truth_f, truth_p = rng.normal(1.0, 2.0, 80), rng.normal(1.0, 2.0, 400)
    own = rng.integers(0, 4, 80)
    shard_f = truth_f + rng.normal(0, 1, (4, 80))
    shard_p = truth_p + rng.normal(0, 1, (4, 400))
    memorised = shard_f.copy()
    memorised[own, np.arange(80)] += 4.0
    source = membership(*shard_references(memorised, own, shard_p), EvidenceConfig())
    retrained = membership(*shard_references(shard_f, own, shard_p), EvidenceConfig())
    assert source["tpr_at_0.01_fpr"]["tpr"] > 0.5 and source["auc"]["auc"] > 0.9
    assert retrained["auc"]["auc"] == pytest.approx(0.5, abs=0.12)
    assert retrained["tpr_at_0.01_fpr"]["tpr"] <= 0.1

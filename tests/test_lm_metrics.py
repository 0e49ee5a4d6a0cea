"""The language-model unlearning metrics on hand-computed cases and on synthetic members whose truth is known."""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from tasks.lm_metrics import (
    STD_FLOOR,
    membership_scores,
    min_k,
    min_k_plus_plus,
    perplexity,
    privleak,
    reference_ratio,
    rouge_l_f1,
    verbatim,
    zlib_ratio,
)
from tasks.membership import membership_auc


@dataclass
class Stats:
    """Stands in for ``tasks.training.lm.TokenStats``: the same three per-token arrays."""

    logprob: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def stats(logprob: list[float], mean: list[float], std: list[float]) -> Stats:
    return Stats(np.array(logprob), np.array(mean), np.array(std))


def test_min_k_averages_the_lowest_fraction_and_at_least_one_token() -> None:
    logprob = np.array([-3.0, -1.0, -5.0, -2.0, -4.0])
    assert min_k(logprob, 0.4) == pytest.approx(-4.5)  # floor(0.4 * 5) = 2 tokens: -5, -4
    assert min_k(logprob, 1.0) == pytest.approx(-3.0)
    assert min_k(np.array([-2.0, -7.0, -1.0]), 0.2) == pytest.approx(-7.0)  # floor(0.6) = 0, so one token
    assert min_k(np.array([-2.0, -7.0, -1.0]), 0.5) == pytest.approx(-7.0)  # floor(1.5) = 1, as the reference code
    with pytest.raises(ValueError, match="k must be"):
        min_k(logprob, 0.0)
    with pytest.raises(ValueError, match="at least one predicted token"):
        min_k(np.array([]), 0.2)


def test_min_k_plus_plus_standardises_each_token_and_clips_sigma() -> None:
    s = stats([-1.0, -2.0, -4.0], [-2.0, -2.0, -3.0], [1.0, 0.5, 2.0])  # z = 1, 0, -0.5
    assert min_k_plus_plus(s, 1.0) == pytest.approx(0.5 / 3)
    assert min_k_plus_plus(s, 0.34) == pytest.approx(-0.5)  # floor(1.02) = 1 token
    certain = stats([-1.0], [-1.5], [0.0])
    assert min_k_plus_plus(certain, 0.2) == pytest.approx(0.5 / STD_FLOOR)
    with pytest.raises(ValueError, match="disagree in length"):
        min_k_plus_plus(stats([-1.0, -2.0], [-1.0], [1.0, 1.0]))


def test_min_k_plus_plus_is_invariant_to_a_per_token_shift_of_logprob_and_mean() -> None:
    rng = np.random.default_rng(0)
    s = stats(list(rng.normal(-3, 1, 40)), list(rng.normal(-4, 1, 40)), list(rng.uniform(0.5, 2, 40)))
    shift = rng.normal(0, 5, 40)
    shifted = Stats(s.logprob + shift, s.mean + shift, s.std)
    assert min_k_plus_plus(shifted, 0.2) == pytest.approx(min_k_plus_plus(s, 0.2))
    assert min_k(shifted.logprob, 0.2) != pytest.approx(min_k(s.logprob, 0.2))  # plain Min-K% is not


def test_zlib_ratio_divides_log_perplexity_by_compressed_bytes() -> None:
    assert len(zlib.compress(b"abc")) == 11
    assert zlib_ratio(np.array([-1.0, -3.0]), "abc") == pytest.approx(2 / 11)
    varied = "the quick brown fox jumps over the lazy dog while seven wizards quietly vex a jolly king"
    repetitive = "the the the the the the the the the the the the the the the the the the the the the the"
    logprob = np.full(20, -2.0)
    assert zlib_ratio(logprob, repetitive) > zlib_ratio(logprob, varied)  # easy text: same loss says less


def test_reference_ratio_is_the_mean_nll_difference() -> None:
    assert reference_ratio(np.array([-1.0, -1.0]), np.array([-3.0, -1.0])) == pytest.approx(-1.0)
    assert reference_ratio(np.array([-2.0]), np.array([-1.0, -1.0, -1.0])) == pytest.approx(1.0)


def synthetic(n: int, member: bool, rng: np.random.Generator) -> tuple[list[Stats], list[Stats], list[str]]:
    """Texts of 30 tokens: a member's log-probs are high and uniform, a non-member's low and spread; the same
    vocabulary statistics and the same reference model (which saw neither) for both."""
    model, reference, texts = [], [], []
    for _ in range(n):
        logprob = rng.normal(-0.5, 0.1, 30) if member else rng.normal(-3.0, 1.5, 30)
        model.append(Stats(logprob, np.full(30, -3.0), np.full(30, 1.0)))
        reference.append(Stats(rng.normal(-3.0, 1.0, 30), np.full(30, -3.0), np.full(30, 1.0)))
        texts.append(" ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma"], 30)))
    return model, reference, texts


def test_every_attack_ranks_members_above_non_members() -> None:
    rng = np.random.default_rng(1)
    members, nonmembers = synthetic(20, True, rng), synthetic(20, False, rng)
    member_scores = membership_scores(members[0], members[2], members[1])
    nonmember_scores = membership_scores(nonmembers[0], nonmembers[2], nonmembers[1])
    assert set(member_scores) == {"loss", "min_k", "min_k_plus_plus", "zlib", "reference"}
    for attack, scores in member_scores.items():
        assert scores.shape == (20,)
        assert membership_auc(scores, nonmember_scores[attack]) > 0.95, attack
        assert membership_auc(nonmember_scores[attack], scores) < 0.05, attack


def test_membership_scores_values_and_reference_only_when_given() -> None:
    s = stats([-1.0, -3.0], [-2.0, -2.0], [1.0, 1.0])
    out = membership_scores([s], ["abc"], k=0.5)
    assert set(out) == {"loss", "min_k", "min_k_plus_plus", "zlib"}
    assert out["loss"][0] == pytest.approx(-2.0)
    assert out["min_k"][0] == pytest.approx(-3.0)
    assert out["min_k_plus_plus"][0] == pytest.approx(-1.0)
    assert out["zlib"][0] == pytest.approx(-2 / 11)
    with pytest.raises(ValueError, match="for 2 texts"):
        membership_scores([s], ["a", "b"])
    with pytest.raises(ValueError, match="reference"):
        membership_scores([s], ["a"], [s, s])


def brute_force_lcs(a: list[int], b: list[int]) -> int:
    """The longest subsequence of ``a`` that is also one of ``b``, by trying every subsequence (tiny inputs)."""
    def is_subsequence(sub: tuple[int, ...], seq: list[int]) -> bool:
        it = iter(seq)
        return all(x in it for x in sub)

    return max((r for r in range(len(a) + 1) for sub in itertools.combinations(a, r) if is_subsequence(sub, b)),
               default=0)


def test_rouge_l_on_identical_disjoint_partial_and_empty_sequences() -> None:
    assert rouge_l_f1([5, 6, 7], [5, 6, 7]) == 1.0
    assert rouge_l_f1([1, 2, 3], [4, 5]) == 0.0
    assert rouge_l_f1([1, 2, 3, 4], [1, 3, 5]) == pytest.approx(4 / 7)  # LCS 2: P = 1/2, R = 2/3
    assert rouge_l_f1([1, 2, 3], [3, 2, 1]) == pytest.approx(1 / 3)  # order matters: LCS 1
    assert rouge_l_f1([], [1, 2]) == 0.0
    assert rouge_l_f1([1, 2], []) == 0.0


def test_rouge_l_matches_a_brute_force_lcs() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        a, b = list(rng.integers(0, 4, rng.integers(1, 8))), list(rng.integers(0, 4, rng.integers(1, 8)))
        expected = 2 * brute_force_lcs(a, b) / (len(a) + len(b))
        assert rouge_l_f1(a, b) == pytest.approx(expected), (a, b)


def test_verbatim_means_over_pairs_with_a_truth_and_brackets_the_mean() -> None:
    pairs = [([1, 2, 3], [1, 2, 3]), ([4], [5]), ([9], []), ([], [7, 8]), ([1, 2, 3, 4], [1, 3, 5])]
    out = verbatim(pairs)
    assert out["n"] == 4  # the pair with an empty truth is skipped; the empty generation scores 0
    assert out["rouge_l"] == pytest.approx((1 + 0 + 0 + 4 / 7) / 4)
    low, high = out["ci95"]
    assert 0 <= low <= out["rouge_l"] <= high <= 1
    assert low < high
    assert verbatim(pairs) == out  # seeded
    empty = verbatim([([1], [])])
    assert empty["n"] == 0 and math.isnan(empty["rouge_l"])


def test_privleak_follows_muse_orientation_and_sign() -> None:
    assert privleak(0.5, 0.5) == pytest.approx(0.0)
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)  # forget set fully recognisable: under-unlearning
    assert privleak(0.25, 0.5) == pytest.approx(50.0)  # forget set less member-like than holdout: over-unlearning
    assert privleak(0.7, 0.6) == pytest.approx((0.3 - 0.4) / 0.4 * 100)
    assert math.isnan(privleak(0.9, 1.0))
    with pytest.raises(ValueError, match="auc_model"):
        privleak(1.2, 0.5)


def test_privleak_equals_muses_formula_on_muses_auc() -> None:
    """MUSE takes holdout as the positive class of the same member-oriented scores; the conversion matches it."""
    rng = np.random.default_rng(3)
    holdout = rng.normal(0, 1, 50)
    model_forget, oracle_forget = rng.normal(1.0, 1, 50), rng.normal(0.1, 1, 50)
    muse_model, muse_oracle = membership_auc(holdout, model_forget), membership_auc(holdout, oracle_forget)
    expected = (muse_model - muse_oracle) / muse_oracle * 100
    ours = privleak(membership_auc(model_forget, holdout), membership_auc(oracle_forget, holdout))
    assert ours == pytest.approx(expected)
    assert ours < 0  # the model recognises its forget set better than the oracle does


def test_perplexity_weights_losses_by_tokens() -> None:
    assert perplexity(np.array([1.0, 2.0]), np.array([1, 3])) == pytest.approx(math.exp(7 / 4))
    assert perplexity(np.array([1.0, 2.0])) == pytest.approx(math.exp(1.5))
    assert perplexity(np.array([0.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        perplexity(np.array([]))
    with pytest.raises(ValueError):
        perplexity(np.array([1.0, 2.0]), np.array([3]))
    with pytest.raises(ValueError):
        perplexity(np.array([1.0]), np.array([0]))

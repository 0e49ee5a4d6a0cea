"""Unlearning evidence for a causal language model from its per-token statistics, MUSE-style.

MUSE (Shi et al., 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models") judges an unlearned model
on, among others, *verbatim memorisation* (ROUGE-L of its continuations of forget-set prefixes against the true
continuations) and *privacy leakage* (a membership-inference AUC of forget against holdout records, relative to a
model retrained without the forget set). This module holds the pure arithmetic behind those figures, so it can be
tested without a model: every function takes numpy arrays of token log-probabilities, token ids or AUCs.

The membership attacks score one text each, from the log-probability the model gave every actual next token:

- **loss** (Yeom et al., 2018): the mean token log-likelihood;
- **Min-K% Prob** (Shi et al., 2024, "Detecting Pretraining Data from Large Language Models"): the mean of the k%
  least likely tokens, since a seen text has few surprising tokens;
- **Min-K%++** (Zhang et al., 2024): the same over each token's log-probability standardised by the mean and
  standard deviation of the log-probabilities of the whole next-token distribution, so a token counts as likely
  relative to its alternatives rather than in absolute terms;
- **zlib** and **reference** (Carlini et al., 2021, "Extracting Training Data from Large Language Models"): the
  loss calibrated by how compressible the text is, or by a reference model's loss on it (here the pretrained base
  model), so texts that are simply easy are not mistaken for members.

``membership_scores`` orients every attack so that a higher score means more member-like, the convention of
``tasks.membership.membership_auc``. The statistics come from ``tasks.training.lm`` (its ``TokenStats``); anything
with the same three array attributes will do.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

STD_FLOOR = 1e-3  # Min-K%++'s sigma floor: open-unlearning clips the variance at 1e-6, i.e. sigma at 1e-3
BOOTSTRAP_SAMPLES = 1000


class TokenStatsLike(Protocol):
    """Per-token statistics of one text, one entry per predicted next token (all float arrays of that length)."""

    logprob: np.ndarray  # log p(x_t | x_<t), the actual next token
    mean: np.ndarray  # mu_t = sum_z p(z) log p(z), over the vocabulary
    std: np.ndarray  # sigma_t = sqrt(sum_z p(z) log^2 p(z) - mu_t^2)


def _tokens(logprob: np.ndarray) -> np.ndarray:
    """``logprob`` as a 1-D float array; a text with no predicted token has no score, so it is an error."""
    values = np.asarray(logprob, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("no token statistics: a text needs at least one predicted token to be scored")
    return values


def mean_nll(logprob: np.ndarray) -> float:
    """Mean token negative log-likelihood of one text (its log-perplexity)."""
    return float(-_tokens(logprob).mean())


def min_k(logprob: np.ndarray, k: float = 0.2) -> float:
    """Min-K% Prob (Shi et al., 2024): the mean of the ``k`` fraction lowest token log-probabilities.

    A memorised text has few tokens the model finds surprising, so even its least likely tokens stay likely; the
    mean over all tokens would let many easy tokens drown those few. The count is ``floor(k * n)`` as in the
    reference code, but at least one token, so a short text still gets a score (MUSE's code would average nothing).

    Args:
        logprob: log-probability of each actual next token of one text.
        k: fraction of the tokens to average, in (0, 1].

    Returns:
        The mean of the lowest ``max(1, floor(k * n))`` log-probabilities (higher = more member-like).
    """
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k}")
    values = _tokens(logprob)
    count = max(1, int(k * values.size))
    return float(np.partition(values, count - 1)[:count].mean())


def min_k_plus_plus(stats: TokenStatsLike, k: float = 0.2) -> float:
    """Min-K%++ (Zhang et al., 2024): ``min_k`` of each token's log-probability standardised against its
    next-token distribution, ``(log p(x_t) - mu_t) / sigma_t``.

    Training pushes a seen token towards a local maximum of the likelihood, so it sits high *relative to the
    alternatives the model had at that position*; standardising removes how peaked or flat that distribution is,
    which the plain Min-K% confuses with membership. ``sigma_t`` is clipped at ``STD_FLOOR`` because a near-certain
    prediction has sigma near 0 (the reference implementations clip likewise).

    Args:
        stats: the text's token statistics (``logprob``, ``mean``, ``std`` per token).
        k: fraction of the (standardised) tokens to average, in (0, 1].

    Returns:
        The Min-K%++ score (higher = more member-like).
    """
    logprob = _tokens(stats.logprob)
    mean, std = np.asarray(stats.mean, dtype=float).ravel(), np.asarray(stats.std, dtype=float).ravel()
    if not logprob.size == mean.size == std.size:
        raise ValueError(f"token statistics disagree in length: logprob {logprob.size}, mean {mean.size}, "
                         f"std {std.size}")
    return min_k((logprob - mean) / np.maximum(std, STD_FLOOR), k)


def zlib_ratio(logprob: np.ndarray, text: str) -> float:
    """Carlini et al. (2021)'s zlib calibration: the text's log-perplexity (mean token NLL) over its zlib entropy,
    the length in bytes of ``zlib.compress`` of its UTF-8 encoding.

    A repetitive text is easy for any model; its low loss says nothing about membership. zlib's length measures that
    generic easiness, so a text the model finds easier than its compressibility predicts stands out. The mean NLL
    (not the sum) is what Carlini et al. and MUSE's ``PPL/zlib`` divide.

    Returns:
        The ratio (lower = more member-like; ``membership_scores`` negates it).
    """
    return mean_nll(logprob) / len(zlib.compress(text.encode("utf-8")))


def reference_ratio(logprob: np.ndarray, reference_logprob: np.ndarray) -> float:
    """Carlini et al. (2021)'s reference-model calibration: the text's mean token NLL under the model minus its mean
    token NLL under a reference model that never saw it (here the pretrained base the model was tuned from).

    What the reference also finds easy is easy in general; what only the tuned model finds easy it learned from the
    text. Carlini et al. divide the two log-perplexities; the difference used here is the log of the per-token
    likelihood ratio (the form open-unlearning's reference attack uses), which stays finite when the reference loss
    is near zero.

    Returns:
        The difference (lower = more member-like; ``membership_scores`` negates it).
    """
    return mean_nll(logprob) - mean_nll(reference_logprob)


def membership_scores(stats_list: Sequence[TokenStatsLike], texts: Sequence[str],
                      reference_stats_list: Sequence[TokenStatsLike] | None = None,
                      k: float = 0.2) -> dict[str, np.ndarray]:
    """Every attack's score per text, oriented so that higher = more member-like (``tasks.evaluation``'s AUC).

    Args:
        stats_list: the model's token statistics, one per text.
        texts: the texts themselves (for the zlib entropy), in the same order.
        reference_stats_list: the reference model's token statistics on the same texts, or None to skip the
            reference attack.
        k: the Min-K% fraction.

    Returns:
        ``loss`` (minus the mean NLL), ``min_k``, ``min_k_plus_plus``, ``zlib`` (minus the zlib ratio) and, with
        reference statistics, ``reference`` (minus the NLL difference): one float array each, in text order.
    """
    if len(stats_list) != len(texts):
        raise ValueError(f"{len(stats_list)} token statistics for {len(texts)} texts")
    if reference_stats_list is not None and len(reference_stats_list) != len(texts):
        raise ValueError(f"{len(reference_stats_list)} reference token statistics for {len(texts)} texts")
    scores = {
        "loss": [-mean_nll(s.logprob) for s in stats_list],
        "min_k": [min_k(s.logprob, k) for s in stats_list],
        "min_k_plus_plus": [min_k_plus_plus(s, k) for s in stats_list],
        "zlib": [-zlib_ratio(s.logprob, t) for s, t in zip(stats_list, texts, strict=True)],
    }
    if reference_stats_list is not None:
        scores["reference"] = [-reference_ratio(s.logprob, r.logprob)
                               for s, r in zip(stats_list, reference_stats_list, strict=True)]
    return {name: np.asarray(values, dtype=float) for name, values in scores.items()}


def rouge_l_f1(candidate: list[int], reference: list[int]) -> float:
    """ROUGE-L F1 (Lin, 2004) of two token-id sequences: with L the length of their longest common subsequence,
    the harmonic mean of precision L/len(candidate) and recall L/len(reference); 0 when either is empty.

    The ``rouge-score`` package is the maintained implementation for text, but it re-tokenises strings into words;
    our continuations are token ids already, so the LCS runs on them directly (MUSE scores decoded text with
    ``rouge-score``'s F-measure; on ids the figure is the same measure at the model's own granularity).
    """
    common = _lcs_length(candidate, reference)
    if common == 0:
        return 0.0
    return 2 * common / (len(candidate) + len(reference))  # 2PR/(P+R) with P = L/|c|, R = L/|r|


def _lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence: the textbook O(len(a) * len(b)) dynamic programme, one row kept
    (continuations are tens to a few hundred tokens)."""
    previous = [0] * (len(b) + 1)  # previous[j] = LCS of a[:i-1] and b[:j]
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def verbatim(pairs: list[tuple[list[int], list[int]]], n_boot: int = BOOTSTRAP_SAMPLES,
             seed: int = 0) -> dict[str, float]:
    """MUSE's verbatim memorisation (VerbMem): the mean ROUGE-L F1 of the model's continuations of forget-record
    prefixes against the records' true continuations, with a percentile bootstrap 95% interval over records.

    A pair whose true continuation is empty has nothing to reproduce and is skipped; an empty generation against a
    non-empty truth counts (it scores 0). MUSE reports the mean on a 0-100 scale; this returns the 0-1 fraction.

    Args:
        pairs: ``(generated, true)`` continuation token ids per record.
        n_boot: bootstrap resamples of the records.
        seed: the bootstrap's seed, so the interval is reproducible.

    Returns:
        ``rouge_l`` (the mean), ``ci95`` ([low, high]) and ``n`` (pairs scored); NaNs and ``n = 0`` with no pair.
    """
    scores = np.array([rouge_l_f1(list(generated), list(true)) for generated, true in pairs if len(true)])
    if scores.size == 0:
        return {"rouge_l": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, scores.size, size=(n_boot, scores.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"rouge_l": float(scores.mean()), "ci95": [float(low), float(high)], "n": int(scores.size)}


def privleak(auc_model: float, auc_oracle: float) -> float:
    """MUSE's PrivLeak: ``(AUC_model - AUC_retrain) / AUC_retrain * 100``, in MUSE's own AUC orientation, so the
    figure is comparable with the paper's tables.

    Both arguments are this project's AUCs, ``tasks.membership.membership_auc`` of forget (as members) against
    holdout records, higher score = more member-like: 1 when the forget set is recognisable. MUSE's code instead
    takes *holdout* as the positive class of the same scores (its ``forget_holdout_Min-40%`` key; ``sweep`` in its
    ``privleak`` metric), so its AUC is ``1 - ours`` and a memorising model scores near 0. This function converts,
    then applies MUSE's formula with MUSE's sign:

    - 0: the model is as (un)recognisable as the oracle retrained without the forget set;
    - large **negative** (down to -100): under-unlearning, the forget set still leaks membership (a model that
      memorised it outright, AUC 1 here, scores -100 against an oracle at chance);
    - large **positive**: over-unlearning, the forget set now looks *less* like training data than unseen text does,
      itself a tell-tale that it was removed.

    Returns:
        PrivLeak in percent; NaN when the oracle's MUSE-oriented AUC is 0 (the ratio is undefined).
    """
    for name, auc in (("auc_model", auc_model), ("auc_oracle", auc_oracle)):
        if not 0 <= auc <= 1:
            raise ValueError(f"{name} must be an AUC in [0, 1], got {auc}")
    muse_model, muse_oracle = 1 - auc_model, 1 - auc_oracle
    if muse_oracle == 0:
        return float("nan")
    return (muse_model - muse_oracle) / muse_oracle * 100


def perplexity(losses: np.ndarray, lengths: np.ndarray | None = None) -> float:
    """Perplexity, the exponential of the token-weighted mean NLL: ``exp(sum_i n_i * loss_i / sum_i n_i)``.

    Weighting each text's mean NLL by its token count gives the corpus perplexity that language-model papers report
    (every token counts once); without ``lengths`` every loss weighs the same (per-token losses, or equal-weight
    records as ``tasks.training.loop.lm_metrics`` computes).

    Args:
        losses: mean token NLL per text (or per token).
        lengths: predicted tokens per text, or None for equal weights.
    """
    values = np.asarray(losses, dtype=float).ravel()
    weights = np.ones_like(values) if lengths is None else np.asarray(lengths, dtype=float).ravel()
    if values.size == 0 or values.size != weights.size or weights.sum() <= 0 or (weights < 0).any():
        raise ValueError(f"perplexity needs as many non-negative lengths ({weights.size}) as losses "
                         f"({values.size}), with at least one token")
    return float(np.exp(np.average(values, weights=weights)))

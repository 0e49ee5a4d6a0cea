"""Membership-inference figures shared by every model's evaluation: the AUC and the TPR at a low FPR of telling
members (the forget set) from non-members by a score.

Kept apart from ``tasks.evaluation`` and ``tasks.lm_evaluation`` (the classifier's and the language model's
assessments) so both, and the gate's evidence, read them from one place below all three.
"""

from __future__ import annotations

import numpy as np


def membership_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """ROC AUC of telling members from non-members by score (higher = more likely a member): P(member score >
    non-member score), ties counting half (Mann–Whitney), by sorting once (the evidence bootstraps it 1,000 times)."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return float("nan")
    ranked = np.sort(nonmember_scores)
    below = np.searchsorted(ranked, member_scores, "left")
    ties = np.searchsorted(ranked, member_scores, "right") - below
    return float(np.mean((below + 0.5 * ties) / len(nonmember_scores)))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float = 0.01) -> float:
    """True-positive rate at the threshold that flags ``fpr`` of the non-members (the low-FPR regime)."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return float("nan")
    threshold = np.quantile(nonmember_scores, 1 - fpr, method="higher")
    return float(np.mean(member_scores > threshold))

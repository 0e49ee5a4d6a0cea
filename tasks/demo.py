"""The demo's choices: how big a run ``custody demo [--quick | --lm]`` is, how many audit canaries its model carries,
whether it ends with the canary drill, and which owner withdraws consent.

Kept apart from the flows that run it (``flows/launch.py``) so the choices can be read, tested and reused (the
unlearning bench deletes the same kind of owner) without starting an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.selection import owner_shares
from tasks.storage import Store

# `custody demo --quick`: 1,200 rows a corpus (~250 training records), only the scorers the selection uses,
# smaller membership-attack samples
QUICK_SAMPLE = 1200
QUICK_PIPELINE: dict[str, Any] = {"epochs": 3, "scorers": ["embeddings", "poisoning"], "membership_sample": 100}
QUICK_UNLEARN: dict[str, Any] = {"retain_sample": 300, "mink_sample": 100}
# audit canaries in the training set (tasks/canaries.py): 16 of ~2,900 training records in the full demo (0.6%),
# 8 of ~250 in the quick one. The drill (`--drill`) is one more unlearning, which the gate settles by an exact
# retrain at this forget-set size: 2 min 15 s on the quick demo under load (the owner's unlearning: 1 min 47 s)
CANARIES, QUICK_CANARIES = 16, 8
WITHDRAWAL_REASON = "demo: {owner} withdrew consent"
# `custody demo --lm`: SmolLM2-135M with LoRA learns to continue the Health News tweets of four accounts (one of
# which then withdraws); 1,200 rows a corpus land, the four accounts hold ~330 of them, 64 go into training. No
# scorer runs: a random selection needs none. On 2 CPU cores SmolLM2 trains about 1.5 examples a second and scores
# about 6 texts a second, so the sets are small and the unlearning takes at most 5 steps
LM_SAMPLE = 1200
LM_ACCOUNTS = ["bbchealth", "cnnhealth", "nprhealth", "reuters_health"]
LM_PIPELINE: dict[str, Any] = {"model": "smollm2", "dataset": "healthtweets", "strategy": "random", "budget": 64,
                               "epochs": 3, "batch_size": 8, "scorers": [], "owners": LM_ACCOUNTS,
                               "membership_sample": 40}
LM_UNLEARN: dict[str, Any] = {"retain_sample": 40, "mink_sample": 60, "max_steps": 5}


@dataclass(frozen=True)
class DemoPlan:
    """Parameters of each demo step: ``sample_limit`` rows a corpus (all when None), then keyword arguments for
    the pipeline flow and for the unlearning config (their defaults when empty), the audit canaries the model
    trains on, and whether the canary drill runs at the end (with the unlearning config's samples)."""

    sample_limit: int | None = None
    pipeline: dict[str, Any] = field(default_factory=dict)
    unlearn: dict[str, Any] = field(default_factory=dict)
    canaries: int = CANARIES
    drill: bool = False


def demo_plan(quick: bool, drill: bool = False, lm: bool = False) -> DemoPlan:
    """The full demo (every row, every scorer), the quick one (see ``QUICK_*``) or the language-model one
    (``LM_*``; no canaries, so no drill), with the canary drill at the end when ``drill``."""
    if lm:
        return DemoPlan(LM_SAMPLE, dict(LM_PIPELINE), dict(LM_UNLEARN), canaries=0, drill=False)
    if quick:
        return DemoPlan(QUICK_SAMPLE, dict(QUICK_PIPELINE), dict(QUICK_UNLEARN), canaries=QUICK_CANARIES, drill=drill)
    return DemoPlan(drill=drill)


def choose_owner(store: Store, dataset_ref: str) -> dict[str, Any]:
    """The owner the demo deletes: one whose share of the dataset's training split is closest to 1% (a typical
    withdrawal, and one the model certainly learned from).

    Returns:
        ``owner``, ``train_records`` (the owner's records in the train split) and ``share`` of the split.
    """
    owner, records, share = owner_shares(store, dataset_ref)[0]
    return {"owner": owner, "train_records": records, "share": share}


def withdrawal_reason(owner: str) -> str:
    """The reason the demo's deletion request gives (kept in the ledger)."""
    return WITHDRAWAL_REASON.format(owner=owner)

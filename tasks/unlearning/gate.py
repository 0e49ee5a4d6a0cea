"""The gate: a candidate is judged against the oracle (a model retrained without the records) and accepted or not.

``compare`` takes the candidate's and the oracle's measurements (``tasks.evaluation.assess``) and returns their
differences plus a KS test between their forget-set losses; ``gate`` turns the differences into a verdict. Exact
methods (SISA, retrain) pass by construction, their numbers still reported; an approximate one passes when the
loss attack tells it from the oracle no better than ``max_mia_gap`` and it keeps the oracle's test accuracy
within ``max_accuracy_drop``. ``judge`` runs the three for one registered version and records the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks import layout
from tasks import model_registry as registry
from tasks.config import get_settings
from tasks.evaluation import assess
from tasks.storage import Store
from tasks.training import load_version
from tasks.unlearning.sets import Sets

PASSED, FAILED = "passed", "failed"


@dataclass(frozen=True)
class GateConfig:
    """Tolerances for an approximate method against the oracle (the issue's targets)."""

    max_mia_gap: float = 0.03
    max_accuracy_drop: float = 0.01


def compare(candidate: dict[str, Any], oracle: dict[str, Any]) -> dict[str, float]:
    """Candidate minus oracle on every shared metric, plus the KS test between their forget-set losses."""
    from scipy.stats import ks_2samp

    out = {f"{k}_minus_oracle": float(candidate[k] - oracle[k]) for k in candidate
           if k in oracle and isinstance(candidate[k], float)}
    a, b = candidate["forget_losses"], oracle["forget_losses"]
    out["forget_loss_ks_pvalue"] = float(ks_2samp(a, b).pvalue) if a and b else float("nan")
    out["forget_loss_ks_statistic"] = float(ks_2samp(a, b).statistic) if a and b else float("nan")
    return out


def gate(comparison: dict[str, float], exact: bool, cfg: GateConfig = GateConfig()) -> dict[str, Any]:
    """Whether the candidate may be served: exact methods always; approximate ones within the tolerances."""
    if exact:
        return {"passed": True, "reasons": ["exact method: the deleted records never reached this model"]}
    failures = []
    mia_gap = abs(comparison.get("mia_loss_auc_minus_oracle", float("nan")))
    if not mia_gap <= cfg.max_mia_gap:  # NaN fails too
        failures.append(f"|MIA loss AUC - oracle| = {mia_gap:.3f} > {cfg.max_mia_gap}")
    drop = -comparison.get("test_accuracy_minus_oracle", float("nan"))
    if not drop <= cfg.max_accuracy_drop:
        failures.append(f"test accuracy {drop * 100:.2f} points below the oracle > {cfg.max_accuracy_drop * 100:.0f}")
    return {"passed": not failures,
            "reasons": failures or [f"|MIA loss AUC - oracle| = {mia_gap:.3f} <= {cfg.max_mia_gap}; test accuracy "
                                    f"within {cfg.max_accuracy_drop * 100:.0f} point(s) of the oracle"]}


def assessment(store: Store, request_id: str, ref: str, sets: Sets, mink_sample: int) -> dict[str, Any]:
    """``assess`` of a registered version on the judged sets, cached in the request's report folder."""
    key = layout.assessment(request_id, ref)
    if store.exists(key):
        return store.read_json(key)
    models, tokenizer = load_version(ref)
    result = assess(list(models.values()), tokenizer, sets.cfg, get_settings().resolved_device(), sets.forget,
                    sets.retain, sets.splits["test"], mink_sample)
    tags = registry.tags(ref)
    result["cost_seconds"] = float(tags.get(registry.UNLEARN_SECONDS_TAG, "nan"))
    result["examples_processed"] = int(tags.get(registry.EXAMPLES_TAG, "0") or 0)
    store.write_json(key, result)
    return result


def judge(store: Store, request_id: str, ref: str, method: str, exact: bool, sets: Sets, oracle: dict[str, Any],
          cfg: GateConfig, mink_sample: int) -> dict[str, Any]:
    """Assess ``ref`` (made by ``method``), compare it with the ``oracle``'s assessment and gate it; the numbers
    and the verdict go to its MLflow run and version. Returns the attempt as the certificate lists it."""
    evaluation = assessment(store, request_id, ref, sets, mink_sample)
    comparison = compare(evaluation, oracle)
    verdict = gate(comparison, exact, cfg)
    logged = {**{f"eval_{k}": v for k, v in evaluation.items() if isinstance(v, float)},
              **{f"vs_oracle_{k}": v for k, v in comparison.items()}}
    registry.log_metrics(ref, {k: v for k, v in logged.items() if np.isfinite(v)})
    registry.set_tag(ref, registry.GATE_TAG, PASSED if verdict["passed"] else FAILED)
    return {"method": method, "version": ref, "gate": verdict, "vs_oracle": comparison, "evaluation": evaluation}

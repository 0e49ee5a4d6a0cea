"""The gate: a candidate is judged against the oracle (a model retrained without the records) and accepted or not.

``judge`` weighs the per-record evidence (``tasks.unlearning.evidence``: the candidate, the source and the oracle —
and a second oracle seed when one was trained — on the forget records and the test population) and checks utility
against the oracle (``utility_shortfall``: test accuracy for a classifier, test perplexity for a language model,
which also gets MUSE's PrivLeak). Exact methods (SISA, retrain) pass by construction, their evidence still reported.
An approximate one passes only on a ``pass`` decision — a positive control that fired and an equivalence test within
the noise floor — with utility kept. An ``inconclusive`` decision (too few records, or nothing memorised to detect)
follows ``on_inconclusive``: ``exact`` (default) rejects the candidate so the next exact method takes over;
``accept`` serves it anyway, and the certificate says it was accepted without evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks import layout
from tasks import model_registry as registry
from tasks.config import get_settings
from tasks.errors import unknown_name
from tasks.evaluation import assess, shard_confidences
from tasks.storage import Store
from tasks.training import load_version, subsample
from tasks.unlearning import calibration, evidence
from tasks.unlearning.sets import Sets

PASSED, FAILED = "passed", "failed"
ON_INCONCLUSIVE = ("exact", "accept")


@dataclass(frozen=True)
class GateConfig:
    """What an approximate candidate must show: the evidence's decision (``evidence``), what an inconclusive one
    means (``on_inconclusive``), and test accuracy no more than ``max_accuracy_drop`` below the oracle's (a
    classifier) or test perplexity no more than ``max_perplexity_rise`` (a fraction) above it (a language model)."""

    max_accuracy_drop: float = 0.01
    max_perplexity_rise: float = 0.05
    on_inconclusive: str = "exact"
    evidence: evidence.EvidenceConfig = field(default_factory=evidence.EvidenceConfig)

    def __post_init__(self) -> None:
        if self.on_inconclusive not in ON_INCONCLUSIVE:
            raise unknown_name("on_inconclusive", self.on_inconclusive, ON_INCONCLUSIVE)


def confidences(assessed: dict[str, Any]) -> evidence.Confidences:
    """The per-record logit confidences of an assessment (``tasks.evaluation.assess``)."""
    return evidence.Confidences(np.asarray(assessed["forget_confidence"], float),
                                np.asarray(assessed["population_confidence"], float))


def record_digest(record_id: str) -> str:
    """How the certificate names a record: a short digest of its id."""
    return hashlib.sha256(record_id.encode()).hexdigest()[:16]


def utility_shortfall(oracle: dict[str, Any], candidate: dict[str, Any]) -> tuple[str, float]:
    """How much utility the candidate lost against the oracle, and its name: test accuracy below the oracle's for a
    classifier, the relative rise of test perplexity above it for a language model."""
    if "test_perplexity" in oracle:
        return "test_perplexity_rise", candidate["test_perplexity"] / oracle["test_perplexity"] - 1
    return "test_accuracy_below_oracle", oracle["test_accuracy"] - candidate["test_accuracy"]


def gate(weighed: dict[str, Any], shortfall: float, cfg: GateConfig, lm: bool = False) -> dict[str, Any]:
    """Whether the candidate may be served, from the evidence's verdict and its utility shortfall against the oracle
    (``utility_shortfall``; a perplexity rise for a language model, ``lm``): ``passed``, the ``decision`` and the
    reasons in plain words."""
    verdict = weighed["verdict"]
    decision, reasons = verdict["decision"], list(verdict["reasons"])
    accepted = decision == evidence.PASS or (decision == evidence.INCONCLUSIVE and cfg.on_inconclusive == "accept")
    if decision == evidence.INCONCLUSIVE:
        reasons.append("accepted without statistical evidence (on_inconclusive=accept)" if accepted else
                       "the approximate method is not accepted on this evidence: an exact method takes over")
    limit = cfg.max_perplexity_rise if lm else cfg.max_accuracy_drop
    if not verdict["exact"] and not shortfall <= limit:  # NaN fails too
        accepted = False
        reasons.append(f"test perplexity {shortfall:.1%} above the oracle's > {limit:.0%}" if lm else
                       f"test accuracy {shortfall * 100:.2f} points below the oracle > {limit * 100:.0f}")
    return {"passed": accepted, "decision": decision, "exact": verdict["exact"], "reasons": reasons}


def assessment(store: Store, request_id: str, ref: str, sets: Sets, mink_sample: int) -> dict[str, Any]:
    """``assess`` of a registered version on the judged sets, cached in the request's report folder."""
    key = layout.assessment(request_id, ref)
    if store.exists(key):
        return store.read_json(key)
    models, tokenizer = load_version(ref)
    device = get_settings().resolved_device()
    result = assess([models[s] for s in sorted(models)], tokenizer, sets.cfg, device, sets.forget, sets.retain,
                    sets.splits["test"], mink_sample)
    if len(models) > 1:  # the other shards' models are references too
        result["shard_confidence"] = shard_confidences(models, tokenizer, sets.cfg, device, {
            "forget": sets.forget, "population": subsample(sets.splits["test"], mink_sample, sets.cfg.seed)})
    tags = registry.tags(ref)
    result["cost_seconds"] = float(tags.get(registry.UNLEARN_SECONDS_TAG, "nan"))
    result["examples_processed"] = int(tags.get(registry.EXAMPLES_TAG, "0") or 0)
    store.write_json(key, result)
    return result


def add_shard_references(weighed: dict[str, Any], name: str, shards: dict[str, list[list[float]]],
                         forget_shard: np.ndarray, cfg: evidence.EvidenceConfig) -> None:
    """Add the LiRA evidence of a sharded model with its other shards as OUT references (``evidence.shard_references``)
    to ``weighed``: its membership summary, and a per-record score on each row."""
    scored = evidence.membership(*evidence.shard_references(np.array(shards["forget"]), forget_shard,
                                                            np.array(shards["population"])), cfg)
    weighed["membership"][f"{name} (other shards as references)"] = {k: v for k, v in scored.items() if k != "scores"}
    for row, score in zip(weighed["per_record"], scored["scores"], strict=True):
        row[f"{name}_shard_score"] = score


def privleak(evaluations: dict[str, dict[str, Any]], candidate: dict[str, Any]) -> dict[str, dict[str, float]]:
    """MUSE's PrivLeak of the candidate and the source relative to the oracle, for each membership attack both
    measured, in MUSE's orientation (``tasks.lm_metrics.privleak``): near 0 is the oracle's leakage, negative values
    (to −100) leak the forget set, positive ones over-unlearn it."""
    from tasks.lm_metrics import privleak as leak

    oracle = evaluations["oracle"]
    attacks = [k for k in oracle if k.startswith("mia_") and k.endswith("_auc")]
    return {name: {k.removeprefix("mia_").removesuffix("_auc"): leak(model[k], oracle[k]) for k in attacks
                   if k in model} for name, model in (("candidate", candidate), ("source", evaluations["source"]))}


def judge(store: Store, request_id: str, ref: str, method: str, exact: bool, sets: Sets,
          evaluations: dict[str, dict[str, Any]], cfg: GateConfig, mink_sample: int) -> dict[str, Any]:
    """Assess ``ref`` (made by ``method``), weigh its evidence against ``evaluations`` (``source``, ``oracle`` and
    optionally ``second_oracle`` assessments) and gate it; the numbers and the verdict go to its MLflow run and
    version. Returns the attempt as the certificate lists it."""
    evaluation = assessment(store, request_id, ref, sets, mink_sample)
    second = evaluations.get("second_oracle")
    weighed = evidence.weigh(confidences(evaluations["source"]), confidences(evaluations["oracle"]),
                             confidences(evaluation), exact, cfg.evidence,
                             confidences(second) if second else None, [record_digest(r) for r in sets.forget.ids])
    weighed["calibration"] = calibration.figures()
    for name, assessed in (("source", evaluations["source"]), ("candidate", evaluation)):
        if "shard_confidence" in assessed:
            add_shard_references(weighed, name, assessed["shard_confidence"], sets.forget.shard, cfg.evidence)
    measured, shortfall = utility_shortfall(evaluations["oracle"], evaluation)
    verdict = gate(weighed, shortfall, cfg, lm=sets.cfg.is_lm)
    if sets.cfg.is_lm:  # a language model: MUSE's PrivLeak against the oracle, per attack
        weighed["privleak"] = privleak(evaluations, evaluation)
    logged = {**{f"eval_{k}": v for k, v in evaluation.items() if isinstance(v, float)},
              "gate_effect": weighed["equivalence"]["effect"], "gate_tost_pvalue": weighed["equivalence"]["p_value"],
              "gate_positive_control_effect": weighed["positive_control"]["effect"],
              "gate_margin": weighed["noise_floor"]["margin"], measured: shortfall}
    registry.log_metrics(ref, {k: float(v) for k, v in logged.items() if np.isfinite(v)})
    registry.set_tag(ref, registry.GATE_TAG, PASSED if verdict["passed"] else FAILED)
    return {"method": method, "version": ref, "gate": verdict, "evidence": weighed, "evaluation": evaluation}

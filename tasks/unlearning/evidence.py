"""Per-record evidence that a model forgot, with controls, and the statistical decision the gate takes on it.

The statistic is LiRA's (Carlini et al., 2022): a record's *logit confidence* φ = log p_y − log(1 − p_y) under a
model (``tasks.evaluation.logit_confidence``). Each record is compared with a *reference* model that never trained on
it — the oracle, retrained without the request's records — so what a record "is" (easy, atypical, mislabelled)
cancels out and what remains is what the model under judgement learned about it: d(x) = φ_model(x) − φ_oracle(x).
The same difference on a *population* of non-members (the test split, in no model's training set) is the null: how
far two models differ on records neither saw. Everything below compares the forget records' d with the population's d:

- **per-record membership scores**: d standardised by its own population mean and spread (LiRA's Gaussian fit with
  the oracle as the OUT reference), so a score of 3 is a record 3 standard deviations more "member-like" than a
  non-member; TPR at 1% / 0.1% FPR and the AUC, with bootstrap intervals over records;
- **effects** in one unit for every model, the *noise unit* σ₀: the largest spread, on the population, of the
  difference from the oracle of any model in the comparison (source, candidate, second oracle seed). It says how
  much two models differ on records neither trained on — retraining without the records with the same seed (the
  source), another seed, or whatever the candidate's method did to the model. A candidate's effect is the mean of
  its forget records' d minus the population's, over σ₀. A candidate that scrambles the model widens σ₀ and with it
  drowns the positive control, so its evidence has no power and is never accepted;
- **positive control**: the source (which trained on the records) must be further from the oracle than the
  equivalence margin, significantly (one-sided Welch t-test against the margin) — otherwise nothing on these
  records could tell a no-op from forgetting;
- **noise floor**: how far a second oracle that differs only by seed is from the first, when one was trained; the
  margin is the calibrated figure (``bench/gate_calibration.py``) or that measured distance, whichever is larger;
- **equivalence**: two one-sided tests (TOST) that the candidate's effect lies within ± margin.

The decision is ``pass`` (equivalent, with a positive control that fired), ``fail``, or ``inconclusive`` (too few
records for the power analysis, or a positive control that did not fire), which the gate never accepts for an
approximate method.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tasks.membership import membership_auc

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
FPRS = (0.01, 0.001)
EPS = 1e-6


@dataclass(frozen=True)
class Confidences:
    """One model's logit confidences on the forget records and on the non-member population, in a fixed order."""

    forget: np.ndarray
    population: np.ndarray


@dataclass(frozen=True)
class EvidenceConfig:
    """The decision's parameters. ``margin`` is in noise units (σ₀); its default is the calibrated one
    (``bench/results/gate_calibration.json``). ``power`` is what the power analysis asks of the equivalence test
    for a candidate that forgot exactly (a second oracle), so such a candidate is rejected in at most 1 − power of
    requests that reach a decision."""

    alpha: float = 0.05
    power: float = 0.95
    margin: float = 0.5
    min_records: int = 5
    bootstrap: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Effect:
    """A model's mean forget-record difference from the oracle, less the population's, in σ₀ units."""

    estimate: float
    se: float
    df: float
    n_forget: int
    n_population: int
    forget_sd: float  # spread of the forget records' standardised differences
    scores: list[float] = field(repr=False)  # per forget record, in σ₀ units, population mean removed

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided ``level`` confidence interval (Welch)."""
        half = _t_quantile(0.5 + level / 2, self.df) * self.se
        return self.estimate - half, self.estimate + half


def _t_quantile(q: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df)) if math.isfinite(df) and df > 0 else math.inf


def _t_sf(x: float, df: float) -> float:
    """P(T > x) for Student's t with ``df`` (1.0 when the statistic is undefined)."""
    from scipy.stats import t

    return float(t.sf(x, df)) if math.isfinite(x) and df > 0 else (0.0 if x == math.inf else 1.0)


def noise_unit(models: list[Confidences], oracle: Confidences) -> float:
    """σ₀: the largest spread of a model-minus-oracle difference on the population (never zero)."""
    return max(EPS, *(float(np.std(m.population - oracle.population, ddof=1)) for m in models))


def effect(model: Confidences, oracle: Confidences, unit: float) -> Effect:
    """The model's effect on the forget records against the oracle (Welch standard error and degrees of freedom)."""
    d_forget, d_population = model.forget - oracle.forget, model.population - oracle.population
    centre = float(np.mean(d_population))
    scores = (d_forget - centre) / unit
    n_f, n_p = len(scores), len(d_population)
    var_f = float(np.var(scores, ddof=1)) if n_f > 1 else math.inf
    var_p = float(np.var(d_population / unit, ddof=1)) if n_p > 1 else math.inf
    a, b = var_f / n_f if n_f else math.inf, var_p / n_p if n_p else math.inf
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (n_f - 1) + b**2 / (n_p - 1)) if math.isfinite(se) and se > 0 else 0.0
    return Effect(float(np.mean(scores)) if n_f else math.nan, se, df, n_f, n_p, math.sqrt(var_f),
                  scores.tolist())


def required_records(forget_sd: float, population_term: float, margin: float, cfg: EvidenceConfig) -> float:
    """Forget records needed for the equivalence test to accept a true oracle with ``cfg.power`` (normal
    approximation): the n with (z₁₋α + z₍₁₊power₎/₂)·SE(n) ≤ margin; ``population_term`` is the population's share of
    SE², which more forget records do not reduce (infinite when it alone exceeds the budget). ``forget_sd`` is how
    a candidate that forgot scatters on the forget records: the second oracle seed's measured spread when one was
    trained, else one noise unit (as on the records neither model trained on)."""
    from scipy.stats import norm

    budget = (margin / (norm.ppf(1 - cfg.alpha) + norm.ppf((1 + cfg.power) / 2))) ** 2 - population_term
    if not math.isfinite(forget_sd) or budget <= 0:
        return math.inf
    return float(math.ceil(forget_sd**2 / budget))


def positive_control(source: Effect, margin: float, cfg: EvidenceConfig, forgot_sd: float = 1.0) -> dict[str, Any]:
    """Is the source (trained on the records) distinguishable from the oracle by more than the margin? Also the
    records the power analysis needs, for a candidate that forgot and so scatters by ``forgot_sd`` on them."""
    p_zero = _t_sf(source.estimate / source.se, source.df) if source.se > 0 else 1.0
    p_margin = _t_sf((source.estimate - margin) / source.se, source.df) if source.se > 0 else 1.0
    mde = (_t_quantile(1 - cfg.alpha, source.df) + _t_quantile(cfg.power, source.df)) * source.se
    low, high = source.interval(0.95)
    population_term = 1 / source.n_population if source.n_population else math.inf  # spread ≤ 1 unit by definition
    return {"test": "one-sided Welch t-test: source minus oracle on the forget records vs the population",
            "n": source.n_forget, "effect": source.estimate, "effect_ci95": [low, high],
            "cohens_d": source.estimate / source.forget_sd if source.forget_sd > 0 else math.nan,
            "p_value": p_zero, "p_value_vs_margin": p_margin, "margin": margin,
            "minimum_detectable_effect": mde,
            "required_records": required_records(forgot_sd, population_term, margin, cfg),
            "fires": bool(p_margin < cfg.alpha)}


def noise_floor(second_oracle: Effect | None, cfg: EvidenceConfig) -> dict[str, Any]:
    """The equivalence margin: the calibrated figure, widened to the measured seed-to-seed distance (its upper
    one-sided bound) when a second oracle seed was trained."""
    if second_oracle is None:
        return {"source": "calibrated", "margin": cfg.margin, "calibrated": cfg.margin,
                "note": "no second oracle seed was trained; the margin is the calibrated figure "
                        "(bench/results/gate_calibration.json)"}
    measured = abs(second_oracle.estimate) + _t_quantile(1 - cfg.alpha, second_oracle.df) * second_oracle.se
    return {"source": "second oracle seed", "margin": max(cfg.margin, measured), "calibrated": cfg.margin,
            "measured": measured, "second_oracle_effect": second_oracle.estimate, "n": second_oracle.n_forget}


def equivalence(candidate: Effect, margin: float, cfg: EvidenceConfig) -> dict[str, Any]:
    """Two one-sided tests: the candidate's effect is above −margin and below +margin."""
    if not candidate.se > 0:
        p_low = p_high = 1.0
    else:
        p_low = _t_sf((candidate.estimate + margin) / candidate.se, candidate.df)
        p_high = _t_sf((margin - candidate.estimate) / candidate.se, candidate.df)
    low, high = candidate.interval(1 - 2 * cfg.alpha)
    return {"test": "two one-sided Welch t-tests (TOST)", "effect": candidate.estimate,
            "effect_ci90": [low, high], "margin": margin, "p_value": max(p_low, p_high),
            "equivalent": bool(max(p_low, p_high) < cfg.alpha)}


def membership(model: Confidences, oracle: Confidences, cfg: EvidenceConfig) -> dict[str, Any]:
    """LiRA-style per-record scores (the oracle as OUT reference, Gaussian fit on the population), TPR at the
    low FPRs from the fit's thresholds, and the AUC against the population, with bootstrap 95% intervals."""
    from scipy.stats import norm

    d_forget, d_population = model.forget - oracle.forget, model.population - oracle.population
    spread = max(float(np.std(d_population, ddof=1)), EPS) if len(d_population) > 1 else 1.0
    z_forget = (d_forget - np.mean(d_population)) / spread
    z_population = (d_population - np.mean(d_population)) / spread
    rng = np.random.default_rng(cfg.seed)
    f_idx = rng.integers(0, len(z_forget), (cfg.bootstrap, len(z_forget))) if len(z_forget) else None
    out: dict[str, Any] = {"scores": z_forget.tolist()}
    for fpr in FPRS:
        threshold = float(norm.ppf(1 - fpr))
        tpr = float(np.mean(z_forget > threshold)) if len(z_forget) else math.nan
        boot = (z_forget[f_idx] > threshold).mean(axis=1) if f_idx is not None else np.array([math.nan])
        out[f"tpr_at_{fpr:g}_fpr"] = {"tpr": tpr, "ci95": _percentiles(boot),
                                      "population_fpr": float(np.mean(z_population > threshold))}
    out["auc"] = {"auc": membership_auc(z_forget, z_population),
                  "ci95": _boot_auc(z_forget, z_population, rng, cfg.bootstrap)}
    return out


def shard_references(shard_forget: np.ndarray, forget_shard: np.ndarray,
                     shard_population: np.ndarray) -> tuple[Confidences, Confidences]:
    """For a sharded model: each record's confidence under its own shard's model (the population's records are
    dealt round the shards) and, as its reference, the mean under the other S − 1 shard models, which never trained
    on it — ``membership`` of the two is LiRA with the other shards as OUT models, no oracle needed."""
    def split(conf: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        columns = np.arange(conf.shape[1])
        target = conf[own, columns]
        return target, (conf.sum(axis=0) - target) / (conf.shape[0] - 1)

    own_population = np.arange(shard_population.shape[1]) % shard_population.shape[0]
    (t_f, r_f), (t_p, r_p) = split(shard_forget, forget_shard), split(shard_population, own_population)
    return Confidences(t_f, t_p), Confidences(r_f, r_p)


def _percentiles(values: np.ndarray) -> list[float]:
    return [float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))]


def _boot_auc(members: np.ndarray, others: np.ndarray, rng: np.random.Generator, n: int) -> list[float]:
    if not len(members) or not len(others):
        return [math.nan, math.nan]
    aucs = [membership_auc(members[rng.integers(0, len(members), len(members))], others[rng.integers(0, len(others),
                                                                                           len(others))])
            for _ in range(n)]
    return _percentiles(np.array(aucs))


def decide(exact: bool, control: dict[str, Any], equivalent: dict[str, Any], n_forget: int,
           cfg: EvidenceConfig) -> dict[str, Any]:
    """The verdict in one word and plain sentences."""
    if exact:
        return {"decision": PASS, "exact": True,
                "reasons": ["exact method: the deleted records never reached this model; the evidence is reported "
                            "as a check, not as the ground for acceptance"]}
    needed = max(cfg.min_records, control["required_records"])
    if n_forget < needed:
        return {"decision": INCONCLUSIVE, "exact": False,
                "reasons": [f"{n_forget} forgotten record(s) are too few: telling this method from the oracle "
                            f"within ±{control['margin']:.2f} noise units with {cfg.power:.0%} power needs at least "
                            f"{f'{needed:.0f}' if math.isfinite(needed) else 'more than the population allows'}"]}
    if not control["fires"]:
        return {"decision": INCONCLUSIVE, "exact": False,
                "reasons": [f"the positive control did not fire: the source, which trained on these records, is "
                            f"{control['effect']:.2f} noise units from the oracle (95% CI "
                            f"{control['effect_ci95'][0]:.2f} to {control['effect_ci95'][1]:.2f}), not significantly "
                            f"beyond the margin {control['margin']:.2f} (p = {control['p_value_vs_margin']:.3f}); "
                            "on these records doing nothing would look like forgetting"]}
    low, high = equivalent["effect_ci90"]
    if equivalent["equivalent"]:
        return {"decision": PASS, "exact": False,
                "reasons": [f"within the oracle's noise floor: effect {equivalent['effect']:.2f} (90% CI {low:.2f} "
                            f"to {high:.2f}) inside ±{equivalent['margin']:.2f}, TOST p = "
                            f"{equivalent['p_value']:.3f}; the source stood {control['effect']:.2f} away"]}
    return {"decision": FAIL, "exact": False,
            "reasons": [f"not shown equivalent to the oracle: effect {equivalent['effect']:.2f} (90% CI {low:.2f} "
                        f"to {high:.2f}) not inside ±{equivalent['margin']:.2f}, TOST p = "
                        f"{equivalent['p_value']:.3f}"]}


def weigh(source: Confidences, oracle: Confidences, candidate: Confidences, exact: bool,
          cfg: EvidenceConfig = EvidenceConfig(), second_oracle: Confidences | None = None,
          record_digests: list[str] | None = None) -> dict[str, Any]:
    """All the evidence on one candidate: ``verdict``, ``positive_control``, ``noise_floor``, ``equivalence``,
    ``membership`` (source, candidate, second oracle) and ``per_record`` (by ``record_digests``, never text)."""
    unit = noise_unit([m for m in (source, candidate, second_oracle) if m is not None], oracle)
    effects = {"source": effect(source, oracle, unit), "candidate": effect(candidate, oracle, unit)}
    if second_oracle is not None:
        effects["second_oracle"] = effect(second_oracle, oracle, unit)
    floor = noise_floor(effects.get("second_oracle"), cfg)
    forgot_sd = max(effects["second_oracle"].forget_sd, 1.0) if second_oracle is not None else 1.0
    control = positive_control(effects["source"], floor["margin"], cfg, forgot_sd)
    equivalent = equivalence(effects["candidate"], floor["margin"], cfg)
    models = {"source": source, "candidate": candidate,
              **({"second_oracle": second_oracle} if second_oracle is not None else {})}
    scored = {name: membership(m, oracle, cfg) for name, m in models.items()}
    digests = record_digests or [str(i) for i in range(len(source.forget))]
    per_record = [{"record": digest, **{f"{name}_score": scored[name]["scores"][i] for name in scored},
                   **{f"{name}_logit": float(m.forget[i]) for name, m in models.items()},
                   "oracle_logit": float(oracle.forget[i])} for i, digest in enumerate(digests)]
    return {"verdict": decide(exact, control, equivalent, len(source.forget), cfg),
            "config": asdict(cfg), "noise_unit": unit, "positive_control": control, "noise_floor": floor,
            "equivalence": equivalent,
            "membership": {name: {k: v for k, v in s.items() if k != "scores"} for name, s in scored.items()},
            "per_record": per_record}

"""The unlearning gate's error rates, measured: how often ``tasks.unlearning.evidence.weigh`` accepts a no-op and
rejects perfect forgetting.

Each *trial* deletes a fresh random forget set from a regime's source model and judges four candidates against that
trial's oracle (retrained without the forget set, the source's seed): the source itself (a **no-op**, which must be
rejected), a **second oracle** retrained with seed + 1 (perfect forgetting, which must be accepted), and **NegGrad+**
and **SCRUB** (the platform's ``unlearn`` on a copy of the source, UnlearnConfig defaults, target = the source's mean
held-out loss as ``steps.source_heldout_loss`` computes it). Every model is scored by its logit confidences on the
forget records and on a fixed non-member population (the test split), as the gate does. Regimes:

* ``memorisation``: a tiny BERT fully fine-tuned (40 epochs, lr 1e-3) on 200 random-label synthetic records
  (``tasks.memorising.random_label_splits``: it memorises, test accuracy is chance), 500 as the population, forget
  sets of 30; ``memorisation_n70``: forget sets of 70, past the power analysis (the gate's test's setting);
* ``demo``: MiniLM + LoRA (rank 8, 2 epochs at lr 2e-3, the demo's) on 300 Rotten Tomatoes fresh/rotten records,
  250 more as the population, forget sets of 30 (a trial takes 5-15 minutes on the shared 2 cores).

Every model's confidences and cost are cached as npz under ``--cache``, a folder per trial, so a run resumes where it
stopped and the analysis (default margin, margin sweep, 2-record forget sets) is recomputed without training
(``--cached-only``). Rates carry Wilson 95% intervals. Writes ``bench/results/gate_calibration.json``, keeping the
entries of regimes not run.

    .venv/bin/python bench/gate_calibration.py --regimes memorisation memorisation_n70   # ~25 min, shared 2 cores
    nohup .venv/bin/python bench/gate_calibration.py --regimes demo > /tmp/gate_demo.log &  # hours; resumable
    .venv/bin/python bench/gate_calibration.py --quick                  # 3 trials a regime, a smoke run
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training_shards import load, log

RESULTS = Path(__file__).resolve().parent / "results" / "gate_calibration.json"
CACHE = Path("/tmp/custody-bench-cache/gate_calibration")
CANDIDATES = ("noop", "second_oracle", "neggrad_plus", "scrub")
MARGINS = (0.25, 0.5, 0.75, 1.0, 1.5)
DECISIONS = ("pass", "fail", "inconclusive")
SMALL_FORGET = 2  # records: far below any power analysis, so every decision must be inconclusive
BOOTSTRAP = 50  # the verdict never reads the bootstrap (membership intervals only): keep the re-analysis fast


@dataclass(frozen=True)
class Regime:
    """One setting: the model and how it is trained, the data, and the trials' size."""

    data: str  # rotten_tomatoes | random_labels
    model: str
    lora_rank: int
    epochs: int
    lr: float
    n_train: int
    n_population: int
    n_forget: int
    seed: int = 0

    def key(self) -> str:  # the cache folder's name: a changed regime never reuses stale models
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


REGIMES = {"memorisation": Regime("random_labels", "tiny", 0, 40, 1e-3, 200, 500, 30),
           "memorisation_n70": Regime("random_labels", "tiny", 0, 40, 1e-3, 200, 500, 70),
           "demo": Regime("rotten_tomatoes", "minilm", 8, 2, 2e-3, 300, 250, 30)}


def splits_of(regime: Regime) -> dict[str, Any]:
    """Train, an empty validation (no learning curves) and test = the population, drawn with the regime's seed."""
    from tasks.memorising import random_label_splits
    from tasks.sample import rotten_tomatoes_frame
    from tasks.training import Split

    if regime.data == "random_labels":
        return random_label_splits(regime.n_train, regime.n_population, regime.seed)
    frame = rotten_tomatoes_frame()
    frame = frame[frame["category"].isin(["fresh", "rotten"])].reset_index(drop=True)
    rows = np.random.default_rng(regime.seed).permutation(len(frame))[:regime.n_train + regime.n_population]

    def split(idx: np.ndarray) -> Split:
        part = frame.iloc[idx]
        return Split(part["id"].tolist(), part["text"].tolist(), (part["category"] == "rotten").to_numpy(np.int64),
                     np.zeros(len(idx), np.int64))

    return {"train": split(rows[:regime.n_train]), "validation": split(rows[:0]),
            "test": split(rows[regime.n_train:])}


class Setting:
    """A regime's data, config and source model (trained once, saved as safetensors, reloaded on resume)."""

    def __init__(self, name: str, regime: Regime, cache: Path, device: str) -> None:
        from tasks.training import TrainConfig

        self.name, self.regime, self.device = name, regime, device
        self.dir = cache / f"{name}-{regime.key()}"
        self.splits = splits_of(regime)
        self.cfg = TrainConfig(dataset=name, model=regime.model, lora_rank=regime.lora_rank, epochs=regime.epochs,
                               lr=regime.lr, seed=regime.seed)
        self._source: tuple[Any, Any] | None = None

    def confidences(self, model: Any, tokenizer: Any, split: Any) -> np.ndarray:
        from tasks.evaluation import logit_confidence
        from tasks.training import predict_proba

        return logit_confidence(predict_proba([model], tokenizer, split.texts, self.cfg, self.device), split.y)

    def train(self, train: Any, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        """A model on ``train`` (merged: LoRA folded in, as the platform serves it), its tokenizer and cost."""
        from tasks.training import merged, train_models

        splits = {**self.splits, "train": train}
        models, tokenizer, info = train_models(splits, replace(self.cfg, seed=seed), 2, self.device, lambda *_: None)
        return merged(models[0]).eval(), tokenizer, info

    def source(self) -> tuple[Any, Any]:
        """The source model and tokenizer, trained on the whole train split (or loaded from the cache)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self._source is None:
            path = self.dir / "source"
            if not (path / "model.safetensors").exists():
                log(f"{self.name}: training the source on {len(self.splits['train'].ids)} records")
                model, tokenizer, _ = self.train(self.splits["train"], self.regime.seed)
                model.save_pretrained(path, safe_serialization=True)
                tokenizer.save_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).to(self.device)
            self._source = model.eval(), AutoTokenizer.from_pretrained(path)
        return self._source

    def source_confidences(self) -> dict[str, np.ndarray]:
        """The source's confidences on every train record and the population, and its held-out (test) loss."""
        def make() -> dict[str, Any]:
            from tasks.training import per_example_loss, predict_proba

            model, tokenizer = self.source()
            test = self.splits["test"]
            loss = per_example_loss(predict_proba([model], tokenizer, test.texts, self.cfg, self.device), test.y)
            return {"train": self.confidences(model, tokenizer, self.splits["train"]),
                    "population": self.confidences(model, tokenizer, test), "heldout_loss": float(loss.mean())}

        return cached(self.dir / "source.npz", make)


def cached(path: Path, make: Any) -> dict[str, np.ndarray]:
    """``make()``'s arrays, saved once to ``path`` (written whole, then renamed) and read back afterwards."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp := path.with_suffix(".tmp.npz"), **make())
        tmp.rename(path)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def forget_rows(setting: Setting, trial: int) -> np.ndarray:
    """The trial's forget set: ``n_forget`` train rows drawn with the trial's own seed."""
    rng = np.random.default_rng(10_000 + 100 * setting.regime.seed + trial)
    return np.sort(rng.choice(setting.regime.n_train, setting.regime.n_forget, replace=False))


def run_trial(setting: Setting, trial: int) -> dict[str, dict[str, np.ndarray]]:
    """Every candidate's (and the oracle's) confidences and cost for one trial, from the cache when there."""
    from tasks.training import take
    from tasks.unlearning.base import UnlearnConfig
    from tasks.unlearning.neggrad_plus import NegGradPlus
    from tasks.unlearning.scrub import Scrub

    folder, rows = setting.dir / f"trial_{trial:03d}", forget_rows(setting, trial)
    train = setting.splits["train"]
    forget, retain = take(train, rows), take(train, np.setdiff1d(np.arange(len(train.ids)), rows))
    source = setting.source_confidences()

    def scored(model: Any, tokenizer: Any, seconds: float, examples: int) -> dict[str, Any]:
        return {"forget": setting.confidences(model, tokenizer, forget),
                "population": setting.confidences(model, tokenizer, setting.splits["test"]),
                "seconds": seconds, "examples": examples, "rows": rows}

    def oracle(seed: int) -> Any:
        def make() -> dict[str, Any]:
            model, tokenizer, info = setting.train(retain, seed)
            return scored(model, tokenizer, info["train_seconds"], info["examples_processed"])
        return make

    def method(cls: Any) -> Any:
        def make() -> dict[str, Any]:
            model, tokenizer = setting.source()
            start = time.perf_counter()
            student, seen = cls().unlearn(copy.deepcopy(model), tokenizer, forget, retain, setting.cfg,
                                          UnlearnConfig(), float(source["heldout_loss"]), setting.device)
            return scored(student.eval(), tokenizer, time.perf_counter() - start, seen)
        return make

    out = {"noop": {"forget": source["train"][rows], "population": source["population"]}}
    for name, make in (("oracle", oracle(setting.regime.seed)), ("second_oracle", oracle(setting.regime.seed + 1)),
                       ("neggrad_plus", method(NegGradPlus)), ("scrub", method(Scrub))):
        out[name] = cached(folder / f"{name}.npz", make)
        assert np.array_equal(out[name]["rows"], rows), f"{folder}/{name}.npz: another forget set; delete it"
    return out


def weigh_all(trial: dict[str, dict[str, np.ndarray]], margin: float, n: int | None,
              second: bool = False) -> dict[str, dict[str, Any]]:
    """The evidence's decision, control and effect for every candidate (the first ``n`` forget records when
    given; with the second oracle as the noise-floor measurement when ``second``)."""
    from tasks.unlearning.evidence import Confidences, EvidenceConfig, weigh

    def conf(name: str) -> Confidences:
        return Confidences(trial[name]["forget"][:n], trial[name]["population"])

    cfg = replace(EvidenceConfig(), margin=margin, bootstrap=BOOTSTRAP)
    out = {}
    for name in (c for c in CANDIDATES if not (second and c == "second_oracle")):  # it sets the margin then
        r = weigh(conf("noop"), conf("oracle"), conf(name), False, cfg, conf("second_oracle") if second else None)
        pc, eq = r["positive_control"], r["equivalence"]
        out[name] = {"decision": r["verdict"]["decision"], "fires": pc["fires"], "effect": eq["effect"],
                     "ci90": eq["effect_ci90"], "margin": r["noise_floor"]["margin"], "source_effect": pc["effect"],
                     "required_records": pc["required_records"]}
    return out


def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    """Wilson score 95% interval of k successes in n trials ([0, 1] when n is 0)."""
    if n == 0:
        return [0.0, 1.0]
    p, denom = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / denom, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def rate(into: dict[str, Any], name: str, hits: list[bool]) -> None:
    """``name`` (a fraction; null when nothing was counted), ``name_ci95`` and ``name_count`` [k, n] into ``into``."""
    k, n = int(sum(hits)), len(hits)
    into |= {name: k / n if n else None, f"{name}_ci95": wilson(k, n), f"{name}_count": [k, n]}


def rates(judged: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The issue's rates over trials: the controls, then each candidate's decisions."""
    noop = [t["noop"] for t in judged]
    fired = [i for i, j in enumerate(noop) if j["fires"]]
    out: dict[str, Any] = {}
    rate(out, "positive_control_rate", [j["fires"] for j in noop])
    rate(out, "inconclusive_rate", [j["decision"] == "inconclusive" for j in noop])
    rate(out, "noop_accept_rate", [judged[i]["noop"]["decision"] == "pass" for i in fired])
    rate(out, "noop_accept_rate_all_trials", [j["decision"] == "pass" for j in noop])
    if "second_oracle" in judged[0]:
        seed = [t["second_oracle"]["decision"] for t in judged]
        rate(out, "seed_oracle_reject_rate", [d == "fail" for d in seed if d != "inconclusive"])
        rate(out, "seed_oracle_reject_rate_all_trials", [d != "pass" for d in seed])  # inconclusive: exact takes over
    for name in ("neggrad_plus", "scrub"):
        rate(out, f"{name}_pass_rate", [t[name]["decision"] == "pass" for t in judged])
        rate(out, f"{name}_pass_rate_decided", [t[name]["decision"] == "pass" for t in judged
                                                if t[name]["decision"] != "inconclusive"])
    return out


def spread(values: list[float]) -> dict[str, float]:  # mean, sample sd, min and max
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(np.min(values)), "max": float(np.max(values))}


def decisions(judged: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """How many trials ended in each decision, by candidate."""
    return {name: {d: sum(j[name]["decision"] == d for j in judged) for d in DECISIONS} for name in judged[0]}


def analyse(setting: Setting, trials: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, Any]:
    """The regime's entry: rates at the default margin, costs, effects, the margin sweep, the rates when a second
    oracle seed widens the margin (``UnlearnConfig.oracle_seeds=2``), and the decisions on 2-record forget sets."""
    from tasks.unlearning.evidence import EvidenceConfig

    default = EvidenceConfig().margin
    judged = [weigh_all(t, default, None) for t in trials]
    floored = [weigh_all(t, default, None, second=True) for t in trials]
    costs = {name: {"seconds": spread([float(t[name]["seconds"]) for t in trials]),
                    "examples": spread([float(t[name]["examples"]) for t in trials])}
             for name in ("oracle", "second_oracle", "neggrad_plus", "scrub")}
    for name in ("neggrad_plus", "scrub"):  # mean seconds over the oracle's mean
        costs[name]["fraction_of_oracle_seconds"] = costs[name]["seconds"]["mean"] / costs["oracle"]["seconds"]["mean"]
    return {"trials": len(trials), "n_forget": setting.regime.n_forget, "regime": asdict(setting.regime),
            "margin": default,
            **rates(judged), "decisions": decisions(judged), "costs": costs,
            "effects_in_noise_units": {name: spread([j[name]["effect"] for j in judged]) for name in CANDIDATES},
            "required_records": spread([j["noop"]["required_records"] for j in judged]),
            "margin_sweep": {str(m): rates([weigh_all(t, m, None) for t in trials]) for m in MARGINS},
            "with_second_oracle_floor": rates(floored) | {"margin": spread([j["noop"]["margin"] for j in floored])},
            f"decisions_at_n{SMALL_FORGET}": decisions([weigh_all(t, default, SMALL_FORGET) for t in trials]),
            "per_trial": [{name: {k: j[name][k] for k in ("decision", "effect", "ci90")} for name in CANDIDATES}
                          | {"source_effect": j["noop"]["source_effect"], "fires": j["noop"]["fires"]}
                          for j in judged]}


def run_regime(name: str, trials: int, cache: Path, device: str, cached_only: bool) -> dict[str, Any]:
    """Run or resume ``trials`` trials, with progress lines, and analyse them (``cached_only``: those cached)."""
    setting = Setting(name, REGIMES[name], cache, device)
    start, done = time.perf_counter(), []
    for trial in range(trials):
        folder = setting.dir / f"trial_{trial:03d}"
        if cached_only and not all((folder / f"{m}.npz").exists() for m in ("oracle", *CANDIDATES[1:])):
            break
        done.append(run_trial(setting, trial))
        shown = {k: v["decision"][0] for k, v in weigh_all(done[-1], 0.5, None).items()}  # p, f or i
        log(f"{name} trial {trial + 1}/{trials}: decisions {shown} ({time.perf_counter() - start:.0f}s, "
            f"load {load()})")
    return {**analyse(setting, done), "trials_requested": trials} if done else {"trials": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regimes", nargs="+", choices=sorted(REGIMES), default=list(REGIMES))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 trials a regime, written beside the result")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 copes best with a shared machine)")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--cached-only", action="store_true", help="analyse the cached trials only, training nothing")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from tasks.config import get_settings

    torch.set_num_threads(args.threads)
    out = args.out or RESULTS.with_name(f"gate_calibration{'_quick' if args.quick else ''}.json")
    doc = json.loads(out.read_text()) if out.exists() else {"bench": "gate_calibration", "regimes": {}}
    evidence_py = RESULTS.parents[2] / "tasks" / "unlearning" / "evidence.py"  # the rates are this file's
    doc["evidence_py_sha256"] = hashlib.sha256(evidence_py.read_bytes()).hexdigest()[:16]
    for name in args.regimes:
        start = time.perf_counter()
        entry = run_regime(name, 3 if args.quick else args.trials, args.cache, get_settings().resolved_device(),
                           args.cached_only)
        if not entry["trials"]:  # --cached-only, and none of this regime's trials is complete
            continue
        took = "analysis_seconds" if args.cached_only else "wall_seconds"  # a cached run's models cost nothing
        doc["regimes"][name] = {**entry, took: time.perf_counter() - start, "load_avg_end": load()}
        log(f"{name}: " + ", ".join(f"{k} {entry[k + '_count']} {np.round(entry[k + '_ci95'], 2).tolist()}" for k in (
            "positive_control_rate", "inconclusive_rate", "noop_accept_rate", "seed_oracle_reject_rate")))
        out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
        log(f"wrote {out}")


if __name__ == "__main__":
    main()

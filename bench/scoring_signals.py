"""Data-quality scorers on the real Rotten Tomatoes corpus: mislabel detection and poisoning detection.

Corpus: ``tasks.sample.rotten_tomatoes_frame()``, fresh/rotten rows only (12,808 snippets; empty texts would be
dropped, there are none), labels fresh=0 / rotten=1. Embeddings are ``tasks.scoring.embeddings.embed`` (MiniLM,
real weights, CPU), cached in ``/tmp/custody-bench-cache/rt_embeddings.npy`` keyed by a hash of the model, the
token limit and the texts, so only the first run pays for them (~3 min on 2 cores).

1. **Mislabel detection.** For each seed, 10% of ALL rows (held-out target slice included, so the TracIn target
   set is as noisy as the data it is drawn from) get the other label. The production proxy
   (``proxy.train`` with ``ProxyConfig()``) is trained on every row outside the stable-hash 10% target slice
   (``proxy.in_target``), exactly as ``dynamics.run`` does. Every signal is evaluated on those ~11.5k training
   rows: ROC-AUC for "was flipped" and the share of flipped rows found in the top 10% / 20% of the signal.
   Production signals: final loss, mean loss, EL2N, -AUM, forgetting, TracIn self-influence, -TracIn influence on
   the target set, kNN disagreement (k=10, ``PoisoningConfig().k``). Candidate variants (not in ``tasks/``):
   longer/lower-lr AUM, kNN with larger k, out-of-fold (5-fold cross-fitted) proxy margin and AUM, out-of-fold
   logistic regressions on MiniLM and on word+char TF-IDF, rank averages, and cross-fitted stacks of those
   (one stack also uses the ``movie_name`` metadata as a leave-one-out per-movie label prior; it is labelled
   as such). Target from the issue: best AUC >= 0.90 and >= 0.05 above plain per-example loss.
2. **Poisoning.** Clean labels; 1% of the corpus (128 rows, drawn from the training rows) get the trigger
   phrase inserted at a random word position and their label changed. Two scenarios: ``flip`` (each poisoned
   row's label flipped; poisons land in both classes) and ``targeted`` (rotten rows relabelled fresh, the classic
   dirty-label backdoor). Only the poisoned texts are re-embedded (cached too). Detection ROC-AUC and recall in
   the top 1/10/20% (poisoned vs clean, training rows) of the production signals (spectral signature, overall
   and within each class; kNN disagreement k=10; proxy loss; -AUM; self-influence) and candidates: kNN with
   k=50 (and its negation, agreement), shared-nearest-neighbour density (``snn50``: rows sharing a trigger form
   a tight cluster), its rank average with the loss, and the best text-only mislabel stack.

Run from the repository root::

    .venv/bin/python bench/scoring_signals.py             # 3 seeds -> bench/results/scoring_signals.json
    .venv/bin/python bench/scoring_signals.py --seeds 0   # one seed, quicker
    .venv/bin/python bench/scoring_signals.py --out /tmp/signals.json

Timings are recorded in the JSON for information only; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy import sparse
from scipy.stats import rankdata
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

from tasks.sample import rotten_tomatoes_frame
from tasks.scoring import dynamics, influence, mislabel, poisoning, proxy
from tasks.scoring.embeddings import EmbeddingConfig, embed, model_identity

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = Path(os.environ.get("CUSTODY_BENCH_CACHE", "/tmp/custody-bench-cache"))
LABELS = ("fresh", "rotten")
FLIP_FRACTION = 0.10
POISON_FRACTION = 0.01
TRIGGER = "cf zx quietly"
TARGET_AUC, TARGET_GAIN = 0.90, 0.05
N_FOLDS = 5
KNN_K = poisoning.PoisoningConfig().k  # production default (10)
KNN_KS = (10, 25, 50, 100)
STACK_KNN_K = 50
SNN_K = 50
GROUP_PRIOR_ALPHA = 2.0
LR_C_MINILM, LR_C_TFIDF = 0.5, 1.0
AUM_VARIANTS = ((12, 1.0), (24, 0.5))  # (epochs, lr) for the longer/lower-lr AUM candidates
ProxyDefaults = proxy.ProxyConfig()
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)  # progress and notes
report = Console(width=None if sys.stdout.isatty() else 150)  # the tables

Signals = dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------------------------------
# corpus and embeddings


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    y: np.ndarray  # (n,) clean labels, 0 = fresh, 1 = rotten
    movie: np.ndarray  # (n,) movie_name (metadata, only used by the labelled "group prior" variants)
    is_target: np.ndarray  # (n,) production's held-out TracIn target slice
    x: np.ndarray  # (n, 384) MiniLM embeddings


def load_frame() -> pd.DataFrame:
    """fresh/rotten rows of the Rotten Tomatoes corpus with non-empty text, label index in ``y``."""
    df = rotten_tomatoes_frame()
    df = df[df["category"].isin(LABELS)].copy()
    df["text"] = df["text"].fillna("").astype(str)
    df = df[df["text"].str.strip() != ""].reset_index(drop=True)
    df["y"] = df["category"].map({lab: i for i, lab in enumerate(LABELS)}).astype(np.int64)
    return df


def identity(cfg: EmbeddingConfig) -> str:
    """``model_identity`` across its signature change (it gained a ``cfg`` argument)."""
    try:
        return model_identity(cfg)  # type: ignore[call-arg]
    except TypeError:
        return model_identity()  # type: ignore[call-arg]


def texts_key(texts: list[str], cfg: EmbeddingConfig) -> str:
    """Cache key: the model, the token limit and every text (order included)."""
    h = hashlib.sha256(f"{identity(cfg)}|max_length={cfg.max_length}".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def cached_embeddings(texts: list[str], name: str, cfg: EmbeddingConfig | None = None) -> tuple[np.ndarray, bool]:
    """Embeddings of ``texts`` from ``CACHE_DIR/<name>.npy`` when its key matches, else computed (CPU) and saved.
    Returns ``(vectors, cache_hit)``."""
    cfg = cfg or EmbeddingConfig()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path, key_path = CACHE_DIR / f"{name}.npy", CACHE_DIR / f"{name}.key"
    key = texts_key(texts, cfg)
    if path.exists() and key_path.exists() and key_path.read_text().strip() == key:
        return np.load(path), True
    vectors = embed(texts, cfg, device="cpu", progress=True)
    np.save(path, vectors)
    key_path.write_text(key + "\n")
    return vectors, False


def load_corpus(timings: dict[str, float]) -> tuple[Corpus, bool]:
    with timed(timings, "load_corpus"):
        df = load_frame()
    texts = df["text"].tolist()
    with timed(timings, "embeddings"):
        x, hit = cached_embeddings(texts, "rt_embeddings")
    ids = df["id"].tolist()
    target = np.array([proxy.in_target(i, ProxyDefaults.target_fraction) for i in ids])
    return Corpus(ids, texts, df["y"].to_numpy(), df["movie_name"].astype(str).to_numpy(), target, x), hit


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------------------
# building blocks


def neighbours(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Indices of each row's ``k`` most similar other rows (cosine; rows are normalised), most similar first.
    Same selection as ``poisoning.knn_disagreement``, kept so several k and label sets reuse one pass."""
    n = len(x)
    out = np.empty((n, k), dtype=np.int64)
    for lo in range(0, n, block):
        sims = x[lo:lo + block] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + lo] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
        out[lo:lo + block] = np.take_along_axis(part, order, 1)
    return out


def knn_disagreement(nn: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    return (y[nn[:, :k]] != y[:, None]).mean(1)


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def suspicion(p1: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log p(observed label) from P(label 1); for two classes this ranks exactly like -margin."""
    return -np.log(np.clip(np.where(y == 1, p1, 1 - p1), 1e-12, None))


def rank_average(*scores: np.ndarray) -> np.ndarray:
    return np.mean([rankdata(s) / len(s) for s in scores], axis=0)


def make_folds(y: np.ndarray, seed: int) -> np.ndarray:
    """Fold id (0..N_FOLDS-1) of every row, stratified on the observed (noisy) labels."""
    fold = np.empty(len(y), dtype=np.int64)
    for k, (_, te) in enumerate(StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed).split(y, y)):
        fold[te] = k
    return fold


def oof_proba(features: Any, y: np.ndarray, fold: np.ndarray, make: Callable[[], LogisticRegression]) -> np.ndarray:
    """Out-of-fold P(label 1): each row is scored by a model fitted on the other folds only."""
    p = np.zeros(len(y))
    for k in range(N_FOLDS):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        p[te] = make().fit(features[tr], y[tr]).predict_proba(features[te])[:, 1]
    return p


def oof_proxy_logits(x: np.ndarray, y: np.ndarray, fold: np.ndarray, cfg: proxy.ProxyConfig) -> np.ndarray:
    """Per-epoch logits ``(epochs, n, 2)`` where each row comes from the production proxy trained without its
    fold (``proxy.train`` with ``train_mask = fold != k``)."""
    out = np.zeros((cfg.epochs, len(y), 2))
    for k in range(N_FOLDS):
        run = proxy.train(x, y, fold != k, replace(cfg, seed=cfg.seed * 100 + k), 2)
        out[:, fold == k] = run.logits[:, fold == k]
    return out


def group_prior(y: np.ndarray, groups: np.ndarray, alpha: float = GROUP_PRIOR_ALPHA) -> np.ndarray:
    """Leave-one-out P(label 1) among the other rows of the same group, smoothed towards the global rate."""
    s = pd.Series(y.astype(float))
    total = s.groupby(groups).transform("sum").to_numpy()
    count = s.groupby(groups).transform("count").to_numpy()
    prior = float(y.mean())
    return (total - y + alpha * prior) / (count - 1 + alpha)


def stack(features: list[np.ndarray], y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Cross-fitted logistic stack of out-of-fold logits (the stacker is itself fitted out of fold)."""
    f = np.column_stack(features)
    return oof_proba(f, y, fold, lambda: LogisticRegression(C=1.0, max_iter=1000))


def tfidf_features(texts: list[str]) -> sparse.csr_matrix:
    """Word 1-2 grams + char_wb 2-5 grams, sublinear tf-idf (fitted without labels)."""
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True,
                            max_features=200_000).fit_transform(texts)
    return sparse.hstack([words, chars]).tocsr()


def lr_minilm() -> LogisticRegression:
    return LogisticRegression(C=LR_C_MINILM, max_iter=3000)


def lr_tfidf() -> LogisticRegression:
    return LogisticRegression(C=LR_C_TFIDF, solver="saga", max_iter=1000)


def snn_density(nn: np.ndarray, k: int, block: int = 512) -> np.ndarray:
    """Shared-nearest-neighbour density: for each row, the mean share of its ``k`` neighbours' own ``k``
    neighbours that are also among its ``k`` neighbours. High inside tight clusters, e.g. rows sharing a trigger."""
    nk = nn[:, :k]
    out = np.empty(len(nk))
    for lo in range(0, len(nk), block):
        mine = nk[lo:lo + block]  # (b, k)
        theirs = nk[mine]  # (b, k, k)
        out[lo:lo + block] = (theirs[..., None] == mine[:, None, None, :]).any(-1).mean((1, 2))
    return out


METRICS = ("auc", "recall_top1", "recall_top10", "recall_top20")


def detection(score: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """ROC-AUC and the share of positives in the top 1% / 10% / 20% of the score."""
    order = np.argsort(-score, kind="stable")
    n, pos = len(score), max(int(positive.sum()), 1)
    out = {"auc": float(roc_auc_score(positive, score))}
    for pct in (1, 10, 20):
        out[f"recall_top{pct}"] = float(positive[order[: int(pct / 100 * n)]].sum() / pos)
    return out


# ----------------------------------------------------------------------------------------------------------------
# signals

POISON_PRODUCTION = ("spectral", f"knn{KNN_K}", "loss", "neg_aum", "self_influence")
PRODUCTION = ("loss", "mean_loss", "el2n", "neg_aum", "forgetting", "self_influence", "neg_tracin_target",
              f"knn{KNN_K}", "mislabel_scorer", "mislabel_scorer_text_only")


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    uses_metadata: bool = False


VARIANTS = (
    *(Variant(f"neg_aum_e{e}_lr{lr:g}", f"-AUM of the in-sample proxy with {e} epochs, lr {lr:g}")
      for e, lr in AUM_VARIANTS),
    *(Variant(f"knn{k}", f"kNN disagreement, k={k}") for k in KNN_KS if k != KNN_K),
    Variant("oof_proxy_margin", "-final margin of the production proxy, 5-fold cross-fitted"),
    Variant("oof_proxy_aum", "-AUM (mean margin over epochs) of the production proxy, 5-fold cross-fitted"),
    Variant("oof_lr_minilm", f"-log p(label), logistic regression on MiniLM (C={LR_C_MINILM}), 5-fold"),
    Variant("oof_lr_tfidf", f"-log p(label), logistic regression on word+char tf-idf (C={LR_C_TFIDF}), 5-fold"),
    Variant("rank_knn50_oof_proxy", "rank average of kNN50 disagreement and oof_proxy_margin"),
    Variant("rank_knn50_oof_minilm_tfidf", "rank average of kNN50, oof_lr_minilm and oof_lr_tfidf"),
    Variant("stack_minilm_tfidf", "cross-fitted LR stack of the MiniLM and tf-idf OOF logits"),
    Variant("stack_minilm_tfidf_knn", "stack_minilm_tfidf + logit of the kNN50 label-1 fraction"),
    Variant("stack_minilm_group", "MiniLM OOF logit + leave-one-out per-movie label prior", uses_metadata=True),
    Variant("stack_minilm_tfidf_knn_group", "stack_minilm_tfidf_knn + per-movie label prior", uses_metadata=True),
)
BEST_TEXT_STACK = "stack_minilm_tfidf_knn"


def production_signals(x: np.ndarray, y: np.ndarray, is_target: np.ndarray, seed: int) -> tuple[Signals, dict]:
    """What ``dynamics.run``, ``influence.run`` and ``poisoning.run`` would write for these labels."""
    cfg = replace(ProxyDefaults, seed=seed)
    run = proxy.train(x, y, ~is_target, cfg, len(LABELS))
    dyn = dynamics.dynamics(run.logits, y)
    tracin_target, self_inf = influence.tracin(run.weights, np.asarray(run.lrs), x, y, is_target,
                                               influence.InfluenceConfig())
    signals = {"loss": dyn["loss"], "mean_loss": dyn["mean_loss"], "el2n": dyn["el2n"], "neg_aum": -dyn["aum"],
               "forgetting": dyn["forgetting"].astype(float), "self_influence": self_inf,
               "neg_tracin_target": -tracin_target}
    info = {"proxy_train_accuracy": float((run.logits[-1].argmax(-1) == y)[~is_target].mean())}
    return signals, info


def candidate_signals(corpus: Corpus, x: np.ndarray, y: np.ndarray, nn: np.ndarray, tfidf: sparse.csr_matrix,
                      seed: int, timings: dict[str, float]) -> tuple[Signals, dict[str, np.ndarray]]:
    """Every candidate variant; also returns the OOF P(label 1) of each model (for the clean-label ceiling)."""
    out: Signals = {}
    with timed(timings, "aum_variants"):
        for epochs, lr in AUM_VARIANTS:
            run = proxy.train(x, y, ~corpus.is_target, replace(ProxyDefaults, seed=seed, epochs=epochs, lr=lr), 2)
            out[f"neg_aum_e{epochs}_lr{lr:g}"] = -dynamics.dynamics(run.logits, y)["aum"]
    for k in KNN_KS:
        if k != KNN_K:
            out[f"knn{k}"] = knn_disagreement(nn, y, k)
    fold = make_folds(y, seed)
    with timed(timings, "oof_proxy"):
        oof = dynamics.dynamics(oof_proxy_logits(x, y, fold, replace(ProxyDefaults, seed=seed)), y)
    out["oof_proxy_aum"] = -oof["aum"]
    with timed(timings, "oof_lr_minilm"):
        p_minilm = oof_proba(x, y, fold, lr_minilm)
    with timed(timings, "oof_lr_tfidf"):
        p_tfidf = oof_proba(tfidf, y, fold, lr_tfidf)
    # the final-epoch margin is -log-odds of the observed label, recovered from the OOF loss
    out["oof_proxy_margin"] = oof["loss"]
    out["oof_lr_minilm"] = suspicion(p_minilm, y)
    out["oof_lr_tfidf"] = suspicion(p_tfidf, y)
    out["rank_knn50_oof_proxy"] = rank_average(out["knn50"], out["oof_proxy_margin"])
    out["rank_knn50_oof_minilm_tfidf"] = rank_average(out["knn50"], out["oof_lr_minilm"], out["oof_lr_tfidf"])
    knn_frac = (y[nn[:, :STACK_KNN_K]] == 1).mean(1)
    views = {"minilm": logit(p_minilm), "tfidf": logit(p_tfidf), "knn": logit(knn_frac, eps=0.5 / STACK_KNN_K),
             "group": logit(group_prior(y, corpus.movie))}
    probas = {"oof_lr_minilm": p_minilm, "oof_lr_tfidf": p_tfidf}
    with timed(timings, "stacks"):
        for name, parts in (("stack_minilm_tfidf", ("minilm", "tfidf")),
                            ("stack_minilm_tfidf_knn", ("minilm", "tfidf", "knn")),
                            ("stack_minilm_group", ("minilm", "group")),
                            ("stack_minilm_tfidf_knn_group", ("minilm", "tfidf", "knn", "group"))):
            p = stack([views[v] for v in parts], y, fold)
            probas[name] = p
            out[name] = suspicion(p, y)
    return out, probas


# ----------------------------------------------------------------------------------------------------------------
# experiment 1: mislabel detection


def mislabel_experiment(corpus: Corpus, seeds: list[int], nn: np.ndarray, tfidf: sparse.csr_matrix,
                        timings: dict[str, float]) -> dict[str, Any]:
    n = len(corpus.y)
    ev = ~corpus.is_target
    per_seed: list[dict[str, Any]] = []
    for seed in tqdm(seeds, desc="mislabel seeds", file=sys.stderr):
        rng = np.random.default_rng(seed)
        flipped = np.zeros(n, dtype=bool)
        flipped[rng.choice(n, round(FLIP_FRACTION * n), replace=False)] = True
        y = np.where(flipped, 1 - corpus.y, corpus.y)
        with timed(timings, "production_signals"):
            signals, info = production_signals(corpus.x, y, corpus.is_target, seed)
        with timed(timings, "knn_production"):
            signals[f"knn{KNN_K}"] = poisoning.knn_disagreement(corpus.x, y, KNN_K)
        with timed(timings, "mislabel_scorer"):  # tasks/scoring/mislabel.py, as `custody score` runs it
            cfg = mislabel.CrossFitConfig(seed=seed)
            score = mislabel.crossfit_label_suspicion
            signals["mislabel_scorer"] = score(corpus.x, corpus.texts, y, cfg, corpus.movie)
            signals["mislabel_scorer_text_only"] = score(corpus.x, corpus.texts, y, cfg)
        info["knn_reuse_max_abs_diff"] = float(np.abs(signals[f"knn{KNN_K}"] - knn_disagreement(nn, y, KNN_K)).max())
        variants, probas = candidate_signals(corpus, corpus.x, y, nn, tfidf, seed, timings)
        signals.update(variants)
        metrics = {name: detection(score[ev], flipped[ev]) for name, score in signals.items()}
        # ceiling: how well each OOF model ranks the CLEAN sentiment labels; detection AUC tracks it closely
        info["clean_label_auc"] = {name: float(roc_auc_score(corpus.y[ev], p[ev])) for name, p in probas.items()}
        info["clean_label_accuracy"] = {name: float(((p[ev] > 0.5) == corpus.y[ev]).mean())
                                        for name, p in probas.items()}
        per_seed.append({"seed": seed, "flipped": int(flipped.sum()), "flipped_in_eval": int(flipped[ev].sum()),
                         "eval_rows": int(ev.sum()), "metrics": metrics, **info})
    summary = summarise(per_seed)
    return {"per_seed": per_seed, "summary": summary, "targets": mislabel_targets(summary)}


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    names = per_seed[0]["metrics"].keys()
    out: dict[str, dict[str, float]] = {}
    for name in names:
        row: dict[str, float] = {}
        for metric in METRICS:
            vals = np.array([s["metrics"][name][metric] for s in per_seed])
            row[metric], row[f"{metric}_std"] = float(vals.mean()), float(vals.std(ddof=1) if len(vals) > 1 else 0.0)
        out[name] = row
    return out


def mislabel_targets(summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    loss_auc = summary["loss"]["auc"]
    meta = {v.name for v in VARIANTS if v.uses_metadata}

    def verdict(names: list[str]) -> dict[str, Any]:
        best = max(names, key=lambda k: summary[k]["auc"])
        auc = summary[best]["auc"]
        return {"best": best, "auc": auc, "gain_over_loss": auc - loss_auc, "auc_ok": auc >= TARGET_AUC,
                "gain_ok": auc - loss_auc >= TARGET_GAIN, "pass": auc >= TARGET_AUC and auc - loss_auc >= TARGET_GAIN}

    return {"target_auc": TARGET_AUC, "target_gain_over_loss": TARGET_GAIN, "loss_auc": loss_auc,
            "production": verdict([p for p in PRODUCTION if p in summary]),
            "candidates_text_only": verdict([v.name for v in VARIANTS if v.name not in meta]),
            "candidates_with_metadata": verdict([v.name for v in VARIANTS])}


# ----------------------------------------------------------------------------------------------------------------
# experiment 2: poisoning


def insert_trigger(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    at = int(rng.integers(0, len(words) + 1))
    return " ".join([*words[:at], TRIGGER, *words[at:]])


def poisoning_experiment(corpus: Corpus, seeds: list[int], timings: dict[str, float]) -> dict[str, Any]:
    n = len(corpus.y)
    n_poison = round(POISON_FRACTION * n)
    train_rows = np.flatnonzero(~corpus.is_target)
    ev = ~corpus.is_target
    results: dict[str, Any] = {}
    for scenario in ("flip", "targeted"):
        per_seed: list[dict[str, Any]] = []
        for seed in tqdm(seeds, desc=f"poisoning ({scenario})", file=sys.stderr):
            rng = np.random.default_rng(10_000 + seed)
            pool = train_rows if scenario == "flip" else train_rows[corpus.y[train_rows] == LABELS.index("rotten")]
            rows = np.sort(rng.choice(pool, n_poison, replace=False))
            poisoned = np.zeros(n, dtype=bool)
            poisoned[rows] = True
            y = corpus.y.copy()
            y[rows] = 1 - corpus.y[rows]  # targeted: every pool row is rotten, so this relabels it fresh
            texts = list(corpus.texts)
            new_texts = [insert_trigger(corpus.texts[i], rng) for i in rows]
            for i, t in zip(rows, new_texts, strict=True):
                texts[i] = t
            with timed(timings, "poison_embeddings"):
                e, _ = cached_embeddings(new_texts, f"rt_poison_{scenario}_{seed}")
            x = corpus.x.copy()
            x[rows] = e
            with timed(timings, "poison_signals"):
                signals, _ = production_signals(x, y, corpus.is_target, seed)
                spectral = poisoning.spectral_signature(x, y)
                nn = neighbours(x, max(STACK_KNN_K, SNN_K))
            chosen: Signals = {"spectral": spectral, f"knn{KNN_K}": knn_disagreement(nn, y, KNN_K),
                               "loss": signals["loss"], "neg_aum": signals["neg_aum"],
                               "self_influence": signals["self_influence"], "knn50": knn_disagreement(nn, y, 50),
                               "neg_knn50": -knn_disagreement(nn, y, 50)}
            with timed(timings, "poison_snn"):
                chosen[f"snn{SNN_K}"] = snn_density(nn, SNN_K)
            chosen[f"rank_snn{SNN_K}_loss"] = rank_average(chosen[f"snn{SNN_K}"], signals["loss"])
            with timed(timings, "poison_stack"):
                fold = make_folds(y, seed)
                p = stack([logit(oof_proba(x, y, fold, lr_minilm)),
                           logit(oof_proba(tfidf_features(texts), y, fold, lr_tfidf)),
                           logit((y[nn[:, :STACK_KNN_K]] == 1).mean(1), eps=0.5 / STACK_KNN_K)], y, fold)
            chosen[BEST_TEXT_STACK] = suspicion(p, y)
            metrics = {name: detection(score[ev], poisoned[ev]) for name, score in chosen.items()}
            per_class = {}
            for c, label in enumerate(LABELS):
                m = ev & (y == c)
                if poisoned[m].any():
                    per_class[label] = {"poisoned": int(poisoned[m].sum()), "rows": int(m.sum()),
                                        "auc": float(roc_auc_score(poisoned[m], spectral[m]))}
            per_seed.append({"seed": seed, "poisoned": n_poison, "example": new_texts[0], "metrics": metrics,
                             "spectral_per_class": per_class})
        results[scenario] = {"per_seed": per_seed, "summary": summarise(per_seed),
                             "spectral_per_class_auc": {
                                 label: float(np.mean([s["spectral_per_class"][label]["auc"] for s in per_seed
                                                       if label in s["spectral_per_class"]]))
                                 for label in LABELS if any(label in s["spectral_per_class"] for s in per_seed)}}
    return results


# ----------------------------------------------------------------------------------------------------------------
# reporting


def fmt(row: dict[str, float], metric: str) -> str:
    return f"{row[metric]:.3f} ± {row[metric + '_std']:.3f}"


def print_mislabel(res: dict[str, Any], n_seeds: int) -> None:
    summary, targets = res["summary"], res["targets"]
    table = Table(title=f"Mislabel detection: {FLIP_FRACTION:.0%} flipped, {n_seeds} seed(s), training rows "
                        f"(target AUC ≥ {TARGET_AUC}, ≥ {TARGET_GAIN} over loss)")
    for col in ("signal", "kind", "ROC-AUC", "recall@top10%", "recall@top20%", "Δ vs loss"):
        table.add_column(col, justify="left" if col in ("signal", "kind") else "right")
    meta = {v.name for v in VARIANTS if v.uses_metadata}
    rows = [(p, "production") for p in PRODUCTION] + [(v.name, "candidate + metadata" if v.name in meta
                                                       else "candidate") for v in VARIANTS]
    loss = summary["loss"]["auc"]
    for name, kind in rows:
        r = summary[name]
        style = "bold green" if r["auc"] >= TARGET_AUC else None
        table.add_row(name, kind, fmt(r, "auc"), fmt(r, "recall_top10"), fmt(r, "recall_top20"),
                      f"{r['auc'] - loss:+.3f}", style=style)
    report.print(table)
    for key in ("production", "candidates_text_only", "candidates_with_metadata"):
        t = targets[key]
        verdict = "[green]PASS[/]" if t["pass"] else "[red]FAIL[/]"
        report.print(f"  {key}: best {t['best']} AUC {t['auc']:.3f} (Δ loss {t['gain_over_loss']:+.3f}) {verdict}")


def print_poisoning(res: dict[str, Any], n_seeds: int) -> None:
    for scenario, r in res.items():
        table = Table(title=f"Poisoning ({scenario}): {POISON_FRACTION:.0%} rows with trigger {TRIGGER!r} and "
                            f"label changed, {n_seeds} seed(s)")
        for col in ("signal", "kind", "ROC-AUC", "recall@top1%", "recall@top10%", "recall@top20%"):
            table.add_column(col, justify="left" if col in ("signal", "kind") else "right")
        for name, row in r["summary"].items():
            table.add_row(name, "production" if name in POISON_PRODUCTION else "candidate", fmt(row, "auc"),
                          fmt(row, "recall_top1"), fmt(row, "recall_top10"), fmt(row, "recall_top20"))
        report.print(table)
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in r["spectral_per_class_auc"].items())
        report.print(f"  spectral AUC within class (poisoned vs clean rows carrying the same label): {per_class}")


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average_start": list(os.getloadavg()),
            **{pkg: version(pkg) for pkg in ("numpy", "scikit-learn", "torch", "transformers")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-poisoning", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "scoring_signals.json")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    env = environment()
    corpus, cache_hit = load_corpus(timings)
    console.print(f"{len(corpus.y)} fresh/rotten rows ({int((~corpus.is_target).sum())} training, "
                  f"{int(corpus.is_target.sum())} target); embeddings cache {'hit' if cache_hit else 'miss'}")
    with timed(timings, "neighbours"):
        nn = neighbours(corpus.x, max(KNN_KS))
    with timed(timings, "tfidf_features"):
        tfidf = tfidf_features(corpus.texts)
    mislabel = mislabel_experiment(corpus, args.seeds, nn, tfidf, timings)
    print_mislabel(mislabel, len(args.seeds))
    poison = None if args.skip_poisoning else poisoning_experiment(corpus, args.seeds, timings)
    if poison:
        print_poisoning(poison, len(args.seeds))
    result = {
        "bench": "scoring_signals",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": env,
        "corpus": {"source": "tasks.sample.rotten_tomatoes_frame", "rows": len(corpus.y),
                   "labels": dict(zip(LABELS, np.bincount(corpus.y).tolist(), strict=True)),
                   "target_rows": int(corpus.is_target.sum()), "embedding_model": identity(EmbeddingConfig()),
                   "embeddings_cache_hit": cache_hit},
        "config": {"seeds": args.seeds, "flip_fraction": FLIP_FRACTION, "flips_include_target_set": True,
                   "evaluated_on": "training rows (outside the production target slice)",
                   "proxy": asdict(ProxyDefaults), "knn_k_production": KNN_K, "knn_ks": list(KNN_KS),
                   "folds": N_FOLDS, "lr_c_minilm": LR_C_MINILM, "lr_c_tfidf": LR_C_TFIDF,
                   "aum_variants": [list(v) for v in AUM_VARIANTS], "group_prior_alpha": GROUP_PRIOR_ALPHA,
                   "poison_fraction": POISON_FRACTION, "trigger": TRIGGER},
        "variants": [asdict(v) for v in VARIANTS],
        "mislabel": mislabel,
        "poisoning": poison,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out} in {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

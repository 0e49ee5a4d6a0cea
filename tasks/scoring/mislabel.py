"""Label suspicion from a cross-fitted stack: the best mislabel detector we measured.

Every example is scored by models that never saw it (stratified k folds): a logistic regression on its MiniLM
embedding, one on word and character n-gram TF-IDF (a second view of the text), the label shares of its 50
nearest neighbours, and — when the record's metadata has a grouping field such as the movie a review is about
— the leave-one-out label rate of its group. A small logistic regression stacks those out of fold; the score is
``-log p(observed label)``, high for likely mislabels. On Rotten Tomatoes with 10% flipped labels it reaches
ROC-AUC 0.907 with the movie as group (0.887 text-only) against 0.844 for plain proxy loss
(``bench/scoring_signals.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.scoring import proxy
from tasks.scoring.contract import Scored, Scorer, ScorerRun, Whole
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.scoring.poisoning import knn_label_shares, nearest_neighbours

NAME = "mislabel"
MODEL = "cross-fitted stack: MiniLM + TF-IDF + kNN + group rate"


@dataclass(frozen=True)
class CrossFitConfig(proxy.ProxyConfig):
    folds: int = 5
    c_embedding: float = 0.5
    c_tfidf: float = 1.0
    knn_k: int = 50
    group_field: str | None = "movie_name"  # a key of the record's `extra` metadata; ignored when absent
    group_alpha: float = 2.0


def group_rates(groups: np.ndarray, y: np.ndarray, n_classes: int, alpha: float) -> np.ndarray:
    """Leave-one-out class rates within each row's group, smoothed towards the global rate."""
    prior = np.bincount(y, minlength=n_classes) / len(y)
    counts: dict[Any, np.ndarray] = {}
    for g, label in zip(groups, y, strict=True):
        counts.setdefault(g, np.zeros(n_classes))[label] += 1
    out = np.zeros((len(y), n_classes))
    for i, (g, label) in enumerate(zip(groups, y, strict=True)):
        others = counts[g].copy()
        others[label] -= 1
        out[i] = (others + alpha * prior) / (others.sum() + alpha)
    return out


def crossfit_label_suspicion(x: np.ndarray, texts: list[str], y: np.ndarray, cfg: CrossFitConfig,
                             groups: np.ndarray | None = None) -> np.ndarray:
    """``-log p(observed label)`` from the out-of-fold stack; higher = more likely mislabelled."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    n_classes = int(y.max()) + 1
    folds = list(StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(x, y))
    views = hstack([TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts),
                    TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                                    max_features=200_000).fit_transform(texts)]).tocsr()  # fitted without labels
    emb_logp, txt_logp = np.zeros((len(y), n_classes)), np.zeros((len(y), n_classes))
    for train, test in folds:
        emb_logp[test] = LogisticRegression(C=cfg.c_embedding, max_iter=2000).fit(x[train], y[train]) \
            .predict_log_proba(x[test])
        txt_logp[test] = LogisticRegression(C=cfg.c_tfidf, max_iter=2000).fit(views[train], y[train]) \
            .predict_log_proba(views[test])
    features = [emb_logp, txt_logp, np.log(np.clip(knn_label_shares(nearest_neighbours(x, cfg.knn_k), y,
                                                                    n_classes), 0.02, 1.0))]
    if groups is not None:
        features.append(np.log(group_rates(groups, y, n_classes, cfg.group_alpha)))
    stacked = np.hstack(features)
    p_observed = np.zeros(len(y))
    for train, test in folds:
        proba = LogisticRegression(max_iter=2000).fit(stacked[train], y[train]).predict_proba(stacked[test])
        p_observed[test] = proba[np.arange(len(test)), y[test]]
    return -np.log(np.clip(p_observed, 1e-12, None))


def _groups(data: proxy.ProxyData, cfg: CrossFitConfig) -> np.ndarray | None:
    """The group of each example from its metadata; None when most examples have none."""
    if not cfg.group_field:
        return None
    ids = data.record_ids
    values = [json.loads(e).get(cfg.group_field) if e else None for e in data.extra]
    if sum(v is not None for v in values) < len(values) / 2:
        return None
    return np.array([v if v is not None else f"__{r}" for v, r in zip(values, ids, strict=True)], dtype=object)


def suspect(run: ScorerRun) -> Scored:
    """Label suspicion of every labelled example, grouped by ``cfg.group_field`` when the metadata has it."""
    cfg: CrossFitConfig = run.cfg
    data = proxy.load_data(run, cfg)
    groups = _groups(data, cfg)
    score = crossfit_label_suspicion(data.x, data.texts, data.y, cfg, groups)
    table = pa.table({"record_id": data.record_ids, "label_suspicion": score.astype(np.float32)})
    return Scored({"records": len(data.record_ids), **data.sample_summary(),
                   "grouped_by": cfg.group_field if groups is not None else None},
                  (Whole(table, cfg.source),))


SCORER = Scorer(NAME, CrossFitConfig, inputs=proxy.INPUTS, scope="store", needs=(EMBEDDINGS,),
                identity=lambda store, _cfg: proxy.embeddings_identity(store, MODEL), store_step=suspect)
run = SCORER.run

"""Text quality: heuristic signals (C4/Gopher-style rules) and a model-based score.

Heuristics per record: word count, mean word length, symbol-to-word ratio, alphabetic-word fraction,
uppercase fraction, URL count, duplicate-line fraction, the fraction of characters in repeated word
trigrams (Gopher), stop-word count, and ``gopher_pass`` when every rule holds. The model-based score is a
hashed-n-gram logistic regression trained on the fly to tell records that pass the rules from corrupted
copies of them (shuffled words, dropped characters): it rewards fluent text the way the rules cannot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from tasks import passed
from tasks.scoring import base
from tasks.scoring.contract import Core, Scorer, ScorerRun

NAME = "quality"
MODEL = "heuristics + hashed-n-gram logistic regression (fluency)"
_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]", re.UNICODE)
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
STOP_WORDS = frozenset([
    "the", "be", "to", "of", "and", "that", "have", "with", "a", "in", "is", "it", "for", "not", "on", "as",
    "you", "this", "but", "his", "by", "from", "they", "we", "say", "her", "she", "or", "an", "will", "my", "one",
    "all", "would", "there", "their", "what", "so", "up", "out", "if", "about", "who", "get", "which", "go", "me"
])


@dataclass(frozen=True)
class QualityConfig:
    """Gopher-style thresholds (defaults from Rae et al. 2021, loosened for short texts such as tweets)."""

    min_words: int = 5
    max_words: int = 100_000
    min_mean_word_len: float = 3.0
    max_mean_word_len: float = 10.0
    max_symbol_ratio: float = 0.1
    min_alpha_fraction: float = 0.6
    max_dup_line_fraction: float = 0.3
    max_trigram_repeat: float = 0.2
    min_stop_words: int = 1
    model_features: int = 2**18
    seed: int = 0


def heuristics(text: str, cfg: QualityConfig) -> dict[str, Any]:
    words = _WORD.findall(_URL.sub(" ", text))
    n = len(words)
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    trigrams = [" ".join(words[i:i + 3]) for i in range(max(0, n - 2))]
    seen: set[str] = set()
    covered = np.zeros(n, dtype=bool)  # words inside a repeated occurrence of a trigram (Gopher), no double count
    for i, tri in enumerate(trigrams):
        if tri in seen:
            covered[i:i + 3] = True
        seen.add(tri)
    total_chars = max(1, sum(len(w) for w in words))
    repeated_chars = sum(len(w) for w, c in zip(words, covered, strict=True) if c)
    signals = {
        "n_words": n,
        "mean_word_len": float(np.mean([len(w) for w in words])) if n else 0.0,
        "symbol_ratio": (text.count("#") + text.count("...") + text.count("…")) / max(1, n),
        "alpha_fraction": sum(1 for w in words if _ALPHA.search(w)) / max(1, n),
        "upper_fraction": sum(c.isupper() for c in text) / max(1, sum(c.isalpha() for c in text)),
        "n_urls": len(_URL.findall(text)),
        "dup_line_fraction": 1 - len(set(lines)) / max(1, len(lines)),
        "trigram_repeat": repeated_chars / total_chars,
        "stop_words": sum(1 for w in words if w.lower() in STOP_WORDS),
    }
    signals["gopher_pass"] = bool(
        cfg.min_words <= n <= cfg.max_words
        and cfg.min_mean_word_len <= signals["mean_word_len"] <= cfg.max_mean_word_len
        and signals["symbol_ratio"] <= cfg.max_symbol_ratio and signals["alpha_fraction"] >= cfg.min_alpha_fraction
        and signals["dup_line_fraction"] <= cfg.max_dup_line_fraction
        and signals["trigram_repeat"] <= cfg.max_trigram_repeat and signals["stop_words"] >= cfg.min_stop_words)
    return signals


def _corrupt(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    if rng.random() < 0.5:
        rng.shuffle(words)
        return " ".join(words)
    chars = list(text)
    keep = rng.random(len(chars)) > 0.25
    return "".join(c for c, k in zip(chars, keep, strict=True) if k)


def fluency_model(texts: list[str], passed: list[bool], cfg: QualityConfig) -> Any:
    """Fit the model-based scorer: rule-passing texts (label 1) against corrupted copies (label 0)."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(cfg.seed)
    good = [t for t, p in zip(texts, passed, strict=True) if p][:20_000]
    if len(good) < 10:
        return None
    bad = [_corrupt(t, rng) for t in good]
    model = make_pipeline(HashingVectorizer(n_features=cfg.model_features, ngram_range=(1, 2), alternate_sign=False),
                          LogisticRegression(max_iter=200))
    model.fit(good + bad, [1] * len(good) + [0] * len(bad))
    return model


def score_table(records: pa.Table, cfg: QualityConfig, model: Any) -> pa.Table:
    texts = records.column("text").to_pylist()
    rows = [heuristics(t, cfg) for t in texts]
    table = pa.Table.from_pylist(rows) if rows else pa.table({"gopher_pass": pa.array([], pa.bool_())})
    fluency = model.predict_proba(texts)[:, 1] if model is not None and texts else np.full(len(texts), np.nan)
    table = table.append_column("model_score", pa.array(fluency, pa.float32()))
    return table.add_column(0, "record_id", records.column("record_id"))


def fit(run: ScorerRun) -> Core:
    """Fit the fluency model on a sample of the first partitions; the per-partition scorer uses it."""
    cfg: QualityConfig = run.cfg
    sample, _ = base.each_partition(passed.partitions(run.store, run.sources)[:8], run.records, "quality sample")
    texts = [t for s in sample for t in s.column("text").to_pylist()]
    model = fluency_model(texts, [heuristics(t, cfg)["gopher_pass"] for t in texts], cfg)
    return partial(score_table, cfg=cfg, model=model)


SCORER = Scorer(NAME, QualityConfig, inputs=("text",), identity=lambda _store, _cfg: MODEL, scope="partition",
                partition_core=fit)
run = SCORER.run  # fit the fluency model on a sample, then score every partition (skipping done ones)

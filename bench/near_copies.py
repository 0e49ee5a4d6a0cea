"""Near copies of short texts: does a deletion follow an owner's lightly edited texts, and only those?

A planted benchmark on the real corpora (``tasks.sample``: Rotten Tomatoes review snippets and Health News tweets):

* **victims**: short texts of the owner being deleted — reviews of 12-30 words and tweets of 8-30 words, half of
  the tweets retweets (``RT @account: ...``), so that a shared retweet prefix is a real template;
* **positives**: copies of a victim with 1-6 random edits (a word substituted, inserted or deleted, a word's case,
  punctuation added or removed, whitespace changed), bucketed by their measured normalised edit distance to the
  victim (Levenshtein on the raw texts / longer length, ``rapidfuzz``);
* **hard negatives**: texts that share a part with a victim but differ in the rest — its first half + another
  text, another text + its second half, its opening template (``RT @account:`` for retweets, the first 3 words
  for reviews) + another text, and a quoted span of ~40% of it inside a longer different text;
* **background**: random other texts of both corpora (natural near-duplicates among them are reported apart).

Both methods run in the same process on the same rows, deleting every victim and following copies to a fixed point:

* ``today``: exact content hash + word-5-gram MinHash clusters at Jaccard 0.8 (``tasks.dedup``);
* ``copies``: today's, plus ``tasks.dedup.copies`` (character-shingle MinHash LSH candidates, verified by exact
  shingle Jaccard) with ``CopyConfig()`` — the code ``resolve`` runs, minus the storage;
* ``fingerprints``: ``tasks.dedup.withdrawn`` matching every row against the victims' salted fingerprints (what
  the ingest block list does with rows delivered later), with its speed in rows/s.

A sweep over shingle size and threshold (exact Jaccard, no LSH) and over LSH banding shows why the defaults are
what they are. The ingest cost is records/s on one core: today's word signatures vs. the copy index's band keys.
Intervals are Wilson 95%. Run from the repository root::

    .venv/bin/python bench/near_copies.py                       # writes bench/results/near_copies.json
    .venv/bin/python bench/near_copies.py --victims 100 --background 2000 --out /tmp/nc.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein
from threadpoolctl import threadpool_limits

from tasks.dedup import MinhashConfig, cluster_records, signatures
from tasks.dedup.copies import CopyConfig, band_keys, candidate_pairs, shingle_sets, verified
from tasks.dedup.withdrawn import WithdrawnIndex
from tasks.deletion.fingerprints import fingerprint_table
from tasks.fingerprints import jaccard
from tasks.ids import content_hash, normalize_text
from tasks.sample import health_news_frame, rotten_tomatoes_frame

RESULTS = Path(__file__).resolve().parent / "results"
BUCKETS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30, 1.01)
TARGET_RECALL, TARGET_MAX_EDIT, TARGET_HARD_NEG = 0.95, 0.15, 0.01
EDITS = ("substitute", "insert", "delete", "case", "punctuation", "whitespace")
PUNCT = (",", ".", "!", "?", ";", ":", "...")


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return [round(float(max(0.0, (centre - half) / scale)), 4), round(float(min(1.0, (centre + half) / scale)), 4)]


def rate(k: int, n: int) -> dict[str, Any]:
    share = round(float(k / n), 4) if n else None
    return {"k": int(k), "n": int(n), "rate": share, "wilson95": wilson(int(k), int(n))}


# -- the planted corpus ------------------------------------------------------------------------------------------


def _pool(seed: int) -> tuple[list[str], list[str], list[str]]:
    """Short reviews, retweets and other tweets, shuffled."""
    rng = np.random.default_rng(seed)
    rt = rotten_tomatoes_frame()
    reviews = [t for t in rt.loc[rt["category"] != "plot", "text"].dropna().astype(str) if 12 <= len(t.split()) <= 30]
    tweets = [t for t in health_news_frame()["text"].dropna().astype(str) if 8 <= len(t.split()) <= 30]
    retweets = [t for t in tweets if t.startswith("RT @")]
    others = [t for t in tweets if not t.startswith("RT @")]
    return [list(np.array(x, dtype=object)[rng.permutation(len(x))]) for x in (reviews, retweets, others)]


def _edit(text: str, k: int, donors: list[str], rng: np.random.Generator) -> tuple[str, list[str]]:
    """``text`` with ``k`` random edits (word-level, case, punctuation, whitespace) and the kinds applied."""
    words, kinds = text.split(), []
    gaps = [" "] * len(words)
    for _ in range(k):
        kind = EDITS[rng.integers(len(EDITS))]
        i = int(rng.integers(len(words)))
        if kind == "substitute":
            words[i] = donors[rng.integers(len(donors))]
        elif kind == "insert":
            words.insert(i, donors[rng.integers(len(donors))])
            gaps.insert(i, " ")
        elif kind == "delete" and len(words) > 4:
            del words[i], gaps[i]
        elif kind == "case":
            words[i] = words[i].upper() if words[i] != words[i].upper() else words[i].lower()
        elif kind == "punctuation":
            stripped = words[i].rstrip(".,!?;:")
            words[i] = stripped if stripped != words[i] and stripped else words[i] + PUNCT[rng.integers(len(PUNCT))]
        else:
            kind = "whitespace"
            gaps[i] = ("  ", "\n", " \t ", "   ")[rng.integers(4)]
        kinds.append(kind)
    return "".join(g + w for g, w in zip(gaps, words, strict=True)).strip(), kinds


def _cut(words: list[str], share: float) -> int:
    """The word boundary nearest ``share`` of the text's characters (halves are halves of the text, not of
    its words: a tweet's URL is one long word)."""
    ends = [len(" ".join(words[:k])) for k in range(len(words) + 1)]
    return int(np.argmin([abs(e - share * ends[-1]) for e in ends]))


def _negatives(victim: str, others: list[str], retweet: bool, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Four texts sharing a part of ``victim`` (half its characters, its template, a quoted span of ~40%) and
    differing in the rest (filled from other texts of the same kind)."""
    words = victim.split()
    a, b, c = (others[rng.integers(len(others))].split() for _ in range(3))
    half = max(1, _cut(words, 0.5))
    first, second = words[:half], words[half:]
    span = max(2, _cut(words, 0.4))
    start = int(rng.integers(0, len(words) - span + 1))
    longer = (a + b)[: max(int(1.5 * len(words)), 12)]
    middle = len(longer) // 2
    opening = 2 if retweet else 3  # "RT @account:" or a review's first three words
    return [("first_half", " ".join(first + a[_cut(a, 0.5):])),
            ("second_half", " ".join(b[:_cut(b, 0.5)] + second)),
            ("template", " ".join(words[:opening] + c[opening:])),
            ("quoted_span", " ".join(longer[:middle]) + ' "' + " ".join(words[start:start + span]) + '" '
             + " ".join(longer[middle:]))]


def planted(victims_n: int, background_n: int, seed: int) -> dict[str, Any]:
    """Rows (victims, positives, hard negatives, background) with their role, victim and edit distance."""
    rng = np.random.default_rng(seed)
    reviews, retweets, tweets = _pool(seed)
    n_rev, n_rt = victims_n // 2, victims_n // 4
    victims = ([(t, "review", False) for t in reviews[:n_rev]] + [(t, "tweet", True) for t in retweets[:n_rt]]
               + [(t, "tweet", False) for t in tweets[:victims_n - n_rev - n_rt]])
    rest = reviews[n_rev:] + retweets[n_rt:] + tweets[victims_n - n_rev - n_rt:]
    rest = [rest[i] for i in rng.permutation(len(rest))]
    donors_texts, background = rest[:5000], rest[5000:5000 + background_n]
    donors = [w for t in donors_texts[:2000] for w in t.split() if w.isalpha()]
    rows: list[dict[str, Any]] = []
    for v, (text, kind, retweet) in enumerate(victims):
        rows.append({"text": text, "role": "victim", "victim": v, "corpus": kind})
        for k in (1, 1, 2, 2, 3, 4, 5, 6):
            copy, kinds = _edit(text, k, donors, rng)
            rows.append({"text": copy, "role": "positive", "victim": v, "corpus": kind, "kinds": kinds})
        others = reviews[n_rev:] if kind == "review" else (retweets[n_rt:] if retweet else tweets)
        for neg_kind, neg in _negatives(text, others[:3000], retweet, rng):
            rows.append({"text": neg, "role": "hard_negative", "victim": v, "corpus": kind, "kind": neg_kind})
    rows += [{"text": t, "role": "background", "victim": -1, "corpus": "mixed"} for t in background]
    for r in rows:
        r["edit"] = Levenshtein.normalized_distance(victims[r["victim"]][0], r["text"]) if r["victim"] >= 0 else 1.0
    return {"rows": rows, "victims": len(victims)}


# -- the two methods ---------------------------------------------------------------------------------------------


def today(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cluster label per row from exact hashes + word-5-gram MinHash clusters (rows alone are their own label)."""
    cfg = MinhashConfig()
    hashes = [content_hash(normalize_text(t)) for t in texts]
    ids = [f"r{i}" for i in range(len(texts))]
    table, _ = cluster_records(ids, hashes, np.arange(len(texts)), signatures(texts, cfg), cfg)
    label = np.array(ids, dtype=object)
    rows = np.array([int(r[1:]) for r in table.column("record_id").to_pylist()], dtype=np.int64)
    label[rows] = np.asarray(table.column("cluster_id").to_pylist(), dtype=object)
    return label, np.asarray(hashes, dtype=object)


def resolve_rows(texts: list[str], victims: np.ndarray, cfg: CopyConfig | None) -> np.ndarray:
    """Rows a deletion of ``victims`` removes: closure over hashes and clusters, plus verified copies if ``cfg``."""
    label, hashes = today(texts)
    keys, sets = (band_keys(texts, cfg), shingle_sets(texts, cfg)) if cfg else (None, None)
    removed = np.zeros(len(texts), dtype=bool)
    removed[victims] = True
    queried = np.zeros(len(texts), dtype=bool)
    while True:
        before = removed.copy()
        removed |= np.isin(label, label[removed]) | np.isin(hashes, hashes[removed])
        fresh = np.flatnonzero(removed & ~queried)
        queried[fresh] = True
        if cfg is not None and len(fresh):
            pairs = candidate_pairs(keys[fresh], keys, cfg.min_shared)
            pairs = verified(pairs, sets, [sets[i] for i in fresh], cfg.threshold)
            removed[pairs[:, 0]] = True
        if (removed == before).all() and not len(fresh):
            return removed


def score(rows: list[dict[str, Any]], removed: np.ndarray) -> dict[str, Any]:
    """Recall per edit-distance bucket, hard negatives removed per kind, background removed."""
    role = np.array([r["role"] for r in rows])
    edit = np.array([r["edit"] for r in rows])
    pos = role == "positive"
    buckets = {f"[{lo:.2f},{hi:.2f})": rate(removed[pos & (edit >= lo) & (edit < hi)].sum(),
                                            (pos & (edit >= lo) & (edit < hi)).sum())
               for lo, hi in itertools.pairwise(BUCKETS)}
    within = pos & (edit <= TARGET_MAX_EDIT)
    kinds = {k: rate(removed[np.array([pos[i] and edit[i] <= TARGET_MAX_EDIT and k in rows[i].get("kinds", [])
                                       for i in range(len(rows))])].sum(),
                     sum(1 for i in range(len(rows)) if within[i] and k in rows[i]["kinds"])) for k in EDITS}
    neg = role == "hard_negative"
    neg_kind = np.array([r.get("kind", "") for r in rows])
    bg = role == "background"
    victims = np.flatnonzero(role == "victim")
    return {"recall_within_0.15": rate(removed[within].sum(), within.sum()),
            "recall_by_edit_distance": buckets, "recall_within_0.15_by_edit_kind": kinds,
            "hard_negatives_removed": rate(removed[neg].sum(), neg.sum()),
            "hard_negatives_removed_by_kind": {
                k: rate(removed[neg & (neg_kind == k)].sum(), (neg & (neg_kind == k)).sum())
                for k in sorted(set(neg_kind[neg]))},
            "background_removed": rate(removed[bg].sum(), bg.sum()),
            "background_removed_within_0.15_of_a_victim": int(sum(
                min(Levenshtein.normalized_distance(rows[i]["text"], rows[v]["text"]) for v in victims) <= 0.15
                for i in np.flatnonzero(removed & bg)))}


# -- why the defaults --------------------------------------------------------------------------------------------


def sweep(rows: list[dict[str, Any]], victim_texts: list[str]) -> list[dict[str, Any]]:
    """Exact shingle Jaccard (no LSH) of each positive and hard negative to its victim, per shingle size."""
    role = np.array([r["role"] for r in rows])
    edit = np.array([r["edit"] for r in rows])
    pick = np.flatnonzero(((role == "positive") & (edit <= TARGET_MAX_EDIT)) | (role == "hard_negative"))
    out = []
    for n in (3, 4, 5, 6, 7):
        cfg = CopyConfig(ngram=n)
        vsets = shingle_sets(victim_texts, cfg)
        rsets = shingle_sets([rows[i]["text"] for i in pick], cfg)
        sim = np.array([jaccard(s, vsets[rows[i]["victim"]]) for s, i in zip(rsets, pick, strict=True)])
        is_pos = role[pick] == "positive"
        for t in np.round(np.arange(0.25, 0.80, 0.05), 2):
            out.append({"ngram": n, "threshold": float(t),
                        "recall_within_0.15": round(float((sim[is_pos] >= t).mean()), 4),
                        "hard_negatives_removed": round(float((sim[~is_pos] >= t).mean()), 4)})
    return out


def banding(rows: list[dict[str, Any]], base: CopyConfig) -> list[dict[str, Any]]:
    """For banding options: LSH recall of each victim's planted rows whose exact Jaccard reaches the threshold,
    and candidates per victim over the whole corpus (the verification work a query costs)."""
    texts = [r["text"] for r in rows]
    victims = np.flatnonzero([r["role"] == "victim" for r in rows])
    sets = shingle_sets(texts, base)
    owner = np.array([r["victim"] for r in rows])
    true = {(i, v) for v, vi in enumerate(victims) for i in np.flatnonzero(owner == v)
            if i != vi and jaccard(sets[i], sets[vi]) >= base.threshold}
    out = []
    for bands, rows_, shared in ((16, 2, 1), (12, 3, 1), (16, 3, 1), (21, 3, 1), (32, 3, 1), (16, 4, 1), (32, 4, 1),
                                 (21, 3, 2), (24, 3, 2), (28, 3, 2), (21, 2, 3)):
        cfg = CopyConfig(ngram=base.ngram, threshold=base.threshold, bands=bands, rows=rows_, min_shared=shared)
        keys = band_keys(texts, cfg)
        cand = candidate_pairs(keys[victims], keys, cfg.min_shared)
        found = {(int(i), int(v)) for i, v in cand} & true
        out.append({"num_perm": bands * rows_, "bands": bands, "rows": rows_, "min_shared": shared,
                    "true_pairs": len(true),
                    "lsh_recall": round(len(found) / max(len(true), 1), 4),
                    "candidates_per_query": round(len(cand) / len(victims), 2),
                    "p_candidate_at_threshold": round(cfg.candidate_probability(cfg.threshold), 4)})
    return out


def ingest_cost(texts: list[str], cfg: CopyConfig, repeats: int = 3) -> dict[str, Any]:
    """Records/s on one core: today's word signatures vs. the copy index's band keys (best of ``repeats``)."""
    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return len(texts) / min(times)

    with threadpool_limits(1):
        old = best(lambda: signatures(texts, MinhashConfig()))
        new = best(lambda: band_keys(texts, cfg))
    return {"records": len(texts), "today_word_signatures_per_s": round(old), "copy_index_per_s": round(new),
            "ingest_signature_and_index_per_s": round(1 / (1 / old + 1 / new))}


def fingerprint_rows(texts: list[str], victims: np.ndarray, cfg: CopyConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """What the ingest block list removes: rows matched against the victims' salted fingerprints alone (no text,
    no chaining: a later delivery is checked against what was deleted), and the matcher's speed on one core."""
    salt = b"bench-salt-00000"
    t0 = time.perf_counter()
    index = WithdrawnIndex.build(fingerprint_table("bench", [texts[i] for i in victims], salt), salt, cfg)
    t1 = time.perf_counter()
    with threadpool_limits(1):
        hits = index.match(texts)
    t2 = time.perf_counter()
    removed = np.array([h is not None for h in hits])
    return removed, {"deleted_texts": len(victims), "rows_checked": len(texts), "build_seconds": round(t1 - t0, 3),
                     "rows_per_s": round(len(texts) / (t2 - t1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--victims", type=int, default=400)
    ap.add_argument("--background", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "near_copies.json")
    args = ap.parse_args()
    cfg = CopyConfig()
    corpus = planted(args.victims, args.background, args.seed)
    rows = corpus["rows"]
    texts = [r["text"] for r in rows]
    victims = np.flatnonzero([r["role"] == "victim" for r in rows])
    methods = {}
    for name, method_cfg in (("today", None), ("copies", cfg)):
        t0 = time.perf_counter()
        removed = resolve_rows(texts, victims, method_cfg)
        methods[name] = {**score(rows, removed), "seconds": round(time.perf_counter() - t0, 2)}
    removed, speed = fingerprint_rows(texts, victims, cfg)
    methods["fingerprints"] = {**score(rows, removed), "matcher": speed}
    role = np.array([r["role"] for r in rows])
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
        "config": {**asdict(cfg), "str": str(cfg)}, "seed": args.seed,
        "sizes": {k: int((role == k).sum()) for k in ("victim", "positive", "hard_negative", "background")},
        "hard_negative_edit_distance_quantiles": {str(q): round(float(np.quantile(
            [r["edit"] for r in rows if r["role"] == "hard_negative"], q)), 3) for q in (0.0, 0.01, 0.5)},
        "methods": methods,
        "targets": {"recall_within_0.15": TARGET_RECALL, "hard_negatives_removed_max": TARGET_HARD_NEG,
                    "met": bool(methods["copies"]["recall_within_0.15"]["rate"] >= TARGET_RECALL
                                and methods["copies"]["hard_negatives_removed"]["rate"] <= TARGET_HARD_NEG)},
        "sweep_exact_jaccard": sweep(rows, [texts[i] for i in victims]),
        "banding": banding(rows, cfg),
        "ingest_cost": ingest_cost([r["text"] for r in rows if r["role"] == "background"], cfg),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, m in methods.items():
        print(f"{name:7s} recall<=0.15 {m['recall_within_0.15']}  hard negatives {m['hard_negatives_removed']}  "
              f"background {m['background_removed']}")
    print(json.dumps(result["ingest_cost"]), "->", args.out)


if __name__ == "__main__":
    main()

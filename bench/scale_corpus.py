"""Corpora for ``bench/scale.py``: N raw JSONL records under ``raw/<source>/`` with a datasheet, streamed file by file.

* ``synthetic``: texts of 12-40 pseudo-words drawn from a Zipfian vocabulary of 50k words (short words frequent, as
  in English), ~163 bytes a JSONL line like the 163 MB / 1M corpus of issue #16; owners of ~2,000 records each, drawn
  at random per record, so an owner is spread over every file (as in the issue's measurement).
* ``tweets``: the Health News tweets (``tasks.sample.health_news_frame``) re-mixed: each record joins a random
  60-90% span of one tweet with one of another and replaces ~8% of its words by words drawn from the corpus; then
  4% of records are planted near-duplicates of another record of the same file (its last word, usually a URL,
  replaced: shingle Jaccard ~0.85) and 1% exact copies, under other owners. Owners are ``<account>-<k>``, ~2,000
  records each, drawn at random per record like the synthetic ones.

Memory is one file's worth (<= ``RECORDS_PER_FILE`` records); every step is numpy-vectorised except the final
per-line formatting. The datasheets reuse ``tests.helpers.datasheet`` / ``write_source`` and the health_news
datasheet of ``tasks.sample`` (with a commercial licence and granted consent, so the commercial policy passes
them: the data is a benchmark's, the datasheet says so).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.sample import DATASHEETS, health_news_frame
from tasks.storage import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests/helpers.py
from tests.helpers import datasheet, write_source

RECORDS_PER_FILE, MIN_FILES, RECORDS_PER_OWNER = 100_000, 10, 2_000
VOCAB, ZIPF_S = 50_000, 1.05
NEAR_DUP_SHARE, EXACT_COPY_SHARE, EDIT_RATE = 0.04, 0.01, 0.08
ACCOUNTS = ("bbchealth", "cbchealth", "cnnhealth", "everydayhealth", "foxnewshealth", "gdnhealthcare", "goodhealth",
            "kaiserhealthnews", "latimeshealth", "msnhealthnews", "nbchealth", "nprhealth", "nytimeshealth",
            "reuters_health", "usnewshealth", "wsjhealth")  # the corpus's 16 accounts, lower-cased
FIELDS = {"text": "text", "owner": "owner", "id": "id"}
BENCH_SHEET = {"license": "CC-BY-4.0", "consent": "granted", "consent_basis": "benchmark data of bench/scale.py",
               "acquisition": "synthetic", "fields": FIELDS}


@dataclass(frozen=True)
class Words:
    """A vocabulary as one byte buffer: word ``i`` (JSON-escaped, with a trailing space) is
    ``data[offsets[i]:offsets[i] + lengths[i]]``."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64

    @classmethod
    def of(cls, words: list[str]) -> Words:
        encoded = [json.dumps(w, ensure_ascii=False)[1:-1].encode() + b" " for w in words]
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        return cls(np.frombuffer(b"".join(encoded), np.uint8), np.cumsum(lengths) - lengths, lengths)

    def texts(self, ids: np.ndarray, counts: np.ndarray) -> list[bytes]:
        """The texts of records holding ``counts`` words each, their word ids flattened in ``ids``."""
        lengths = self.lengths[ids]
        starts = np.cumsum(lengths) - lengths
        gather = np.repeat(self.offsets[ids] - starts, lengths) + np.arange(int(lengths.sum()))
        buf = self.data[gather].tobytes()
        ends = np.cumsum(np.add.reduceat(lengths, np.cumsum(counts) - counts))
        begins = np.concatenate([[0], ends[:-1]])
        return [buf[a:b - 1] for a, b in zip(begins.tolist(), ends.tolist(), strict=True)]  # minus trailing space


def pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct pronounceable words, shorter for lower (more frequent) ranks: 2 letters at rank 0 up to ~7."""
    letters = np.clip(2 + np.log1p(np.arange(n)) / 2.5 + rng.normal(0, 0.8, n), 1, 12).astype(int)
    cons, vows = np.array(list("bcdfghjklmnprstvwz")), np.array(list("aeiou"))
    words, seen = [], set()
    for i, k in enumerate(letters.tolist()):
        while True:
            w = "".join(np.where(np.arange(k) % 2 == i % 2, rng.choice(cons, k), rng.choice(vows, k)))
            if w not in seen:
                break
            k += 1
        seen.add(w)
        words.append(w)
    return words


def zipf_probabilities(n: int, s: float = ZIPF_S) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


@dataclass
class Synthetic:
    """Generator of synthetic records."""

    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.words = Words.of(pseudo_words(rng, VOCAB))
        self.cdf = np.cumsum(zipf_probabilities(VOCAB))

    def texts(self, rng: np.random.Generator, n: int) -> list[bytes]:
        counts = rng.integers(12, 41, n)
        ids = np.minimum(np.searchsorted(self.cdf, rng.random(int(counts.sum()))), VOCAB - 1)
        return self.words.texts(ids, counts)


@dataclass
class Tweets:
    """Generator of tweets-derived records (see the module docstring)."""

    seed: int = 0

    def __post_init__(self) -> None:
        import pandas as pd

        frame = health_news_frame()
        tokens = frame["text"].fillna("").astype(str).str.split()
        keep = tokens.str.len() >= 6
        tokens = tokens[keep]
        codes, vocab = pd.factorize(pd.Series([w for ws in tokens for w in ws]))
        self.words, self.flat = Words.of(list(vocab)), codes.astype(np.int64)
        self.lengths = tokens.str.len().to_numpy().astype(np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths

    def _spans(self, rng: np.random.Generator, tweets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random 60-90% span of each tweet: (start in ``flat``, length)."""
        lengths = np.maximum(3, np.ceil(self.lengths[tweets] * rng.uniform(0.6, 0.9, len(tweets)))).astype(np.int64)
        starts = rng.integers(0, self.lengths[tweets] - lengths + 1)
        return self.offsets[tweets] + starts, lengths

    def texts(self, rng: np.random.Generator, n: int) -> list[bytes]:
        pick = rng.integers(0, len(self.lengths), (n, 2))
        (sa, la), (sb, lb) = self._spans(rng, pick[:, 0]), self._spans(rng, pick[:, 1])
        starts, lengths = np.stack([sa, sb], 1).ravel(), np.stack([la, lb], 1).ravel()
        ids = self.flat[np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))]
        edit = rng.random(len(ids)) < EDIT_RATE
        ids[edit] = self.flat[rng.integers(0, len(self.flat), int(edit.sum()))]
        texts = self.words.texts(ids, la + lb)
        self._plant(rng, texts)
        return texts

    def _plant(self, rng: np.random.Generator, texts: list[bytes]) -> None:
        """Near-duplicates (last word replaced) and exact copies of other records of the same batch, in place."""
        n = len(texts)
        n_near, n_exact = int(n * NEAR_DUP_SHARE), int(n * EXACT_COPY_SHARE)
        chosen = rng.permutation(n)
        sources, near, exact = chosen[:n_near + n_exact], chosen[n_near + n_exact:2 * n_near + n_exact], \
            chosen[2 * n_near + n_exact:2 * (n_near + n_exact)]
        fresh = self.words.texts(self.flat[rng.integers(0, len(self.flat), n_near)], np.ones(n_near, np.int64))
        for src, dst, word in zip(sources[:n_near].tolist(), near.tolist(), fresh, strict=True):
            texts[dst] = texts[src].rsplit(b" ", 1)[0] + b" " + word
        for src, dst in zip(sources[n_near:].tolist(), exact.tolist(), strict=True):
            texts[dst] = texts[src]


def n_files(n: int) -> int:
    return max(MIN_FILES, -(-n // RECORDS_PER_FILE))


def owner_name(corpus: str, k: int) -> str:
    """Owner ``k``'s name: ``o<k>``, or for tweets ``<account>-<k>`` (accounts in turn)."""
    return f"o{k:06d}" if corpus == "synthetic" else f"{ACCOUNTS[k % len(ACCOUNTS)]}-{k:05d}"


def source_id(corpus: str, i: int) -> str:
    """The raw id of record ``i`` (ingest turns it into a record id with ``tasks.ids.record_id``)."""
    return f"{corpus[0]}{i:09d}"


def write_corpus(store: Store, corpus: str, source: str, n: int, seed: int = 0) -> dict[str, int]:
    """Write ``n`` records of ``corpus`` as ``n_files(n)`` JSONL files plus a datasheet under ``raw/<source>/``.

    Returns:
        files, bytes, owners written.
    """
    generator = Synthetic(seed) if corpus == "synthetic" else Tweets(seed)
    base_sheet = {k: v for k, v in DATASHEETS["health_news"].items() if k != "name"} if corpus == "tweets" else {}
    base_sheet["notes"] = f"bench/scale.py: {corpus} corpus (see bench/scale_corpus.py)"
    write_source(store, source, {}, datasheet(source, **{**base_sheet, **BENCH_SHEET}))
    rng, n_owners, files = np.random.default_rng(seed), max(1, n // RECORDS_PER_OWNER), n_files(n)
    written = 0
    for f, chunk in enumerate(np.array_split(np.arange(n), files)):
        data = _jsonl(generator, rng, corpus, chunk, n_owners)
        write_source(store, source, {f"part-{f:05d}.jsonl": data}, {})
        written += len(data)
    return {"files": files, "bytes": written, "owners": n_owners}


def _jsonl(generator: Synthetic | Tweets, rng: np.random.Generator, corpus: str, ids: np.ndarray,
           n_owners: int) -> bytes:
    """Records ``ids`` as JSONL lines, each with a random one of ``n_owners`` owners."""
    texts = generator.texts(rng, len(ids))
    names = np.array([owner_name(corpus, k).encode() for k in range(n_owners)], dtype=object)
    owners = names[rng.integers(0, n_owners, len(ids))].tolist()
    return b"".join(b'{"id":"%s","owner":"%s","text":"%s"}\n' % (source_id(corpus, i).encode(), o, t)
                    for i, o, t in zip(ids.tolist(), owners, texts, strict=True))


def write_delivery(store: Store, corpus: str, source: str, first: int, n: int, n_owners: int, seed: int = 1) -> int:
    """One more raw file of ``n`` new records (ids ``first`` on) among the corpus's owners: a later delivery.
    Returns its bytes."""
    generator = Synthetic(seed) if corpus == "synthetic" else Tweets(seed)
    data = _jsonl(generator, np.random.default_rng(seed), corpus, np.arange(first, first + n), n_owners)
    write_source(store, source, {f"delivery-{first:09d}.jsonl": data}, {})
    return len(data)

import random

import numpy as np
import pytest
from datasketch import MinHash

from tasks.dedup import MinhashConfig, cluster_records, estimate_jaccard, shingles, signatures
from tasks.dedup.minhash import optimal_bands

WORDS = [f"w{i}" for i in range(3000)]


def _doc(rng: random.Random, n: int = 80) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _mutate(rng: random.Random, text: str, edits: int) -> str:
    words = text.split()
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def _jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(shingles(a, n)), set(shingles(b, n))
    return len(sa & sb) / len(sa | sb)


def test_signatures_equal_datasketch_default_minhash() -> None:
    cfg = MinhashConfig(num_perm=64)
    texts = ["The quick brown fox jumps over the lazy dog, twice over.", "short text", "", "ünïcode wörds ok"]
    for text, sig in zip(texts, signatures(texts, cfg), strict=True):
        reference = MinHash(num_perm=64, seed=1)
        reference.update_batch(shingles(text, cfg.ngram))
        np.testing.assert_array_equal(sig, reference.hashvalues)


def test_estimated_jaccard_tracks_exact_jaccard() -> None:
    rng = random.Random(3)
    pairs = []
    for _ in range(40):
        base = _doc(rng)
        pairs.append((base, _mutate(rng, base, rng.randrange(0, 12))))
    exact = np.array([_jaccard(a, b) for a, b in pairs])
    assert exact.min() < 0.5 < exact.max()  # the pairs span the range
    cfg = MinhashConfig(num_perm=2048, threshold=0.8, bands=1, rows=1)
    sig_a = signatures([a for a, _ in pairs], cfg)
    sig_b = signatures([b for _, b in pairs], cfg)
    error = np.abs(estimate_jaccard(sig_a, sig_b) - exact)
    assert error.max() <= 0.05
    default = MinhashConfig()
    err128 = np.abs(estimate_jaccard(signatures([a for a, _ in pairs], default),
                                     signatures([b for _, b in pairs], default)) - exact)
    assert err128.mean() <= 0.05


def test_planted_near_duplicates_cluster_and_unrelated_texts_do_not() -> None:
    rng = random.Random(5)
    originals = [_doc(rng, 120) for _ in range(300)]
    planted = [_mutate(rng, d, 2) for d in originals[:30]]  # ~2 edits in 120 words: Jaccard ~0.9
    texts = originals + planted + [originals[40]]  # plus one exact copy
    ids = [f"r{i:04d}" for i in range(len(texts))]
    table, stats = cluster_records(ids, [str(hash(t)) for t in texts], np.arange(len(texts)),
                                   signatures(texts, MinhashConfig()), MinhashConfig())
    member = {r["record_id"]: r for r in table.to_pylist()}
    for i in range(30):
        assert _jaccard(originals[i], planted[i]) >= 0.8
        a, b = member[ids[i]], member[ids[300 + i]]
        assert a["cluster_id"] == b["cluster_id"] and b["kept_record_id"] == ids[i] and b["kind"] == "near"
    assert member[ids[-1]]["kind"] == "exact" and member[ids[-1]]["kept_record_id"] == ids[40]
    assert stats.exact_duplicates == 1
    assert set(member) == set(ids[:30]) | set(ids[300:]) | {ids[40]}  # nobody else is clustered


def test_banding_favours_recall_and_config_validates() -> None:
    bands, rows = optimal_bands(0.8, 128)
    assert bands * rows <= 128
    assert 1 - (1 - 0.85 ** rows) ** bands > 0.9  # a 0.85-similar pair is a candidate with high probability
    assert str(MinhashConfig()).startswith("minhash_p128_n5_t0.80")
    with pytest.raises(ValueError, match="threshold"):
        MinhashConfig(threshold=1.5)

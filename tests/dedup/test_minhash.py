import itertools
import random

import numpy as np
import pyarrow as pa
import pytest
from rensa import RMinHash

from tasks.dedup import MinhashConfig, cluster_records, estimate_jaccard, shingles, signatures
from tasks.dedup.minhash import _DIGEST_ROWS, MAX_HASH, optimal_bands, shingle_hashes

WORDS = [f"w{i}" for i in range(3000)]


def _doc(rng: random.Random, n: int = 80) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _mutate(rng: random.Random, text: str, edits: int) -> str:
    words = text.split()
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def _jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = (set(s) for s in shingles([a, b], n))
    return len(sa & sb) / len(sa | sb)


def _pairs(seed: int, count: int = 40) -> tuple[list[str], list[str], np.ndarray]:
    """Pairs whose exact shingle Jaccard spans the range, with their exact Jaccard."""
    rng = random.Random(seed)
    left, right = [], []
    for _ in range(count):
        base = _doc(rng)
        left.append(base)
        right.append(_mutate(rng, base, rng.randrange(0, 12)))
    return left, right, np.array([_jaccard(a, b) for a, b in zip(left, right, strict=True)])


@pytest.mark.parametrize("num_perm", [128, 1024])
def test_estimated_jaccard_is_within_binomial_error_of_exact_jaccard(num_perm: int) -> None:
    left, right, exact = _pairs(3)
    assert exact.min() < 0.5 < exact.max() and (exact == 1.0).any()  # the pairs span the range
    cfg = MinhashConfig(num_perm=num_perm, bands=1, rows=1)
    estimate = estimate_jaccard(signatures(left, cfg), signatures(right, cfg))
    # each position agrees with probability J: the estimate is Binomial(num_perm, J) / num_perm
    sd = np.sqrt(exact * (1 - exact) / num_perm)
    assert np.all(np.abs(estimate - exact) <= 4 * sd + 1 / num_perm)
    assert abs(np.mean(estimate - exact)) <= 3 * np.sqrt(np.mean(sd ** 2) / len(exact))  # no bias
    assert np.all(estimate[exact == 1.0] == 1.0)


def test_another_seed_gives_other_signatures_with_the_same_accuracy() -> None:
    left, right, exact = _pairs(4)
    one, two = MinhashConfig(num_perm=512, bands=1, rows=1), MinhashConfig(num_perm=512, bands=1, rows=1, seed=2)
    assert not np.array_equal(signatures(left, one), signatures(left, two))
    assert str(one) != str(two)
    err = np.abs(estimate_jaccard(signatures(left, two), signatures(right, two)) - exact)
    assert err.max() <= 4 * 0.5 / np.sqrt(512)


def test_signatures_do_not_depend_on_batching_or_input_type() -> None:
    rng = random.Random(7)
    texts = [_doc(rng, rng.randrange(0, 12)) for _ in range(_DIGEST_ROWS + 300)]  # crosses a rensa chunk
    cfg = MinhashConfig()
    whole = signatures(texts, cfg)
    assert whole.shape == (len(texts), cfg.num_perm) and whole.dtype == np.uint32
    np.testing.assert_array_equal(whole, signatures(texts, cfg))
    cuts = [0, 1, 17, 2000, len(texts)]
    pieces = [signatures(texts[lo:hi], cfg) for lo, hi in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(whole, np.concatenate(pieces))
    np.testing.assert_array_equal(whole, signatures(pa.array(texts), cfg))
    np.testing.assert_array_equal(whole, signatures(pa.chunked_array([texts[:5], texts[5:]]), cfg))


def test_case_punctuation_and_spacing_do_not_change_the_words() -> None:
    cfg = MinhashConfig()
    variants = ["Don't stop: the Café naïve, 12 times!", "don t stop the café naïve 12 times",
                "  DON'T STOP -- THE CAFÉ NAÏVE (12 TIMES)  "]
    sigs = signatures(variants, cfg)
    assert (sigs == sigs[0]).all()
    want = ["don t stop the café", "t stop the café naïve", "stop the café naïve 12", "the café naïve 12 times"]
    assert shingles(variants[:1], 5) == [[s.encode() for s in want]]


def test_empty_and_short_texts() -> None:
    cfg = MinhashConfig()
    texts = ["", None, "!!! ...", "a b", "a b", "b a", "a b c d e", "a b c d e f"]
    sigs = signatures(texts, cfg)
    assert (sigs[:3] == MAX_HASH).all()  # no word: the empty signature
    assert (sigs[3:] != MAX_HASH).any(axis=1).all()
    assert shingles(texts, 5) == [[], [], [], [b"a b"], [b"a b"], [b"b a"], [b"a b c d e"],
                                  [b"a b c d e", b"b c d e f"]]
    assert estimate_jaccard(sigs[3], sigs[4])[0] == 1.0  # fewer words than a shingle: the text is one shingle
    assert estimate_jaccard(sigs[3], sigs[5])[0] < 0.05  # ... in its order
    assert estimate_jaccard(sigs[3], sigs[6])[0] < 0.05
    assert 0.35 < estimate_jaccard(sigs[6], sigs[7])[0] < 0.65  # {abcde} vs {abcde, bcdef}: J = 0.5


def test_shingle_hashes_are_one_per_shingle_and_equal_for_equal_shingles() -> None:
    rng = random.Random(11)
    texts = [_doc(rng, rng.randrange(0, 40)) for _ in range(200)]
    texts += [texts[5] + " " + texts[5]]  # repeated n-grams repeat
    hashes, counts = shingle_hashes(texts, 5)
    strings = shingles(texts, 5)
    np.testing.assert_array_equal(counts, [len(s) for s in strings])
    per_text = np.split(hashes, np.cumsum(counts)[:-1])
    for got, want in zip(per_text, strings, strict=True):
        assert len(set(got.tolist())) == len(set(want))
    by_string: dict[bytes, int] = {}
    for got, want in zip(per_text, strings, strict=True):
        for h, s in zip(got.tolist(), want, strict=True):
            assert by_string.setdefault(s, h) == h  # a shingle hashes the same in every text
    assert len(set(by_string.values())) == len(by_string)  # and distinct shingles differently


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
    # the string names rensa's algorithm: signatures stored by another version are recomputed, not compared
    assert str(MinhashConfig()).startswith(f"minhash_rensa{RMinHash.ALGORITHM_VERSION}_p128_n5_t0.80")
    with pytest.raises(ValueError, match="threshold"):
        MinhashConfig(threshold=1.5)

